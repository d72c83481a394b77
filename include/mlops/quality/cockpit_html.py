"""HTML pages and the monitoring chart (SVG, drawn here: nothing is downloaded) of the Airflow UI's cockpit.

Pages are rendered on the server from :mod:`mlops.quality.cockpit`'s values; every value is escaped.
The only script is the Models page's two buttons, which call Airflow's own REST API from the page
(same origin, the user's own session), so Airflow checks the user's permission to trigger.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from datetime import date
from urllib.parse import urlencode

from mlops.quality.cockpit import GateView, ModelView, MonitoringPoint, TrainingView, VersionRow
from mlops.quality.reports import CSS

PREFIX = "/cockpit"  # where the plugin mounts its app in the api-server
_CSS = (
    CSS
    + """
body.cockpit{max-width:1280px}
.cockpit .grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(290px,1fr));gap:.8rem}
.cockpit .card{border:1px solid #ddd;border-radius:6px;padding:.6rem .8rem}
.cockpit .card h3{margin:.1rem 0 .4rem}
.cockpit .pill{display:inline-block;padding:.05rem .45rem;border-radius:9px;font-weight:600;font-size:.85em}
.cockpit .pill.pass,.cockpit .pill.passed{background:#d9f2dd;color:#145a23}
.cockpit .pill.fail,.cockpit .pill.failed{background:#fbdada;color:#8a1212}
.cockpit .pill.skipped,.cockpit .pill.forced,.cockpit .pill.not_run{background:#fff1c7;color:#6b4e00}
.cockpit iframe.report{width:100%;height:75vh;border:1px solid #ddd}
.cockpit form.action{display:inline-flex;gap:.4rem;align-items:center;margin:.3rem 1rem .3rem 0}
.cockpit button{padding:.3rem .8rem;cursor:pointer}
.cockpit #action-result{font-weight:600}
.cockpit small{color:#666}
"""
)


def _e(value: object) -> str:
    return html.escape(str(value))


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f'<body class="mlops-report cockpit"><h1>{_e(title)}</h1>{body}</body></html>'
    )


def message_page(title: str, text: str) -> str:
    return page(title, f"<p>{_e(text)}</p>")


def _pill(verdict: str) -> str:
    return (
        f'<span class="pill {_e(verdict.lower().replace(" ", "_"))}" data-verdict="{_e(verdict)}">{_e(verdict)}</span>'
    )


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _kv(values: dict[str, float]) -> str:
    return ", ".join(f"{_e(k)} {_num(v)}" for k, v in sorted(values.items())) or "-"


def url(path: str, **query: str) -> str:
    return f"{PREFIX}{path}?{urlencode(query)}" if query else f"{PREFIX}{path}"


# ------------------------------------------------------------------------------------ report tab


def report_page(dag_id: str, run_id: str, task_id: str, view: GateView, mlflow_link: str | None) -> str:
    """The Report tab of a gate task instance: the verdict line, then the gate's own HTML report."""
    raw = url("/report/raw", dag_id=dag_id, run_id=run_id, task_id=task_id)
    link = f' · <a href="{_e(mlflow_link)}" target="_blank" rel="noopener">MLflow run</a>' if mlflow_link else ""
    gates = url("/gates", dag_id=dag_id, run_id=run_id)
    body = (
        f'<p class="verdict-line" data-gate="{_e(view.gate)}">{_pill(view.verdict)} {_e(view.summary)}</p>'
        f"<p><small>numbers {_kv(view.metrics)} · thresholds {_kv(view.thresholds)}{link} · "
        f'<a href="{_e(gates)}">all gates of this run</a></small></p>'
        f'<iframe class="report" title="{_e(view.gate)} report" src="{_e(raw)}"></iframe>'
    )
    return page(f"{view.gate} gate · {run_id}", body)


# ------------------------------------------------------------------------------------- gates view


def _gate_card(dag_id: str, run_id: str, gate: GateView) -> str:
    report = (
        f'<a href="{_e(url("/report", dag_id=dag_id, run_id=run_id, task_id="gate_" + gate.gate))}">report</a>'
        if gate.report
        else "<small>no report</small>"
    )
    return (
        f'<div class="card gate" data-gate="{_e(gate.gate)}"><h3>{_e(gate.gate)} {_pill(gate.verdict)}</h3>'
        f"<p>{_e(gate.summary)}</p><p><small>numbers: {_kv(gate.metrics)}<br>thresholds: "
        f"{_kv(gate.thresholds)}</small></p>{report}</div>"
    )


def gates_page(dag_id: str, view: TrainingView) -> str:
    """The Gates view of a training run: four verdicts, numbers, thresholds, version, lineage, MLflow."""
    cards = "".join(_gate_card(dag_id, view.dag_run_id, g) for g in view.gates)
    mlflow = (
        f'<a href="{_e(view.mlflow_link)}" target="_blank" rel="noopener">MLflow run {_e(view.mlflow_run_id)}</a>'
        if view.mlflow_link
        else "no MLflow run yet"
    )
    version = f"registered as <b>v{_e(view.version)}</b>" if view.version else "not registered"
    lineage = "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(v)}</code></td></tr>" for k, v in view.lineage.items())
    body = (
        f'<p>{mlflow} · training {_e(view.status)} · <span class="registered">{version}</span> · holdout '
        f"{_kv(view.metrics)} · "
        f'<a href="{_e(url("/models", model=view.model))}">{_e(view.model)} on the Models page</a></p>'
        f'<div class="grid">{cards}</div>' + (f"<h2>Lineage</h2><table>{lineage}</table>" if lineage else "")
    )
    return page(f"Gates · {view.model} · {view.dag_run_id}", body)


# ------------------------------------------------------------------------------------ models page


def models_index(models: Sequence[str]) -> str:
    items = "".join(f'<li><a href="{_e(url("/models", model=m))}">{_e(m)}</a></li>' for m in models)
    return page("Models", f"<ul>{items}</ul>" if items else "<p>No model you may read.</p>")


def _version_row(row: VersionRow) -> str:
    gates = " ".join(f"{_e(g)} {_pill(v)}" for g, v in sorted(row.gates.items())) or "-"
    link = f'<a href="{_e(row.mlflow_link)}" target="_blank" rel="noopener">run</a>' if row.mlflow_link else ""
    lineage = (
        f"window {_e(row.lineage.get('training_window', '?'))} · config {_e(row.lineage.get('config_hash', '')[:12])}"
        f" · git {_e(row.lineage.get('git_commit', '')[:10])} · {_e(row.lineage.get('dag_run_id', ''))}"
    )
    return (
        f'<tr data-version="{_e(row.version)}"><td>v{_e(row.version)}</td><td>{_e(", ".join(row.aliases))}</td>'
        f"<td>{_e(row.created)}</td><td>{gates}</td><td>{_kv(row.metrics)}</td><td><small>{lineage}</small></td>"
        f"<td>{link}</td></tr>"
    )


_SCRIPT = """
<script>
async function trigger(dagId, conf) {
  const out = document.getElementById('action-result');
  out.textContent = 'triggering ' + dagId + '...';
  const r = await fetch('/api/v2/dags/' + encodeURIComponent(dagId) + '/dagRuns', {
    method: 'POST', credentials: 'same-origin', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({logical_date: null, conf: conf})});
  const body = await r.json().catch(() => ({}));
  out.dataset.status = r.status;
  out.textContent = r.ok ? (dagId + ': run ' + body.dag_run_id + ' queued')
                         : (dagId + ': HTTP ' + r.status + ' ' + JSON.stringify(body.detail || body));
  if (r.ok) out.dataset.runId = body.dag_run_id;
}
document.getElementById('rollback-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const f = ev.target;
  trigger(f.dataset.dag, {reason: f.reason.value, target_version: f.target.value || null});
});
document.getElementById('train-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  trigger(ev.target.dataset.dag, {});
});
</script>
"""


def _actions(view: ModelView) -> str:
    return (
        f'<form id="rollback-form" class="action" data-dag="{_e(view.rollback_dag)}">'
        '<input name="reason" placeholder="why roll back" required minlength="3" value="">'
        '<input name="target" placeholder="version (empty: previous champion)" pattern="[0-9]*" size="30">'
        "<button type=submit>Roll back champion</button></form>"
        f'<form id="train-form" class="action" data-dag="{_e(view.training_dag)}">'
        "<button type=submit>Train now</button></form>"
        '<div id="action-result" role="status"></div>'
        "<p><small>The buttons trigger the rollback and training DAGs through Airflow's REST API as you; "
        "Airflow refuses them without your permission to run those DAGs.</small></p>"
    )


def model_page(view: ModelView, chart_svg: str) -> str:
    """The Models page of one model: aliases, buttons, the monitoring chart, versions, alias history."""
    aliases = " · ".join(
        f'<span class="alias" data-alias="{_e(a)}">{_e(a)}: <b>v{_e(v)}</b></span>' for a, v in view.aliases.items()
    )
    history = "".join(
        f"<tr><td>{_e(h.at)}</td><td>{_e(h.alias)}</td><td>{_e(h.from_version or '-')} → v{_e(h.to_version)}</td>"
        f"<td>{_e(h.actor)}</td><td>{_e(h.reason)}</td><td><small>{_e(h.dag_run_id)}</small></td></tr>"
        for h in reversed(view.history)
    )
    versions = "".join(_version_row(r) for r in view.versions)
    body = (
        f'<p class="aliases">{aliases or "no champion yet"}</p>{_actions(view)}'
        f'<h2>Monitoring over time</h2><div class="chart">{chart_svg}</div>'
        "<h2>Versions</h2><table><tr><th>version</th><th>aliases</th><th>registered</th><th>gates</th>"
        f"<th>holdout</th><th>lineage</th><th>MLflow</th></tr>{versions}</table>"
        "<h2>Alias history</h2><table><tr><th>when</th><th>alias</th><th>move</th><th>who</th><th>why</th>"
        f"<th>DAG run</th></tr>{history}</table>{_SCRIPT}"
    )
    return page(f"Model {view.model}", body)


# ------------------------------------------------------------------------------------------ chart

_W, _PANEL_H, _LEFT, _RIGHT, _TOP, _GAP = 1100, 150, 60, 20, 24, 36
_COLORS = ("#1f77b4", "#9467bd", "#17becf", "#8c564b")


def _series(
    points: Sequence[MonitoringPoint], value: str, x_of: dict[str, float], y0: float
) -> list[list[tuple[float, float]]]:
    """Polyline pieces (a gap where a day has no value) of one value, scaled 0..1 into a panel at y0."""
    pieces: list[list[tuple[float, float]]] = [[]]
    for p in points:
        v = p.drift_share if value == "drift_share" else p.prediction_ks if value == "prediction_ks" else None
        if value.startswith("quality_"):
            v = p.quality.get(value.removeprefix("quality_"))
        if v is None or not math.isfinite(v):
            if pieces[-1]:
                pieces.append([])
            continue
        pieces[-1].append((x_of[p.day], y0 + _PANEL_H * (1 - min(max(v, 0.0), 1.0))))
    return [piece for piece in pieces if piece]


def _polyline(pieces: list[list[tuple[float, float]]], color: str, name: str) -> str:
    out = []
    for piece in pieces:
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in piece)
        if len(piece) == 1:
            x, y = piece[0]
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>')
        else:
            out.append(
                f'<polyline class="series" data-series="{_e(name)}" points="{pts}" fill="none" '
                f'stroke="{color}" stroke-width="1.6"/>'
            )
    return "".join(out)


def monitoring_chart(view: ModelView) -> str:
    """Drift share, prediction drift and live quality per day against thresholds, alias moves marked."""
    points = view.monitoring
    if not points:
        return '<p class="no-chart">No monitored interval yet: the chart appears after the first monitoring run.</p>'
    first, last = date.fromisoformat(points[0].day), date.fromisoformat(points[-1].day)
    span = max((last - first).days, 1)
    inner = _W - _LEFT - _RIGHT

    def x_at(day: str) -> float:
        return _LEFT + inner * (date.fromisoformat(day[:10]) - first).days / span

    x_of = {p.day: x_at(p.day) for p in points}
    quality_names = (
        sorted({k for p in points for k in p.quality if k in view.thresholds.min_quality})
        or sorted({k for p in points for k in p.quality})[:2]
    )
    quality_limits = [
        (f"min {q}", view.thresholds.min_quality[q], f"quality_{q}", False)
        for q in quality_names
        if q in view.thresholds.min_quality
    ]
    panels: list[tuple[str, list[tuple[str, str]], list[tuple[str, float, str, bool]]]] = [
        (
            "feature drift: share of drifted features",
            [("drift_share", "drift share")],
            [("drift threshold", view.thresholds.drift_share, "drift_share", True)],
        ),
        (
            "prediction drift: KS statistic",
            [("prediction_ks", "prediction KS")],
            [("prediction drift threshold", view.thresholds.prediction_ks, "prediction_ks", True)],
        ),
        ("live quality (labelled rows)", [(f"quality_{q}", q) for q in quality_names], quality_limits),
    ]
    height = _TOP + len(panels) * (_PANEL_H + _GAP) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="monitoring-chart" width="{_W}" height="{height}" '
        f'viewBox="0 0 {_W} {height}" font-family="sans-serif" font-size="11" role="img" '
        f'aria-label="monitoring of {_e(view.model)} over time">'
        f"<title>{_e(view.model)}: monitoring over time, {len(points)} days</title>"
    ]
    for index, (title, series, limits) in enumerate(panels):
        y0 = _TOP + index * (_PANEL_H + _GAP)
        parts.append(
            f'<rect x="{_LEFT}" y="{y0}" width="{inner}" height="{_PANEL_H}" fill="#fafafa" stroke="#ccc"/>'
            f'<text x="{_LEFT}" y="{y0 - 6}" font-weight="bold">{_e(title)}</text>'
        )
        for tick in (0.0, 0.5, 1.0):
            y = y0 + _PANEL_H * (1 - tick)
            parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
        for label, limit, key, above in limits:
            y = y0 + _PANEL_H * (1 - min(max(limit, 0.0), 1.0))
            for piece in _series(points, key, x_of, y0):
                parts.extend(
                    f'<circle class="breach" cx="{px:.1f}" cy="{py:.1f}" r="2.6" fill="#d62728"/>'
                    for px, py in piece
                    if (py < y if above else py > y)
                )
            parts.append(
                f'<line class="threshold" x1="{_LEFT}" x2="{_LEFT + inner}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="#d62728" stroke-dasharray="5,4"/><text x="{_LEFT + inner - 4}" y="{y - 3:.1f}" '
                f'text-anchor="end" fill="#d62728">{_e(label)} {limit:g}</text>'
            )
        for n, (key, name) in enumerate(series):
            color = _COLORS[n % len(_COLORS)]
            parts.append(_polyline(_series(points, key, x_of, y0), color, name))
            parts.append(f'<text x="{_LEFT + 8 + 140 * n}" y="{y0 + 14}" fill="{color}">● {_e(name)}</text>')
    parts.append(_alias_marks(view, x_at, first, last, height))
    for day, anchor in ((points[0].day, "start"), (points[len(points) // 2].day, "middle"), (points[-1].day, "end")):
        parts.append(f'<text x="{x_at(day):.1f}" y="{height - 2}" text-anchor="{anchor}">{_e(day)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _alias_marks(view: ModelView, x_at: Callable[[str], float], first: date, last: date, height: int) -> str:
    """A vertical line at each champion change (green) and rollback (red) inside the charted days."""
    from mlops.model.registry import ROLLBACK_PREFIX

    marks: list[str] = []
    for change in view.history:
        if change.alias != "champion" or not change.at:
            continue
        day = change.at[:10]
        if not first.isoformat() <= day <= last.isoformat():
            continue
        x = x_at(day)
        rollback = change.reason.startswith(ROLLBACK_PREFIX)
        color, kind = ("#d62728", "rollback") if rollback else ("#2ca02c", "champion")
        label = f"{kind} → v{change.to_version}"
        near_end = x > _W - _RIGHT - 120  # label to the left of the line, inside the picture
        marks.append(
            f'<g class="alias-mark" data-kind="{kind}" data-version="{_e(change.to_version)}">'
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP - 4}" y2="{height - 14}" stroke="{color}" '
            f'stroke-width="1.4" stroke-dasharray="2,2"/><text x="{x + (-3 if near_end else 3):.1f}" '
            f'y="{_TOP + 8 + 11 * (len(marks) % 2)}" text-anchor="{"end" if near_end else "start"}" fill="{color}">'
            f"{_e(label)}</text><title>{_e(change.at)} {_e(label)} by {_e(change.actor)}: {_e(change.reason)}"
            "</title></g>"
        )
    return "".join(marks)
