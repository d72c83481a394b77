"""What the Airflow UI's cockpit shows, assembled from where the pipeline stored it.

Plain, typed functions over MLflow (runs, artifacts, registry) and the model configs; no Airflow import,
so they are unit-tested on the embedded default. The Airflow plugin (``plugins/mlops_cockpit.py``) checks
the user's DAG permission and renders these values (:mod:`mlops.quality.cockpit_html`).

MLflow calls are few and bounded: a Models page is four calls whatever the number of versions or days
(the registered model, one search over its versions, one over the alias history, one paged search over
the monitoring runs).
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops.core.config import ModelConfig, get_config
from mlops.core.settings import get_settings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

GATES = ("drift", "quality", "fairness", "champion")
GATE_TASK_PREFIX = "gate_"
NOT_RUN = "NOT RUN"
LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"  # `make mlflow-ui` on the embedded default
MAX_MONITORING_RUNS = 1000  # about three years of daily intervals (one page); older ones are left off the chart
MONITORING_CACHE_S = 60.0  # monitoring changes once an interval: the chart may be a minute old, aliases never are
_BANNER = re.compile(
    r'<div class="mlops-banner [^"]*" data-verdict="(?P<verdict>[A-Z ]+)">'
    r'<span class="verdict">[^<]*</span>(?P<summary>[^<]*)</div>'
)
_TRAINING_KINDS = ("training",)


class UnknownModel(LookupError):
    """The name is not a configured model (or a DAG id of none)."""


class NotFound(LookupError):
    """The run, gate or report asked for does not exist (yet)."""


def model_of(dag_id: str) -> str:
    """The model a DAG id ``<model>__<kind>`` belongs to; raises UnknownModel for any other id."""
    model, sep, _kind = dag_id.rpartition("__")
    if not sep:
        raise UnknownModel(f"{dag_id!r} is not a model pipeline's DAG id (<model>__<kind>)")
    check_model(model)
    return model


def check_model(model: str) -> ModelConfig:
    """The model's config; raises UnknownModel when no config has that name."""
    try:
        return get_config(model).config
    except Exception as exc:  # a missing or invalid config: nothing to show
        raise UnknownModel(f"no model config named {model!r}") from exc


def model_names() -> list[str]:
    """Every configured model, by name."""
    from mlops.core.config import discover

    good, _bad = discover(get_settings().models_dir)
    return sorted(loaded.config.name for loaded in good)


def is_training_dag(dag_id: str) -> bool:
    return dag_id.rpartition("__")[2] in _TRAINING_KINDS


def gate_of(task_id: str) -> str | None:
    """The gate a training task runs (``gate_drift`` -> ``drift``), None for any other task."""
    gate = task_id.rsplit(".", 1)[-1].removeprefix(GATE_TASK_PREFIX)
    return gate if task_id.rsplit(".", 1)[-1].startswith(GATE_TASK_PREFIX) and gate in GATES else None


def parse_banner(page: str) -> tuple[str, str]:
    """(verdict, one-line summary) from a report's banner (:func:`mlops.quality.reports.verdict_banner`)."""
    import html

    found = _BANNER.search(page)
    if found is None:
        return "UNKNOWN", "the report carries no verdict banner"
    return found["verdict"], html.unescape(found["summary"]).strip()


def mlflow_ui_url() -> str:
    """Where a person opens MLflow: the tracking server, or `make mlflow-ui` on the embedded default."""
    uri = get_settings().tracking_uri
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_MLFLOW_UI


def run_link(experiment_id: str, run_id: str) -> str:
    return f"{mlflow_ui_url()}/#/experiments/{experiment_id}/runs/{run_id}"


# ------------------------------------------------------------------------------------------ gates


@dataclass(frozen=True)
class GateView:
    """One gate of one training run: verdict, the line a person reads, its numbers and thresholds."""

    gate: str
    verdict: str
    summary: str
    metrics: dict[str, float]
    thresholds: dict[str, float]
    report: str | None  # artifact path of the HTML report in the training run, None when not written


@dataclass(frozen=True)
class TrainingView:
    """A training DAG run as the Gates view shows it."""

    model: str
    dag_run_id: str
    mlflow_run_id: str | None
    mlflow_link: str | None
    status: str
    gates: list[GateView]
    version: str | None = None
    lineage: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def gate_thresholds(cfg: ModelConfig) -> dict[str, dict[str, float]]:
    """Each gate's thresholds from the model's config (what the gates are judged against today)."""
    gates = cfg.gates
    return {
        "drift": {"max_drifted_share": gates.drift.max_drifted_share},
        "quality": {f"min_{k}": float(v) for k, v in gates.quality.min_metrics.items()},
        "fairness": {"max_disparity": gates.fairness.max_disparity},
        "champion": {"tolerance": gates.champion.tolerance},
    }


def _client() -> MlflowClient:
    from mlops.core.tracking import client

    return client()


def training_mlflow_run(model: str, dag_run_id: str) -> Any | None:
    """The MLflow training run of a DAG run (tag ``airflow.dag_run_id``): the newest attempt with gates.

    A retried ``train`` leaves one run per attempt; the gates log to the attempt that succeeded.
    """
    import mlflow
    from mlops.core.tracking import configure

    configure()
    experiment = mlflow.get_experiment_by_name(model)
    if experiment is None:
        return None
    escaped = dag_run_id.replace("'", "\\'")
    runs = _client().search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`airflow.dag_run_id` = '{escaped}'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    if not runs:
        return None
    with_gates = [r for r in runs if any(k.startswith("gate.") for k in r.data.tags)]
    return (with_gates or runs)[0]


def _read_artifact_text(run_id: str, path: str) -> str | None:
    import tempfile
    from pathlib import Path

    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = _client().download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        return Path(local).read_text(encoding="utf-8", errors="replace")


def _gate_run(model: str, dag_run_id: str, gate: str) -> Any:
    if gate not in GATES:
        raise NotFound(f"{gate!r} is not a gate ({', '.join(GATES)})")
    run = training_mlflow_run(model, dag_run_id)
    if run is None:
        raise NotFound(f"{model} run {dag_run_id} has no training run in MLflow (yet)")
    return run


def gate_view(model: str, dag_run_id: str, gate: str) -> tuple[GateView, str]:
    """The gate's verdict line, numbers and thresholds (from the run's tags) and the MLflow run's link.

    Raises NotFound when the DAG run has no training run in MLflow (yet).
    """
    run = _gate_run(model, dag_run_id, gate)
    return _gate_view(gate, run, check_model(model), None), run_link(run.info.experiment_id, run.info.run_id)


def gate_report(model: str, dag_run_id: str, gate: str) -> str:
    """The gate's HTML report as the gate wrote it, read from the training run's MLflow artifacts.

    Raises NotFound when the run has no training run in MLflow or the gate wrote no report (yet).
    """
    run = _gate_run(model, dag_run_id, gate)
    page = _read_artifact_text(run.info.run_id, f"reports/{gate}.html")
    if page is None:
        raise NotFound(f"gate {gate} of {model} run {dag_run_id} wrote no report (it has not run, or failed early)")
    return page


_VERDICTS = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIPPED"}


def _gate_view(gate: str, run: Any, cfg: ModelConfig, page: str | None) -> GateView:
    """A gate's view from its report's banner (``page``), else from the run's tags (no download)."""
    from mlops.quality.steps import GATE_SUMMARY_TAG

    prefix = f"gate_{gate}_"
    metrics = {k.removeprefix(prefix): float(v) for k, v in run.data.metrics.items() if k.startswith(prefix)}
    tag = run.data.tags.get(f"gate.{gate}")
    summary = run.data.tags.get(f"{GATE_SUMMARY_TAG}{gate}")
    if page is None and tag is not None and summary is None:  # a run from before the summary tag
        page = _read_artifact_text(run.info.run_id, f"reports/{gate}.html")
    if page is not None:
        verdict, summary = parse_banner(page)
    elif tag is None:
        verdict, summary = NOT_RUN, "the gate has not reported (yet)"
    else:
        verdict = _VERDICTS.get(tag, tag.upper())
        if "forced" in (summary or ""):
            verdict = "FORCED"
    return GateView(
        gate=gate,
        verdict=verdict,
        summary=summary or "",
        metrics=metrics,
        thresholds=gate_thresholds(cfg)[gate],
        report=f"reports/{gate}.html" if tag is not None else None,
    )


def training_view(model: str, dag_run_id: str) -> TrainingView:
    """The four gates of a training DAG run, its registered version, lineage and MLflow run."""
    cfg = check_model(model)
    run = training_mlflow_run(model, dag_run_id)
    if run is None:
        return TrainingView(model, dag_run_id, None, None, "NOT STARTED", _not_run(cfg))
    run_id = run.info.run_id
    gates = [_gate_view(g, run, cfg, None) for g in GATES]
    versions = _client().search_model_versions(f"name='{model}' and run_id='{run_id}'")
    version = versions[0] if versions else None
    lineage = {k: v for k, v in (version.tags if version else {}).items() if k.startswith("lineage.")}
    metrics = {k.removeprefix("holdout_"): float(v) for k, v in run.data.metrics.items() if k.startswith("holdout_")}
    return TrainingView(
        model=model,
        dag_run_id=dag_run_id,
        mlflow_run_id=run_id,
        mlflow_link=run_link(run.info.experiment_id, run_id),
        status=run.info.status,
        gates=gates,
        version=str(version.version) if version else None,
        lineage=lineage,
        metrics=metrics,
    )


def _not_run(cfg: ModelConfig) -> list[GateView]:
    why = "training has not logged to MLflow (yet)"
    return [GateView(g, NOT_RUN, why, {}, gate_thresholds(cfg)[g], None) for g in GATES]


# ------------------------------------------------------------------------------------------ models


@dataclass(frozen=True)
class VersionRow:
    version: str
    aliases: list[str]
    created: str
    gates: dict[str, str]
    metrics: dict[str, float]
    lineage: dict[str, str]
    mlflow_link: str | None


@dataclass(frozen=True)
class AliasRow:
    alias: str
    from_version: str | None
    to_version: str
    actor: str
    reason: str
    at: str
    dag_run_id: str


@dataclass(frozen=True)
class MonitoringPoint:
    day: str
    version: str
    drift_share: float | None
    prediction_ks: float | None
    quality: dict[str, float]
    rows: int


@dataclass(frozen=True)
class Thresholds:
    drift_share: float
    prediction_ks: float
    min_quality: dict[str, float]


@dataclass(frozen=True)
class ModelView:
    """The Models page of one model."""

    model: str
    aliases: dict[str, str]  # alias -> version: champion, challenger and any rollout alias
    versions: list[VersionRow]
    history: list[AliasRow]
    monitoring: list[MonitoringPoint]
    thresholds: Thresholds
    training_dag: str
    rollback_dag: str


def _ms_to_iso(ms: int | None) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC") if ms else ""


def _versions(model: str, aliases: dict[str, str]) -> list[VersionRow]:
    import mlflow
    from mlops.model.registry import version_number

    experiment = mlflow.get_experiment_by_name(model)

    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for mv in _client().search_model_versions(f"name='{model}'"):
        tags = dict(mv.tags)
        rows.append(
            VersionRow(
                version=str(mv.version),
                aliases=sorted(by_version.get(str(mv.version), [])),
                created=_ms_to_iso(mv.creation_timestamp),
                gates={k.removeprefix("gate."): v for k, v in tags.items() if k.startswith("gate.")},
                metrics={k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")},
                lineage={k.removeprefix("lineage."): v for k, v in tags.items() if k.startswith("lineage.")},
                mlflow_link=run_link(experiment.experiment_id, mv.run_id) if experiment and mv.run_id else None,
            )
        )
    return sorted(rows, key=lambda r: version_number(r.version), reverse=True)


def _history(model: str) -> list[AliasRow]:
    from mlops.model.registry import alias_history

    return [
        AliasRow(c.alias, c.from_version, c.to_version, c.actor, c.reason, c.at, c.dag_run_id)
        for c in alias_history(model)
    ]


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


_monitoring_cache: dict[tuple[str, str], tuple[float, list[MonitoringPoint]]] = {}
_monitoring_lock = threading.Lock()


def monitoring_points(model: str, *, max_age_s: float = MONITORING_CACHE_S) -> list[MonitoringPoint]:
    """The model's monitored intervals, oldest first, kept in-process for ``max_age_s`` seconds."""
    key = (get_settings().tracking_uri, model)
    now = time.monotonic()
    with _monitoring_lock:
        cached = _monitoring_cache.get(key)
    if cached is not None and now - cached[0] < max_age_s:
        return cached[1]
    points = _search_monitoring(model)
    with _monitoring_lock:
        _monitoring_cache[key] = (now, points)
    return points


def clear_cache() -> None:
    """Forget cached monitoring points (tests and benchmarks)."""
    with _monitoring_lock:
        _monitoring_cache.clear()


def _search_monitoring(model: str) -> list[MonitoringPoint]:
    """Every monitored interval of the model, oldest first: one search over ``<model>__monitoring``."""
    import mlflow
    from mlops.core.tracking import configure
    from mlops.quality.monitoring import MONITORING_SUFFIX

    configure()
    experiment = mlflow.get_experiment_by_name(f"{model}{MONITORING_SUFFIX}")
    if experiment is None:
        return []
    points: dict[str, MonitoringPoint] = {}
    token: str | None = None
    fetched = 0
    while fetched < MAX_MONITORING_RUNS:
        page = _client().search_runs(
            [experiment.experiment_id],
            filter_string="tags.interval LIKE '%'",
            order_by=["attributes.start_time DESC"],
            max_results=min(1000, MAX_MONITORING_RUNS - fetched),
            page_token=token,
        )
        fetched += len(page)
        for run in page:
            day = run.data.tags["interval"][:10]
            if day in points:  # newest run of a day wins (ordered newest first)
                continue
            m = run.data.metrics
            points[day] = MonitoringPoint(
                day=day,
                version=run.data.tags.get("champion_version", ""),
                drift_share=_finite(m.get("drift_share")),
                prediction_ks=_finite(m.get("prediction_ks")),
                quality={k.removeprefix("quality_"): float(v) for k, v in m.items() if k.startswith("quality_")},
                rows=int(m.get("rows", 0)),
            )
        token = page.token
        if not token:
            break
    return [points[d] for d in sorted(points)]


def model_view(model: str) -> ModelView:
    """Champion/challenger and rollout aliases, versions with gates and lineage, alias history, monitoring."""
    cfg = check_model(model)
    from mlflow.exceptions import MlflowException

    try:
        registered = _client().get_registered_model(model)
        aliases = {str(k): str(v) for k, v in (registered.aliases or {}).items()}
        versions = _versions(model, aliases)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        aliases, versions = {}, []
    return ModelView(
        model=model,
        aliases=dict(sorted(aliases.items())),
        versions=versions,
        history=_history(model),
        monitoring=monitoring_points(model),
        thresholds=Thresholds(
            drift_share=cfg.monitoring.drift_share_threshold,
            prediction_ks=cfg.monitoring.prediction_drift_threshold,
            min_quality={str(k): float(v) for k, v in cfg.monitoring.min_quality.items()},
        ),
        training_dag=f"{model}__training",
        rollback_dag=f"{model}__rollback",
    )
