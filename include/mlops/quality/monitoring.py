"""Live monitoring of the champion: drift and quality of each scored interval, and retrain guard rails.

Each interval's champion predictions are compared with the champion's own reference: the rows it
was trained on (feature drift, Evidently via :func:`mlops.quality.gates.drift_gate`) and the scores it gave its
frozen holdout (prediction drift, a two-sample Kolmogorov-Smirnov statistic). Where labels have
arrived, live quality is checked against hard guardrails that the circuit breaker acts on. Every
interval is one MLflow run in ``<model>__monitoring`` with the HTML/JSON reports attached.

:func:`retrain_window` and :func:`cooldown_remaining` keep drift-triggered retraining sane when a burst
of drift events arrives or when a retrain has just run (or just failed).
"""

from __future__ import annotations

import html
import json
import logging
import math
import threading
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from mlops.core.config import ModelConfig, get_config
from mlops.core.errors import NothingToDo
from mlops.core.lake import open_lake, read_parquet, read_parquet_uri
from mlops.core.settings import get_settings
from mlops.core.storage import open_store
from mlops.core.util import jsonable
from mlops.quality.reports import fmt_vs
from mlops.quality.steps import drift_reference

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

MONITORING_SUFFIX = "__monitoring"
SCORE_COLUMN = "score"
MODEL_VERSION_COLUMN = "model_version"
_REFERENCE_CACHE_SIZE = 8

_reference_cache: dict[tuple[str, str, str], ChampionReference] = {}
_reference_lock = threading.Lock()


@dataclass(frozen=True)
class MonitorResult:
    """What one interval's monitoring found; ``event_extra`` is what a drift Asset event carries."""

    model: str
    interval: str
    champion_version: str
    drift_detected: bool
    drifted_features: list[str]
    drift_scores: dict[str, float]
    drift_share: float
    prediction_ks: float
    quality: dict[str, float] | None
    guardrail_breaches: list[str]
    reports: dict[str, str]
    feature_drift: bool = False
    prediction_drift: bool = False
    rows: int = 0
    labelled_rows: int = 0
    mlflow_run_id: str = ""
    drift_methods: dict[str, str] = field(default_factory=dict)
    # Inside the scoring version's own training window: drift is reported but is not news (no event).
    in_training_window: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN becomes null) for XCom and logs."""
        out: dict[str, Any] = jsonable(asdict(self))
        return out

    def event_extra(self) -> dict[str, Any]:
        """The drift event's payload: enough for the retrain run to say why it ran and on what window."""
        extra = {
            "model": self.model,
            "window": self.interval,
            "champion_version": self.champion_version,
            "drifted_features": list(self.drifted_features),
            "drift_scores": {f: self.drift_scores[f] for f in self.drifted_features if f in self.drift_scores},
            "drift_methods": {f: self.drift_methods[f] for f in self.drifted_features if f in self.drift_methods},
            "drift_share": self.drift_share,
            "prediction_ks": self.prediction_ks,
            "feature_drift": self.feature_drift,
            "prediction_drift": self.prediction_drift,
        }
        out: dict[str, Any] = jsonable(extra)
        return out


# ----------------------------------------------------------------------------------------- reference


class ChampionReference(NamedTuple):
    """What a version's live data is compared with."""

    rows: pd.DataFrame  # its training rows (holdout removed), sampled as the drift gate samples
    scores: np.ndarray  # the scores it gave its holdout
    source_rows: int  # training rows the sample was drawn from


def champion_reference(model: str, version: str) -> ChampionReference:
    """The version's training rows and holdout scores (see :class:`ChampionReference`), cached in-process.

    The rows are a seeded sample of at most the drift gate's sample size, read without loading the
    whole training set (:func:`mlops.quality.steps.drift_reference`), so the cache stays small. The cache key
    includes the registry URI, so two environments in one process (tests) never share an entry. Treat
    the returned frame and array as read-only: they are shared between callers.
    """
    from mlops.core.tracking import client

    settings = get_settings()
    key = (settings.registry_uri, model, str(version))
    with _reference_lock:
        cached = _reference_cache.get(key)
    if cached is not None:
        return cached

    from mlops.model.train import outputs_from

    cfg = get_config(model).config
    mlflow_client = client(settings)
    model_version = mlflow_client.get_model_version(model, str(version))
    tags = dict(model_version.tags)
    run_id = tags.get("lineage.training_run_id") or model_version.run_id
    if not run_id:
        raise ValueError(f"{model} version {version} has no training run (tag lineage.training_run_id)")
    params = mlflow_client.get_run(run_id).data.params
    if "training_set" not in params:
        raise ValueError(f"training run {run_id} of {model} version {version} has no param training_set")
    if "holdout_uri" not in tags:
        raise ValueError(f"{model} version {version} has no holdout_uri tag")
    holdout_days = int(params.get("holdout_days", cfg.training.holdout_days))
    parent, _, name = params["training_set"].rstrip("/").rpartition("/")
    train_rows, source_rows = drift_reference(open_store(parent), name, cfg, exclude_holdout_days=holdout_days)
    holdout = read_parquet_uri(tags["holdout_uri"])
    try:
        scores = prediction_values(cfg, outputs_from(holdout, cfg))
    except ValueError as exc:
        raise ValueError(f"holdout {tags['holdout_uri']}: {exc}") from None
    result = ChampionReference(train_rows, scores, source_rows)
    with _reference_lock:
        while len(_reference_cache) >= _REFERENCE_CACHE_SIZE:
            _reference_cache.pop(next(iter(_reference_cache)))
        _reference_cache[key] = result
    log.info(
        "reference of %s v%s: %d of %d training rows, %d holdout scores",
        model,
        version,
        len(train_rows),
        source_rows,
        len(scores),
    )
    return result


# ---------------------------------------------------------------------------------------- monitoring


def predictions_key(model: str, interval: str) -> str:
    return f"predictions/{model}/date={interval}/champion.parquet"


def monitored_key(model: str, interval: str) -> str:
    return f"monitoring/{model}/date={interval}/result.json"


def _days_with(model: str, prefix: str, name: str) -> list[str]:
    """Days (``date=`` partitions) under ``<prefix>/<model>/`` that hold ``name``, oldest first."""
    days = set()
    for key in open_lake(get_settings()).list(f"{prefix}/{model}/"):
        folder, _, file = key.rpartition("/")
        if file == name and "/date=" in f"/{folder}":
            days.add(folder.rsplit("date=", 1)[1])
    return sorted(days)


def _training_window(model: str, version: str) -> tuple[str, str] | None:
    """First and last day the version was trained on (its ``lineage.training_window`` tag), or None."""
    from mlops.model.registry import version_tags

    first, sep, last = version_tags(model, version).get("lineage.training_window", "").partition("..")
    return (first, last) if sep else None


def _in_training_window(model: str, version: str, interval: str) -> bool:
    window = _training_window(model, version)
    return window is not None and window[0] <= interval[:10] <= window[1]


def _champion_window_end(model: str) -> str | None:
    from mlops.model.registry import CHAMPION, get_alias_version

    version = get_alias_version(model, CHAMPION)
    window = _training_window(model, version) if version is not None else None
    return window[1] if window else None


def _backlog(model: str, candidates: list[str], done: list[str]) -> list[str]:
    """Candidates newer than the newest done day and than the champion's training data; [] before any."""
    window_end = _champion_window_end(model)
    if not done or window_end is None:
        return []
    return [day for day in candidates if day > done[-1] and day > window_end]


def scoring_backlog(model: str) -> list[str]:
    """Validated days the champion has not seen, newer than the newest scored one.

    Airflow may merge a burst of ``features`` events into one run without listing every event among the
    run's triggering events (apache/airflow issue 56749); scoring these days too means no new batch is left
    unscored. Days inside the champion's training window are never part of it (scoring and monitoring them
    compares the model with its own training data), and it is empty before the first scoring, so a new
    deployment does not score its history.
    """
    from mlops.data.steps import validated_days

    validated = [d.isoformat() for d in validated_days(model)]
    return _backlog(model, validated, _days_with(model, "predictions", "champion.parquet"))


def monitoring_backlog(model: str) -> list[str]:
    """Scored days newer than the newest monitored one (the same merge guard as :func:`scoring_backlog`)."""
    scored = _days_with(model, "predictions", "champion.parquet")
    return _backlog(model, scored, _days_with(model, "monitoring", "result.json"))


def _scoring_version(current: pd.DataFrame, model: str) -> str:
    """The version that produced these scores (their reference), else today's champion."""
    from mlops.model.registry import CHAMPION, get_alias_version

    if MODEL_VERSION_COLUMN in current.columns:
        versions = current[MODEL_VERSION_COLUMN].dropna().astype(str)
        if not versions.empty:
            return str(versions.mode().iloc[0])
    version = get_alias_version(model, CHAMPION)
    if version is None:
        raise NothingToDo(f"{model} has no champion and its predictions name no model_version")
    return version


def prediction_values(cfg: ModelConfig, outputs: np.ndarray) -> np.ndarray:
    """What prediction drift compares: the positive-class probability (binary), the predicted class's
    position (multiclass) or the predicted value (regression); missing values dropped."""
    import numpy as np

    values = outputs.argmax(axis=1).astype(float) if cfg.task == "multiclass" else np.asarray(outputs, dtype=float)
    return values[~np.isnan(values)]


def prediction_drift_statistic(cfg: ModelConfig, reference: np.ndarray, current: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (binary, regression), or the total variation distance
    between predicted-class shares (multiclass); both in [0, 1], NaN when a side is empty."""
    import numpy as np
    from scipy.stats import ks_2samp

    if not len(reference) or not len(current):
        return float("nan")
    if cfg.task != "multiclass":
        return float(ks_2samp(reference, current).statistic)
    k = len(cfg.label.classes or [])
    ref = np.bincount(reference.astype(int), minlength=k) / len(reference)
    cur = np.bincount(current.astype(int), minlength=k) / len(current)
    return float(0.5 * np.abs(ref - cur).sum())


def _judge_quality(current: pd.DataFrame, cfg: ModelConfig) -> tuple[dict[str, float] | None, list[str], int]:
    """(metrics, breaches, labelled rows); metrics are None when too few labels have arrived.

    A metric that is undefined (e.g. ROC AUC on one class) is reported but never a breach, so a
    batch without positives cannot roll the champion back.
    """
    from mlops.model.scoring import prediction_outputs
    from mlops.model.train import evaluate
    from mlops.quality.metrics import meets

    column = cfg.label.column
    if column not in current.columns:
        return None, [], 0
    labelled = current[current[column].notna() & current[SCORE_COLUMN].notna()]
    n = len(labelled)
    if n < cfg.monitoring.min_rows_for_quality:
        return None, [], n
    quality = evaluate(cfg, labelled[column], prediction_outputs(cfg, labelled))
    breaches = []
    guardrails = {**cfg.monitoring.min_quality, **cfg.monitoring.max_quality}
    for name, limit in guardrails.items():
        value = quality.get(name, float("nan"))
        if math.isfinite(value) and not meets(name, value, limit):
            shown, bound = fmt_vs(value, limit, trim_bound=True)
            breaches.append(f"{name} {shown} {'>' if name in cfg.monitoring.max_quality else '<'} {bound}")
    return quality, breaches, n


def _write_quality_html(
    path: Path,
    cfg: ModelConfig,
    quality: dict[str, float],
    breaches: list[str],
    labelled_rows: int,
    *,
    interval: str,
    version: str,
) -> Path:
    from mlops.quality.metrics import meets
    from mlops.quality.reports import note_tag, table, tag, write_html

    minimums = {str(k): float(v) for k, v in {**cfg.monitoring.min_quality, **cfg.monitoring.max_quality}.items()}
    rows = []
    for name, value in quality.items():
        minimum = minimums.get(name)
        value_s = f"{value:.4f}" if math.isfinite(value) else "n/a"
        if minimum is None:
            check = ""
        elif not math.isfinite(value):
            check = note_tag("undefined, not judged")
        else:
            check = tag(meets(name, value, minimum), passed="OK", failed="BREACH")
        minimum_s = "" if minimum is None else f"{minimum:g}"
        rows.append([html.escape(name), value_s, minimum_s, check])
    body = (
        f"<p>Champion v{html.escape(version)} on {labelled_rows} labelled rows of {html.escape(interval)} "
        f"(decision threshold {cfg.label.decision_threshold:g}). Guardrails come from "
        "<code>monitoring.min_quality</code>; a breach lets the circuit breaker roll the champion back.</p>"
        + table(["metric", "value", "guardrail", "check"], rows)
    )
    if breaches:
        summary = f"live quality guardrail breached: {'; '.join(breaches)} (n={labelled_rows})"
    else:
        summary = f"live quality within guardrails (n={labelled_rows})"
    return write_html(
        path,
        f"Live quality: {cfg.name} {interval}",
        body,
        verdict="FAIL" if breaches else "PASS",
        summary=summary,
    )


def _monitoring_run(model: str, interval: str) -> str:
    """The interval's run in ``<model>__monitoring``: reused on a rerun so each interval has one."""
    from mlops.core.tracking import client, ensure_experiment

    mlflow_client = client()
    experiment_id = ensure_experiment(f"{model}{MONITORING_SUFFIX}")
    existing = mlflow_client.search_runs([experiment_id], filter_string=f"tags.interval = '{interval}'", max_results=1)
    if existing:
        return str(existing[0].info.run_id)
    run = mlflow_client.create_run(experiment_id, run_name=f"monitor {interval}", tags={"interval": interval})
    return str(run.info.run_id)


def _log_to_mlflow(result: MonitorResult) -> str:
    from mlops.core.tracking import client

    mlflow_client = client()
    run_id = _monitoring_run(result.model, result.interval)
    metrics = {
        "drift_share": result.drift_share,
        "prediction_ks": result.prediction_ks,
        "rows": float(result.rows),
        "labelled_rows": float(result.labelled_rows),
        **{f"quality_{k}": v for k, v in (result.quality or {}).items()},
    }
    for name, value in metrics.items():
        if math.isfinite(value):
            mlflow_client.log_metric(run_id, name, float(value))
    tags = {
        "interval": result.interval,
        "champion_version": result.champion_version,
        "drift_detected": str(result.drift_detected).lower(),
        "feature_drift": str(result.feature_drift).lower(),
        "prediction_drift": str(result.prediction_drift).lower(),
        "drifted_features": ",".join(result.drifted_features)[:4000],
        "guardrail_breaches": "; ".join(result.guardrail_breaches)[:4000],
        "quality_judged": str(result.quality is not None).lower(),
    }
    for key, text in tags.items():
        mlflow_client.set_tag(run_id, key, text)
    for path in result.reports.values():
        mlflow_client.log_artifact(run_id, path, artifact_path="reports")
    mlflow_client.set_terminated(run_id, status="FINISHED")
    return run_id


def _current_prediction_values(cfg: ModelConfig, current: pd.DataFrame) -> np.ndarray:
    """An interval's predictions in :func:`prediction_values`'s form (multiclass: class positions)."""
    import numpy as np

    if cfg.task != "multiclass":
        return np.asarray(current[SCORE_COLUMN].dropna().to_numpy(dtype=float))
    positions = {str(c): float(i) for i, c in enumerate(cfg.label.classes or [])}
    mapped = current["prediction"].dropna().astype(str).map(positions)
    return np.asarray(mapped.dropna().to_numpy(dtype=float))


SERIES_TAG = "series_version"


def series_step(interval: str) -> int:
    """The MLflow step of an interval in the time series: days since 1970-01-01 (uniform in time)."""
    return (date.fromisoformat(interval[:10]) - date(1970, 1, 1)).days


def log_series(result: MonitorResult) -> str:
    """Add the interval to its champion version's time-series run in ``<model>__monitoring``.

    One run per version (tag ``series_version``), the day as the step and its midnight as the
    timestamp, so MLflow charts drift and live quality over time. A rerun of a day logs nothing new.
    """
    from mlflow.entities import Metric

    from mlops.core.tracking import client, ensure_experiment

    mlflow_client = client()
    experiment_id = ensure_experiment(f"{result.model}{MONITORING_SUFFIX}")
    version = result.champion_version
    found = mlflow_client.search_runs([experiment_id], filter_string=f"tags.{SERIES_TAG} = '{version}'", max_results=1)
    if found:
        run_id = str(found[0].info.run_id)
    else:
        run = mlflow_client.create_run(
            experiment_id, run_name=f"champion v{version} over time", tags={SERIES_TAG: version}
        )
        run_id = str(run.info.run_id)
    step = series_step(result.interval)
    if any(m.step == step for m in mlflow_client.get_metric_history(run_id, "drift_share")):
        return run_id
    day = date.fromisoformat(result.interval[:10])
    stamp = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    values = {
        "drift_share": result.drift_share,
        "prediction_ks": result.prediction_ks,
        "rows": float(result.rows),
        **{f"quality_{k}": v for k, v in (result.quality or {}).items()},
    }
    metrics = [Metric(k, float(v), stamp, step) for k, v in values.items() if math.isfinite(v)]
    mlflow_client.log_batch(run_id, metrics=metrics)
    mlflow_client.set_terminated(run_id, status="FINISHED")  # finished between days; the next day logs on
    return run_id


def monitor_interval(model: str, interval: str) -> MonitorResult:
    """Feature drift, prediction drift and live quality of one interval's champion predictions."""
    from mlops.quality.gates import drift_gate

    settings = get_settings()
    cfg = get_config(model).config
    lake = open_lake(settings)
    key = predictions_key(model, interval)
    if not lake.exists(key):
        raise NothingToDo(f"no champion predictions for {model} {interval} ({key})")
    current = read_parquet(lake, key)
    if current.empty:
        raise NothingToDo(f"champion predictions for {model} {interval} are empty")
    if SCORE_COLUMN not in current.columns:
        raise ValueError(f"predictions {key} lack the {SCORE_COLUMN!r} column")
    version = _scoring_version(current, model)
    reference, reference_scores, reference_rows = champion_reference(model, version)

    report_dir = settings.reports_dir / model / "monitoring" / interval
    report_dir.mkdir(parents=True, exist_ok=True)
    drift = drift_gate(
        reference,
        current,
        cfg,
        report_dir / "drift.html",
        max_share=cfg.monitoring.drift_share_threshold,
        reference_rows=reference_rows,
    )
    feature_drift = not drift.passed
    scores = _current_prediction_values(cfg, current)
    prediction_ks = prediction_drift_statistic(cfg, reference_scores, scores)
    prediction_drift = math.isfinite(prediction_ks) and (prediction_ks > cfg.monitoring.prediction_drift_threshold)
    quality, breaches, labelled_rows = _judge_quality(current, cfg)

    reports = {"drift": str(drift.report_html), "drift_json": str(drift.details["report_json"])}
    if quality is not None:
        path = _write_quality_html(
            report_dir / "quality.html",
            cfg,
            quality,
            breaches,
            labelled_rows,
            interval=interval,
            version=version,
        )
        reports["quality"] = str(path)
    columns: dict[str, dict[str, Any]] = drift.details.get("columns", {})
    result = MonitorResult(
        model=model,
        interval=interval,
        champion_version=version,
        drift_detected=feature_drift or prediction_drift,
        drifted_features=list(drift.details["drifted_columns"]),
        drift_scores={k: float(v) for k, v in drift.details["scores"].items()},
        drift_share=float(drift.metrics["drifted_share"]),
        prediction_ks=prediction_ks,
        quality=quality,
        guardrail_breaches=breaches,
        reports=reports,
        feature_drift=feature_drift,
        prediction_drift=prediction_drift,
        rows=len(current),
        labelled_rows=labelled_rows,
        drift_methods={c: str(info.get("method")) for c, info in columns.items()},
        in_training_window=_in_training_window(model, version, interval),
    )
    run_id = _log_to_mlflow(result)
    log_series(result)
    result = replace(result, mlflow_run_id=run_id)
    lake.put(monitored_key(model, interval), json.dumps(result.to_dict(), sort_keys=True).encode())
    log.info(
        "monitored %s %s (v%s): drift %s (share %.2f, prediction KS %.3f), quality %s, breaches %s",
        model,
        interval,
        version,
        result.drift_detected,
        result.drift_share,
        prediction_ks,
        "not judged" if quality is None else f"on {labelled_rows} rows",
        breaches or "none",
    )
    return result


# ---------------------------------------------------------------------------------------- retraining


def retrain_window(event_extras: list[dict[str, Any]], default_days: int) -> tuple[str | None, int]:
    """One training window for a run that Airflow merged from several drift events.

    It ends at the newest event's interval so the retrain sees the drifted data; events without a
    readable ``window`` are ignored, and a run with none (scheduled or manual) gets ``(None, days)``
    so the pipeline's default window (up to the newest validated day) applies.
    """
    ends: list[date] = []
    for extra in event_extras or []:
        if not isinstance(extra, dict):
            continue
        window = extra.get("window")
        if not window:
            continue
        try:
            ends.append(date.fromisoformat(str(window)[:10]))
        except ValueError:
            log.warning("ignoring drift event with unreadable window %r", window)
    if not ends:
        return None, default_days
    return max(ends).isoformat(), default_days


EVENT_TRIGGERS = ("drift", "labels")


def cooldown_remaining(model: str, cooldown_minutes: float, *, now: datetime | None = None) -> float:
    """Seconds before another event-triggered retrain may start; 0.0 when it may start now.

    Counts from the end (or, while it runs, the start) of the newest event-triggered training run (tag
    ``airflow.trigger`` ``drift`` or ``labels``) of any status in the training experiment ``<model>`` (a
    manual or scheduled training does not hold back an event-triggered one). A retrain whose gates failed
    also starts the cool-down, so persistent drift cannot cause a storm of retrains that all fail the same
    way, and runs queued behind a retrain during a burst of events find the cool-down fresh.
    """
    if cooldown_minutes <= 0:
        return 0.0
    import mlflow
    from mlops.core.tracking import client, configure

    configure()
    experiment = mlflow.get_experiment_by_name(model)
    if experiment is None:
        return 0.0
    runs = [
        run
        for trigger in EVENT_TRIGGERS
        for run in client().search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`airflow.trigger` = '{trigger}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if run.info.start_time is not None
    ]
    if not runs:
        return 0.0
    last = max(max(run.info.start_time, run.info.end_time or 0) for run in runs)
    started = datetime.fromtimestamp(last / 1000, tz=UTC)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    elapsed = (now - started).total_seconds()
    return max(0.0, cooldown_minutes * 60 - elapsed)


# ----------------------------------------------------------------------------------- circuit breaker


def breached_versions(results: list[MonitorResult]) -> list[str]:
    """Versions whose scores breached a quality guardrail, oldest first by number ("9" before "10")."""
    from mlops.model.registry import version_number

    return sorted({r.champion_version for r in results if r.guardrail_breaches}, key=version_number)


def circuit_breaker(
    model: str,
    intervals: list[str],
    breaches: list[str],
    versions: list[str],
    *,
    dag_id: str = "",
    dag_run_id: str = "",
    task_id: str = "circuit_breaker",
) -> dict[str, Any]:
    """Roll ``champion`` back when a guardrail was breached, only if the newest breached version still serves.

    The check and the move happen under the model's alias lock (:func:`mlops.model.registry.rollback` with
    ``only_if_champion``), so a promotion in between is never undone; a retry converges on the first
    attempt's target. Raises ``NothingToDo`` when there is nothing to undo.
    """
    from mlops.model import registry

    if not breaches:
        raise NothingToDo("quality within guardrails: champion kept")
    from mlops.core.errors import GateFailed

    judged = max(versions, key=registry.version_number)
    try:
        change = registry.rollback(
            model,
            actor="circuit-breaker",
            reason=f"quality guardrail breached in {intervals}: {'; '.join(breaches)}",
            dag_id=dag_id,
            dag_run_id=dag_run_id,
            task_id=task_id,
            only_if_champion=judged,
        )
    except registry.RollbackError as exc:
        raise GateFailed(f"circuit breaker could not roll back v{judged}: {exc}") from None
    if change is None:
        raise NothingToDo(f"v{judged} breached but is no longer the champion: nothing to undo")
    return {"rolled_back_from": change.from_version, "champion": change.to_version}
