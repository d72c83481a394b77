"""Small helpers the DAG files share: parse-time config discovery, error reporting, task error mapping.

Parse-time work here is deliberately tiny: read a few YAML files and validate them with pydantic. No
database, connection, Variable or network access; no pandas/mlflow/feast imports.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from airflow.sdk import DAG, Asset
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from mlops.core.config import CRON_PRESETS, ConfigError, LoadedConfig, ModelConfig, discover
from mlops.core.settings import REPO_ROOT
from mlops.orchestration.lineage import join_uri, lake_uri

T = TypeVar("T")


def _lake_asset(model: str, kind: str, *parts: str, query: str = "") -> Asset:
    """``<model>.<kind>``, located in the lake (``file://`` or ``s3://``; see ``mlops.orchestration.lineage``).

    The name is the Asset's stable identity (events, schedules and the UI use it); the URI is where the
    data is. Without a lake setting (an incomplete production environment) the URI is the name, so the
    DAG still parses and its tasks report the missing setting.
    """
    name = f"{model}.{kind}"
    location = lake_uri(*parts)
    return Asset(name=name, uri=f"{location}{query}" if location else name, group="mlops")


def features_asset(model: str) -> Asset:
    """Emitted when a model's validated day snapshots are published and materialized: ``<lake>/validated/<model>``."""
    return _lake_asset(model, "features", "validated", model)


def predictions_asset(model: str) -> Asset:
    """Emitted when a validated batch has been scored by the champion: ``<lake>/predictions/<model>``."""
    return _lake_asset(model, "predictions", "predictions", model)


def drift_asset(model: str) -> Asset:
    """Emitted only when monitoring finds drift (``<lake>/monitoring/<model>``); training is scheduled on it."""
    return _lake_asset(model, "drift", "monitoring", model)


def labels_asset(model: str) -> Asset:
    """Emitted when newly landed labelled batches have been validated; retraining may listen to it.

    The same partitions as ``features_asset`` (labels are a column of the validated snapshots); Airflow
    needs each Asset's URI to be unique, so it carries ``?view=labels`` (lineage tools drop the query).
    """
    return _lake_asset(model, "labels", "validated", model, query="?view=labels")


def landing_flag(cfg: ModelConfig) -> Path | None:
    """The ready flag the landing watcher waits for: ``<landing root>/<landing>/<flag>``, or None.

    None when no flag is configured or the landing root is on S3 (no file to watch). The path is built
    only from the environment's root and the config's checked relative path and plain file name, so
    the watcher (which deletes the flag) can never reach a file outside the landing root.
    """
    from mlops.core.config import check_landing_path, check_ready_flag
    from mlops.core.settings import SettingsError, get_settings

    if not cfg.source.ready_flag:
        return None
    try:
        root = get_settings().landing_uri.removeprefix("file://")
    except SettingsError:  # an incomplete production environment: the tasks report it, parsing must not fail
        return None
    if "://" in root:  # s3:// has no file to watch
        return None
    return Path(root) / check_landing_path(cfg.source.landing) / check_ready_flag(cfg.source.ready_flag)


LANDING_FLAG_POKE_SECONDS = 1.0


def landing_location(cfg: ModelConfig, landing_root: str) -> str:
    """The model's landing location as a URI: ``source.landing`` under the environment's landing root.

    String work only (safe at parse time); the same location ``mlops.data.ingest.landing_store`` opens.
    """
    landing = cfg.source.landing
    if "://" in landing or landing.startswith("/"):
        return landing.rstrip("/")
    return f"{landing_root.rstrip('/')}/{landing.strip('/')}"


def _landing_root() -> str | None:
    from mlops.core.settings import SettingsError, get_settings

    try:
        return get_settings().landing_uri
    except SettingsError:  # an incomplete production environment: the tasks report it, parsing must not fail
        return os.environ.get("MLOPS_LANDING_URI") or None


def landed_asset(cfg: ModelConfig) -> Asset:
    """New batches in the model's landing location, announced to Airflow without a polling task.

    - Landing in S3 (production): the Asset is the landing prefix (``s3://bucket/<root>/<model>``); its
      watcher long-polls the model's SQS queue, fed by the bucket's event notifications
      (``mlops.data.landing_events``), and fires once per batch of messages received. Without
      ``MLOPS_LANDING_QUEUE_URL`` there is no watcher (the daily data DAG still runs).
    - A local landing folder (the Asset is ``file://<landing folder>``): ``FileDeleteTrigger`` fires once
      when the producer's ready flag appears and deletes it (only the flag: landed batches are never
      touched), so each flag is one Asset event.

    Either way the watcher runs in the triggerer, and the landing run works out the pending days itself.
    """
    from airflow.sdk import AssetWatcher

    from mlops.core.settings import landing_queue

    root = _landing_root()
    location = landing_location(cfg, root) if root else ""
    if location.startswith("s3://"):
        from mlops.data.landing_events import queue_trigger

        queue = landing_queue(cfg.name)  # a malformed template fails the parse with the setting's name
        s3_watchers = []
        if queue is not None:
            s3_watchers.append(AssetWatcher(name=f"{cfg.name}_landing_s3_events", trigger=queue_trigger(queue)))
        return Asset(name=f"{cfg.name}.landed", uri=location, group="mlops", watchers=s3_watchers)

    flag = landing_flag(cfg)
    watchers = []
    if flag is not None:
        from airflow.providers.standard.triggers.file import FileDeleteTrigger

        # One stat() a second per model in the triggerer's event loop: landing starts within ~1 s of
        # the flag (Airflow's default of 5 s was most of the watcher's latency in the benchmark).
        trigger = FileDeleteTrigger(filepath=str(flag), poke_interval=LANDING_FLAG_POKE_SECONDS)
        watchers.append(AssetWatcher(name=f"{cfg.name}_landing_ready_flag", trigger=trigger))
    uri = join_uri(location) if location else f"{cfg.name}.landed"
    return Asset(name=f"{cfg.name}.landed", uri=uri, group="mlops", watchers=watchers)


def landing_watch(asset: Asset) -> str:
    """One line for the landing DAG's docs: what starts it in this environment."""
    for watcher in asset.watchers:
        classpath, kwargs = watcher.trigger.serialize()
        if "sqs" in classpath.lower():
            queue, conn = kwargs["sqs_queue"], kwargs["aws_conn_id"]
            return f"S3 event notifications through the SQS queue `{queue}` (connection `{conn}`)"
        return f"the ready flag `{kwargs.get('filepath')}`"
    return "no watcher here (S3 landing without `MLOPS_LANDING_QUEUE_URL`, or no ready flag): trigger it by hand"


def triggering_extras(context: Any, asset: Asset) -> list[dict[str, Any]]:
    """The extras of every event of ``asset`` behind this run (Airflow may merge a burst into one run)."""
    events = context.get("triggering_asset_events") or {}
    found: list[dict[str, Any]] = []
    for key, asset_events in events.items():
        name = getattr(key, "name", key)
        if name == asset.name or getattr(key, "uri", None) == asset.uri:
            found.extend(dict(event.extra or {}) for event in asset_events)
    return found


def requested_intervals(context: Any, asset: Asset, backlog: Callable[[], list[str]] | None = None) -> list[str]:
    """Intervals behind this run: from the triggering asset events, else the run's ``intervals`` Param.

    An event-triggered run also takes ``backlog()``: Airflow may merge a burst of events into one run
    without listing them all (apache/airflow#56749), so the step names the days it has not handled yet.
    """
    found: set[str] = set()
    for extra in triggering_extras(context, asset):
        found.update(extra.get("intervals") or [])
        if extra.get("interval"):
            found.add(extra["interval"])
    if backlog is not None and context.get("triggering_asset_events"):
        found.update(backlog())
    if not found:
        found.update(context["params"].get("intervals") or [])
    return sorted(found)


def intervals_param() -> Any:
    from airflow.sdk import Param

    return Param(
        [],
        type="array",
        items={"type": "string", "format": "date"},
        title="Intervals (manual runs)",
        description="Days (YYYY-MM-DD) to process when triggered by hand; asset runs use the event.",
    )


def models_dir() -> Path:
    return Path(os.environ.get("MLOPS_MODELS_DIR", REPO_ROOT / "include" / "models"))


def training_backend() -> str:
    """'kubernetes' in production unless overridden; never raises (safe at parse time)."""
    default = "kubernetes" if os.environ.get("MLOPS_ENV") == "production" else "local"
    return os.environ.get("MLOPS_TRAINING_BACKEND", default)


def load_model_configs() -> tuple[list[LoadedConfig], list[ConfigError]]:
    return discover(models_dir())


def default_args(owner: str) -> dict[str, Any]:
    """Transient faults retry; gates raise AirflowFailException, which never retries."""
    return {
        "owner": owner,
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    }


START = datetime(2026, 1, 1)  # every model DAG's start_date; catchup is off, so it only bounds the UI


def model_dag(
    cfg: ModelConfig,
    kind: str,
    doc: str,
    *,
    tags: tuple[str, ...] | None = None,
    describe: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """The arguments every ``<model>__<kind>`` DAG shares, for ``@dag(**model_dag(...), schedule=...)``.

    One run at a time, no catchup, the house ``default_args``, tags ``mlops``, ``model:<name>`` and
    ``tags`` (default: the kind), and the DAG file's docstring with the model's name (and description).
    ``overrides`` replace single arguments (e.g. ``default_args``).
    """
    summary = f"**Model `{cfg.name}`**" + (f": {cfg.description}" if describe else "")
    return {
        "dag_id": f"{cfg.name}__{kind}",
        "start_date": START,
        "catchup": False,
        "max_active_runs": 1,
        "default_args": default_args(cfg.owner),
        "tags": ["mlops", f"model:{cfg.name}", *(tags if tags is not None else (kind,))],
        "doc_md": f"{doc}\n\n{summary}",
        **overrides,
    }


def cron(expression: str) -> str:
    return CRON_PRESETS.get(expression, expression)


class ConfigErrorDag(DAG):
    """Stands in for malformed model configs.

    Airflow records an exception raised while a DAG is validated as an import error of the DAG file,
    and keeps loading the file's other DAGs: the UI's import-error banner then names the YAML file,
    the key and the problem, while every well-formed model keeps its DAGs.
    """

    config_errors: tuple[str, ...] = ()

    def validate(self) -> None:
        raise ConfigError("malformed model config(s): " + " || ".join(self.config_errors))


def generate_dags(namespace: dict[str, Any], kind: str, build: Callable[[ModelConfig], DAG]) -> None:
    """Put one ``<model>__<kind>`` DAG per valid model config into a DAG file's globals.

    Malformed configs become one ``ConfigErrorDag`` (an import error naming file, key and problem) while
    every valid model keeps its DAG.
    """
    configs, errors = load_model_configs()
    for loaded in configs:
        namespace[f"{loaded.config.name}__{kind}"] = build(loaded.config)
    if errors:
        namespace[f"model_config_errors__{kind}"] = config_error_dag(f"model_config_errors__{kind}", errors)


def config_error_dag(dag_id: str, errors: list[ConfigError]) -> DAG:
    error_dag = ConfigErrorDag(dag_id=dag_id, schedule=None, tags=["mlops", "config-error"])
    error_dag.config_errors = tuple(str(e) for e in errors)
    return error_dag


def run_each(fn: Callable[..., T], model: str, intervals: list[str], **kwargs: Any) -> list[T]:
    """``run_step`` per interval of a (possibly merged) run: an interval with nothing to do is skipped alone."""
    results: list[T] = []
    skipped: list[str] = []
    for interval in intervals:
        try:
            results.append(run_step(fn, model, interval, **kwargs))
        except AirflowSkipException as exc:
            skipped.append(str(exc))
    if not results:
        raise AirflowSkipException("; ".join(skipped) or "nothing to do")
    return results


def run_step(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a pipeline step; gate failures fail the task at once (no retries) with their one line."""
    from mlops.core.errors import GateFailed, NothingToDo

    try:
        return fn(*args, **kwargs)
    except GateFailed as exc:
        raise AirflowFailException(str(exc)) from None
    except NothingToDo as exc:
        raise AirflowSkipException(str(exc)) from None


DOCTOR_TASK = "registry_doctor"


def doctor_task(model: str) -> Any:
    """The registry doctor as a task: repairs what it safely can, fails (no retry) on what a person must fix.

    Wired as a root beside the DAG's own work, never before it: the remedies of what it cannot repair
    are a rollback or a retrain, which it must not hold back, and alias moves settle records left open
    by a crashed move themselves, under the model's lock. Its failure marks the run failed.
    """
    from airflow.sdk import task

    @task(task_id=DOCTOR_TASK)
    def registry_doctor() -> dict[str, Any]:
        from mlops.model import registry

        report = registry.doctor(model, repair=True)
        if report.broken:
            raise AirflowFailException(report.summary())
        return {"summary": report.summary(), "repaired": [f.line() for f in report.findings], "notes": report.notes}

    return registry_doctor()
