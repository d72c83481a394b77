"""The canary analysis: evidence of the current step, the comparison with the champion, the decision.

Evidence of a step is every interval scored while the step served (``serving.json`` beside the
interval's predictions names the rollout and step). The canary's arm (``canary.parquet``) is compared
with the champion's arm (``champion.parquet``) of the same intervals: both arms are random halves of
the same entities by the stable assignment, so their live quality and score distributions are
comparable. A quality drop counts only beyond its configured tolerance *and* its statistical noise
(1.96 standard errors of the difference: Hanley-McNeil for ROC AUC, binomial otherwise), so a good
canary is not aborted for a small arm's luck and a bad one is.

Decisions, in order: paused → **hold**; a guardrail breach (failure rate, per-row p99 latency, or live
quality below ``monitoring.min_quality`` beyond noise) → **abort** at once, whatever the evidence;
evidence short of the step's minimum → **hold**; a threshold failure (quality drop vs the champion,
prediction drift) → **abort**; else **advance**, or **promote** after the last step.
"""

from __future__ import annotations

import html
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.core.config import ModelConfig
from mlops.model.rollout import PAUSED, RolloutState

if TYPE_CHECKING:
    import pandas as pd

    from mlops.core.storage import ObjectStore

log = logging.getLogger(__name__)

Z = 1.96  # two-sided 95 %: a drop must exceed its tolerance by this many standard errors
SERVING_FILE = "serving.json"


@dataclass(frozen=True)
class ArmStats:
    version: str
    rows: int
    labelled: int
    metrics: dict[str, float] = field(default_factory=dict)
    std_errors: dict[str, float] = field(default_factory=dict)
    failure_rate: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    rows_per_s: float | None = None


@dataclass(frozen=True)
class Analysis:
    intervals: list[str]
    canary: ArmStats
    champion: ArmStats
    prediction_ks: float | None
    guardrail_breaches: list[str]
    threshold_failures: list[str]
    missing_evidence: list[str]


@dataclass(frozen=True)
class Decision:
    action: str  # advance | promote | hold | abort
    reason: str
    guardrail: bool = False


def _auc_se(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982) standard error of a ROC AUC."""
    if positives < 1 or negatives < 1:
        return math.inf
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    spread = auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)
    var = spread / (positives * negatives)
    return math.sqrt(max(var, 0.0))


def _arm(cfg: ModelConfig, version: str, frame: pd.DataFrame, latency: dict[str, Any]) -> ArmStats:
    import numpy as np

    from mlops.core.labels import binary_target
    from mlops.model.scoring import SCORE_COLUMN
    from mlops.quality.metrics import classification_metrics

    scores = frame[SCORE_COLUMN].to_numpy(dtype="float64") if len(frame) else np.array([])
    failed = int((~np.isfinite(scores)).sum()) + int(latency.get("failed_rows", 0))
    rows = len(frame) + int(latency.get("failed_rows", 0))
    label = cfg.label.column
    metrics: dict[str, float] = {}
    errors: dict[str, float] = {}
    labelled = 0
    if label in frame.columns:
        mask = frame[label].notna().to_numpy() & np.isfinite(scores)
        labelled = int(mask.sum())
        if labelled:
            y = binary_target(frame.loc[mask, label], cfg.label.positive).to_numpy()
            computed = classification_metrics(y, scores[mask], cfg.label.decision_threshold)
            positives = int(y.sum())
            for name, value in computed.items():
                if value is None or not math.isfinite(value):
                    continue
                metrics[name] = float(value)
                errors[name] = (
                    _auc_se(value, positives, labelled - positives)
                    if name == "roc_auc"
                    else math.sqrt(max(value * (1 - value), 0.0) / labelled)
                )
    return ArmStats(
        version=version,
        rows=rows,
        labelled=labelled,
        metrics=metrics,
        std_errors=errors,
        failure_rate=failed / rows if rows else 0.0,
        p50_ms=latency.get("p50_ms"),
        p99_ms=latency.get("p99_ms"),
        rows_per_s=latency.get("rows_per_s"),
    )


def _ks(a: Any, b: Any) -> float | None:
    import numpy as np
    from scipy.stats import ks_2samp

    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return None
    return float(ks_2samp(a, b).statistic)


def _worst(latencies: list[dict[str, Any]]) -> dict[str, Any]:
    """Across intervals: the worst p50/p99, the slowest throughput, every failed row."""
    out: dict[str, Any] = {"failed_rows": sum(int(x.get("failed_rows", 0)) for x in latencies)}
    for name, pick in (("p50_ms", max), ("p99_ms", max), ("rows_per_s", min)):
        values = [float(x[name]) for x in latencies if x.get(name) is not None]
        out[name] = pick(values) if values else None
    return out


def _guardrails(cfg: ModelConfig, canary: ArmStats) -> list[str]:
    """Breaches that abort at once: failures, per-row latency, live quality below the floors beyond noise."""
    canary_cfg = cfg.promotion.canary
    breaches: list[str] = []
    if canary.rows and canary.failure_rate > canary_cfg.max_failure_rate:
        breaches.append(f"failure rate {canary.failure_rate:.3f} > {canary_cfg.max_failure_rate}")
    if canary.p99_ms is not None and canary.p99_ms > canary_cfg.max_p99_latency_ms:
        breaches.append(f"per-row p99 latency {canary.p99_ms:.1f} ms > {canary_cfg.max_p99_latency_ms:g} ms")
    if canary.labelled >= canary_cfg.min_labelled_rows:
        for name, floor in cfg.monitoring.min_quality.items():
            value = canary.metrics.get(name)
            if value is not None and value + Z * canary.std_errors.get(name, 0.0) < floor:
                breaches.append(f"live {name} {value:.3f} below the guardrail {floor} (beyond noise)")
    return breaches


def _missing(cfg: ModelConfig, intervals: list[str], canary: ArmStats, champion: ArmStats) -> list[str]:
    canary_cfg = cfg.promotion.canary
    missing: list[str] = []
    if len(intervals) < canary_cfg.min_intervals:
        missing.append(f"{len(intervals)}/{canary_cfg.min_intervals} intervals")
    if canary.rows < canary_cfg.min_scored_rows:
        missing.append(f"{canary.rows}/{canary_cfg.min_scored_rows} canary rows")
    labelled = min(canary.labelled, champion.labelled)
    if canary_cfg.max_quality_drop and labelled < canary_cfg.min_labelled_rows:
        missing.append(f"{labelled}/{canary_cfg.min_labelled_rows} labelled rows per arm")
    return missing


def analyze(
    cfg: ModelConfig,
    state: RolloutState,
    intervals: list[str],
    champion_frame: pd.DataFrame,
    canary_frame: pd.DataFrame,
    latencies: dict[str, list[dict[str, Any]]],
) -> Analysis:
    """Compare the arms of a step's intervals against the config's evidence, guardrails and thresholds."""
    from mlops.model.scoring import SCORE_COLUMN

    canary_cfg = cfg.promotion.canary
    canary = _arm(cfg, state.canary_version, canary_frame, _worst(latencies.get(state.canary_version, [])))
    champion = _arm(cfg, state.champion_version, champion_frame, _worst(latencies.get(state.champion_version, [])))
    failures: list[str] = []
    for name, tolerance in canary_cfg.max_quality_drop.items():
        ours, theirs = canary.metrics.get(name), champion.metrics.get(name)
        if ours is None or theirs is None:
            continue
        noise = Z * math.hypot(canary.std_errors.get(name, 0.0), champion.std_errors.get(name, 0.0))
        if theirs - ours > tolerance + noise:
            failures.append(
                f"live {name} {ours:.3f} vs champion {theirs:.3f}: drop {theirs - ours:.3f} > "
                f"{tolerance} + noise {noise:.3f}"
            )
    ks = _ks(canary_frame[SCORE_COLUMN], champion_frame[SCORE_COLUMN]) if len(canary_frame) else None
    if ks is not None and ks > canary_cfg.max_prediction_drift:
        failures.append(f"prediction drift KS {ks:.3f} > {canary_cfg.max_prediction_drift}")
    return Analysis(
        intervals, canary, champion, ks, _guardrails(cfg, canary), failures, _missing(cfg, intervals, canary, champion)
    )


def decide(state: RolloutState, analysis: Analysis) -> Decision:
    """The step's verdict (see the module docstring for the order)."""
    if state.status == PAUSED:
        return Decision("hold", "paused: resume it to continue the ramp")
    if analysis.guardrail_breaches:
        return Decision("abort", "guardrail: " + "; ".join(analysis.guardrail_breaches), guardrail=True)
    if analysis.missing_evidence:
        return Decision("hold", "waiting for evidence: " + ", ".join(analysis.missing_evidence))
    if analysis.threshold_failures:
        return Decision("abort", "; ".join(analysis.threshold_failures))
    last = state.step + 1 >= len(state.steps)
    share = state.steps[state.step]
    if last:
        return Decision("promote", f"passed the last step ({share:g}%) over {len(analysis.intervals)} interval(s)")
    return Decision("advance", f"passed {share:g}% over {len(analysis.intervals)} interval(s)")


# ------------------------------------------------------------------------------------------- evidence


def serving_records(model: str, lake: ObjectStore) -> list[dict[str, Any]]:
    """Every scored interval's ``serving.json`` (which versions served, the rollout step, latency)."""
    out = []
    for key in lake.list(f"predictions/{model}/"):
        if key.endswith(f"/{SERVING_FILE}"):
            out.append(json.loads(lake.get(key).decode()))
    return sorted(out, key=lambda r: str(r.get("interval")))


def step_evidence(
    model: str, state: RolloutState, lake: ObjectStore
) -> tuple[list[str], pd.DataFrame, pd.DataFrame, dict[str, list[dict[str, Any]]]]:
    """The intervals the current step served, both arms' rows, and each version's latency records."""
    import pandas as pd

    from mlops.core.lake import read_parquet

    intervals: list[str] = []
    champion, canary = [], []
    latencies: dict[str, list[dict[str, Any]]] = {}
    for record in serving_records(model, lake):
        split = record.get("rollout") or {}
        if split.get("rollout_id") != state.rollout_id or split.get("step") != state.step:
            continue
        interval = str(record["interval"])
        intervals.append(interval)
        folder = f"predictions/{model}/date={interval}"
        champion.append(read_parquet(lake, f"{folder}/champion.parquet"))
        if lake.exists(f"{folder}/canary.parquet"):
            canary.append(read_parquet(lake, f"{folder}/canary.parquet"))
        for version, latency in (record.get("latency") or {}).items():
            latencies.setdefault(str(version), []).append(latency)
    empty = pd.DataFrame({"score": pd.Series(dtype="float64")})
    return (
        intervals,
        pd.concat(champion, ignore_index=True) if champion else empty,
        pd.concat(canary, ignore_index=True) if canary else empty,
        latencies,
    )


# --------------------------------------------------------------------------------------------- report


def _arm_rows(cfg: ModelConfig, analysis: Analysis) -> list[list[str]]:
    from mlops.quality.reports import num_cell

    names = sorted(set(analysis.canary.metrics) | set(analysis.champion.metrics))
    rows = []
    for label, arm in (("canary", analysis.canary), ("champion", analysis.champion)):
        rows.append(
            [
                f"{label} v{html.escape(arm.version)}",
                str(arm.rows),
                str(arm.labelled),
                *[num_cell(arm.metrics.get(n)) for n in names],
                num_cell(arm.failure_rate),
                num_cell(arm.rows_per_s, 0),
                num_cell(arm.p50_ms, 2),
                num_cell(arm.p99_ms, 2),
            ]
        )
    return rows


def write_report(
    path: Path, cfg: ModelConfig, state: RolloutState, analysis: Analysis | None, decision: Decision
) -> Path:
    """One HTML page per decision: the arms side by side, every check, the verdict first."""
    from mlops.quality.reports import table, tag, write_html

    canary_cfg = cfg.promotion.canary
    verdict = "FAIL" if decision.action == "abort" else "SKIPPED" if decision.action == "hold" else "PASS"
    body = [
        f"<p>Rollout <code>{html.escape(state.rollout_id)}</code>: canary v{html.escape(state.canary_version)} "
        f"vs champion v{html.escape(state.champion_version)}, step {state.step + 1}/{len(state.steps)} "
        f"({state.steps[state.step]:g}% of entities), status {html.escape(state.status)}.</p>"
    ]
    if analysis is not None:
        names = sorted(set(analysis.canary.metrics) | set(analysis.champion.metrics))
        headers = ["arm", "rows", "labelled", *names, "failure rate", "rows/s", "p50 ms", "p99 ms"]
        body.append("<h2>Arms (intervals " + html.escape(", ".join(analysis.intervals) or "none") + ")</h2>")
        body.append(table(headers, _arm_rows(cfg, analysis)))
        checks = [
            *[[html.escape(b), tag(False, failed="GUARDRAIL")] for b in analysis.guardrail_breaches],
            *[[html.escape(f), tag(False)] for f in analysis.threshold_failures],
            *[[html.escape(m), tag(False, failed="MISSING")] for m in analysis.missing_evidence],
        ]
        limits = (
            f"latency guardrail p99 ≤ {canary_cfg.max_p99_latency_ms:g} ms; failure rate ≤ "
            f"{canary_cfg.max_failure_rate}; prediction KS ≤ {canary_cfg.max_prediction_drift} "
            f"(measured {'n/a' if analysis.prediction_ks is None else f'{analysis.prediction_ks:.3f}'}); "
            f"quality drop ≤ {json.dumps(canary_cfg.max_quality_drop)} + noise; floors "
            f"{json.dumps(cfg.monitoring.min_quality)}"
        )
        checks.append([html.escape(limits), tag(not checks)])
        body.append("<h2>Checks</h2>" + table(["check", "result"], checks))
        dump = html.escape(json.dumps(asdict(analysis), indent=1))
        body.append(f"<details><summary>analysis JSON</summary><pre>{dump}</pre></details>")
    return write_html(
        path,
        f"{cfg.name} canary {state.rollout_id}: {decision.action}",
        "".join(body),
        verdict=verdict,  # type: ignore[arg-type]
        summary=f"{decision.action}: {decision.reason}",
    )


# ------------------------------------------------------------------------------------------ the step


def _report_path(model: str, state: RolloutState, action: str) -> Path:
    from mlops.core.settings import get_settings

    folder = get_settings().reports_dir / model / "rollout" / state.rollout_id
    return folder / f"{len(state.events):03d}-step{state.step + 1}-{action}.html"


def _manual(model: str, action: str, state: RolloutState, **who: str) -> Decision:
    from mlops.model import rollout

    reason = who.pop("reason") or f"{action} requested"
    if action == "promote_now":
        rollout.promote(model, reason=f"promoted by hand: {reason}", expect_rollout=state.rollout_id, **who)
        return Decision("promote", f"promoted by hand: {reason}")
    rollout.record(model, action, reason=reason, expect_rollout=state.rollout_id, **who)
    return Decision(action, reason)


def run_rollout(
    model: str, action: str = "analyze", *, actor: str, reason: str = "", dag_id: str = "", dag_run_id: str = ""
) -> dict[str, Any]:
    """What ``<model>__rollout`` runs: a manual action, or the analysis of the current step and its decision.

    Every decision writes an HTML report and is recorded in the rollout's events; ``promote`` moves
    ``champion`` through the registry (recorded in the alias history).
    """
    from mlops.core.config import get_config
    from mlops.core.errors import NothingToDo
    from mlops.core.lake import open_lake
    from mlops.core.settings import get_settings
    from mlops.model import rollout
    from mlops.model.registry import CHAMPION, get_alias_version

    if action not in rollout.ACTIONS:
        raise ValueError(f"unknown rollout action {action!r}; one of {', '.join(rollout.ACTIONS)}")
    cfg = get_config(model).config
    lake = open_lake(get_settings())
    state = rollout.load_state(model, lake)
    if state is None or not state.active:
        raise NothingToDo(f"{model} has no running canary rollout")
    who = {"actor": actor, "dag_id": dag_id, "dag_run_id": dag_run_id}
    analysis: Analysis | None = None
    if action != "analyze":
        decision = _manual(model, action, state, reason=reason, **who)
    elif str(get_alias_version(model, CHAMPION)) != state.champion_version:
        decision = Decision("abort", f"champion is no longer v{state.champion_version} (rolled back or moved)")
    else:
        analysis = analyze(cfg, state, *step_evidence(model, state, lake))
        decision = decide(state, analysis)
    report = write_report(_report_path(model, state, decision.action), cfg, state, analysis, decision)
    if action == "analyze":
        who["report"] = str(report)
        if decision.action == "promote":
            rollout.promote(model, reason=decision.reason, expect_rollout=state.rollout_id, **who)
        else:
            rollout.record(model, decision.action, reason=decision.reason, expect_rollout=state.rollout_id, **who)
    final = rollout.load_state(model, lake)
    assert final is not None
    log.info("%s rollout %s: %s (%s); report %s", model, state.rollout_id, decision.action, decision.reason, report)
    return {
        "rollout_id": state.rollout_id,
        "canary_version": state.canary_version,
        "decision": decision.action,
        "reason": decision.reason,
        "guardrail": decision.guardrail,
        "status": final.status,
        "step": final.step,
        "share": final.share,
        "report": str(report),
        "analysis": asdict(analysis) if analysis else None,
    }
