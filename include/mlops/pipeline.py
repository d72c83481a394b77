"""One plain function per pipeline step: small JSON-able values in and out, no Airflow imports.

DAG tasks are thin wrappers around these (see ``mlops.dag_factory``); the demo, the tests and the
benchmarks call the very same functions. A step that must stop the run raises :class:`GateFailed` with
one line a person can act on, or :class:`NothingToDo` when there is no work for the interval.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.config import LoadedConfig, ModelConfig, get_config
from mlops.settings import REPO_ROOT, Settings, get_settings
from mlops.storage import ObjectStore, open_store

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class GateFailed(RuntimeError):
    """A blocking check failed; the message is the one line shown to people."""


class NothingToDo(RuntimeError):
    """No input for this interval: the task skips rather than fails."""


class InfrastructureError(RuntimeError):
    """The work did not finish for a reason outside it (killed, out of memory, timed out, evicted).

    Not a verdict on the data or the model: the task fails with this one line and Airflow retries it.
    """


def run_key(run_id: str) -> str:
    """A filesystem/S3-safe key for an Airflow run id (idempotent outputs are keyed on it)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("_")[:120] or "run"


def _lake(settings: Settings) -> ObjectStore:
    return open_store(settings.lake_uri)


def _read_parquet(store: ObjectStore, key: str) -> pd.DataFrame:
    import pandas as pd

    local = store.local_path(key)
    if local is not None:
        return pd.read_parquet(local)
    return pd.read_parquet(io.BytesIO(store.get(key)))


def _write_parquet(store: ObjectStore, key: str, df: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    store.put(key, buffer.getvalue())


def _parse_dt(value: str | datetime) -> datetime:
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------- ingest


def ingest(model: str, start: str | datetime, end: str | datetime) -> dict[str, Any]:
    """Copy the interval's landed files into the raw store (content-addressed, idempotent)."""
    from mlops.ingest import DuplicateBatchError, ingest_interval

    cfg = get_config(model).config
    try:
        result = ingest_interval(cfg, _parse_dt(start), _parse_dt(end))
    except DuplicateBatchError as exc:
        raise GateFailed(str(exc)) from exc
    if not result.files:
        raise NothingToDo(f"no batch landed for {model} in [{start}, {end})")
    log.info(
        "ingested %d file(s) for %s %s (%d new objects)",
        len(result.files),
        model,
        result.interval,
        result.new_objects,
    )
    return {
        "interval": result.interval,
        "files": [f.name for f in result.files],
        "hashes": [f.sha256 for f in result.files],
        "new_objects": result.new_objects,
    }


def pending_landed_days(model: str) -> list[str]:
    """Days with a newly landed batch (content not in the raw store yet), for the landing watcher."""
    from mlops.ingest import pending_days

    cfg = get_config(model).config
    days = pending_days(cfg)
    if not days:
        raise NothingToDo(f"no new batch in {model}'s landing location")
    return [d.isoformat() for d in days]


def process_landed_day(model: str, day: str) -> dict[str, Any]:
    """The data DAG's three steps for one landed day: ingest, the GX gate, materialize."""
    start = _parse_dt(day)
    end = start + timedelta(days=1)
    ingested = ingest(model, start, end)
    validated = validate(model, ingested["interval"], start, end)
    materialized = materialize(model, start, end)
    return {"interval": ingested["interval"], "rows": validated["rows"], "materialized": materialized["rows"]}


def process_landed(model: str, days: list[str]) -> dict[str, Any]:
    """Every pending day in order; a bad batch is quarantined and the others still go through.

    Returns the processed days and one line per quarantined batch; raises ``NothingToDo`` when no day had
    anything left to do (a rerun after every day went through).
    """
    processed: list[dict[str, Any]] = []
    quarantined: list[str] = []
    for day in days:
        try:
            processed.append(process_landed_day(model, day))
        except GateFailed as exc:
            quarantined.append(str(exc))
        except NothingToDo as exc:
            log.info("%s: %s", day, exc)
    if not processed and not quarantined:
        raise NothingToDo(f"nothing left to process for {model} in {days}")
    return {
        "intervals": [p["interval"] for p in processed],
        "rows": sum(int(p["rows"]) for p in processed),
        "processed": processed,
        "quarantined": quarantined,
    }


# ------------------------------------------------------------------------------------------- validate


def validate(model: str, interval: str, start: str | datetime, end: str | datetime) -> dict[str, Any]:
    """GX gate for every raw file of the interval: pass → validated partition; fail → quarantine."""
    from mlops.ingest import raw_store, read_manifest
    from mlops.validate import BatchReadError, coerce_types, read_batch, validate_batch

    settings = get_settings()
    cfg = get_config(model).config
    files = read_manifest(cfg, interval, settings)
    if not files:
        raise NothingToDo(f"no ingested batch for {model} {interval}")
    raw, lake = raw_store(cfg, settings), _lake(settings)
    gx_root = settings.state_dir / "gx"
    reports: list[str] = []
    failures: list[str] = []
    validated: list[str] = []
    rows = 0
    for raw_file in files:
        batch_id = f"{interval}-{raw_file.sha256[:8]}"
        report = settings.reports_dir / model / "data_quality" / f"{batch_id}.html"
        quarantine = f"quarantine/{model}/{interval}/{raw_file.sha256[:16]}"
        data = raw.get(raw_file.raw_key)
        try:
            df = coerce_types(read_batch(data, raw_file.fmt, name=raw_file.name, cfg=cfg), cfg)
        except BatchReadError as exc:
            line = f"GX gate failed for {model} batch {raw_file.name}: unreadable: {exc}"
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(f"<html><body><h1>FAIL</h1><p>{_escape(line)}</p></body></html>")
            _quarantine(lake, quarantine, (raw_file.name, data), {"error": str(exc)}, report, line)
            failures.append(line)
            reports.append(str(report))
            continue
        outcome = validate_batch(
            df,
            cfg,
            batch_id=batch_id,
            interval_start=_parse_dt(start),
            interval_end=_parse_dt(end),
            gx_root=gx_root,
            report_path=report,
        )
        reports.append(str(outcome.report_html))
        if not outcome.success:
            _quarantine(
                lake,
                quarantine,
                (raw_file.name, data),
                outcome.result,
                outcome.report_html,
                outcome.summary_line(),
            )
            failures.append(outcome.summary_line())
            continue
        key = f"validated/{model}/date={interval}/{raw_file.sha256[:16]}.parquet"
        if not lake.exists(key):
            _write_parquet(lake, key, df[cfg.all_columns])
        validated.append(key)
        rows += len(df)
        log.info("validated %s: %d rows, %s", raw_file.name, len(df), outcome.statistics)
    if failures:
        raise GateFailed(" | ".join(failures) + f" (quarantined under {settings.lake_uri}/quarantine/{model}/)")
    return {"interval": interval, "rows": rows, "validated": validated, "reports": reports}


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def _quarantine(
    lake: ObjectStore,
    prefix: str,
    batch: tuple[str, bytes],
    result: dict[str, Any],
    report: Path,
    reason: str,
) -> None:
    """Keep the bad batch, its GX result, its report and the one-line reason side by side."""
    files = {
        batch[0]: batch[1],
        "reason.txt": (reason + "\n").encode(),
        "result.json": json.dumps(result, indent=2, default=str).encode(),
    }
    if report.exists():
        files["report.html"] = report.read_bytes()
    for name, content in files.items():
        lake.put(f"{prefix}/{name}", content)
    log.warning("quarantined %s under %s", batch[0], prefix)


def validated_days(model: str, settings: Settings | None = None) -> list[date]:
    settings = settings or get_settings()
    days = set()
    for key in _lake(settings).list(f"validated/{model}/"):
        match = re.search(r"date=(\d{4}-\d{2}-\d{2})/", key)
        if match:
            days.add(date.fromisoformat(match[1]))
    return sorted(days)


def read_validated(model: str, days: list[date], settings: Settings | None = None) -> pd.DataFrame:
    import pandas as pd

    settings = settings or get_settings()
    lake = _lake(settings)
    frames = [
        _read_parquet(lake, key) for day in days for key in lake.list(f"validated/{model}/date={day.isoformat()}/")
    ]
    if not frames:
        raise NothingToDo(f"no validated data for {model} on {[d.isoformat() for d in days]}")
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------- features


def materialize(model: str, start: str | datetime, end: str | datetime) -> dict[str, Any]:
    """Apply the model's Feast objects (idempotent) and materialize exactly [start, end)."""
    from mlops import features

    cfg = get_config(model).config
    applied = features.apply(cfg)
    # By batch date: the interval's batch goes online whole, with its rows stamped up to the GX
    # freshness limit before the interval.
    rows = features.materialize_interval(cfg, _parse_dt(start), _parse_dt(end))
    log.info("materialized %d rows of %s for [%s, %s)", rows, cfg.feature_view, start, end)
    return {"applied": applied, "rows": rows, "feature_service": cfg.feature_service}


def training_window(model: str, window_end: str | None, window_days: int | None) -> tuple[date, date]:
    """[first, last] days of the window: by default the configured days up to the newest validated day."""
    cfg = get_config(model).config
    days = validated_days(model)
    if not days:
        raise NothingToDo(f"no validated data for {model} yet: run the {model}__data DAG first")
    last = date.fromisoformat(window_end) if window_end else days[-1]
    span = window_days or cfg.training.window_days
    return last - timedelta(days=span - 1), last


def build_training_set(
    model: str, run_id: str, window_end: str | None = None, window_days: int | None = None
) -> dict[str, Any]:
    """Point-in-time correct training set from Feast's offline store, written to the lake."""
    from mlops import features
    from mlops.ingest import raw_hashes_for_days

    settings = get_settings()
    cfg = get_config(model).config
    first, last = training_window(model, window_end, window_days)
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    labels = features.labels_for_window(cfg, start, end)
    if labels.empty:
        raise NothingToDo(f"no labelled rows for {model} between {first} and {last}")
    frame = features.training_set(cfg, labels)
    if len(frame) != len(labels):
        raise GateFailed(f"training set has {len(frame)} rows for {len(labels)} labels: rows were dropped")
    lake = _lake(settings)
    key, digest = _write_training_set(lake, f"runs/{model}/{run_key(run_id)}", frame)
    window_days_list = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    missing = int(frame[cfg.feature_columns].isna().all(axis=1).sum())
    log.info(
        "training set for %s: %d rows, window %s..%s, %d rows without features",
        model,
        len(frame),
        first,
        last,
        missing,
    )
    return {
        "uri": f"{lake.uri.rstrip('/')}/{key}",
        "sha256": digest,
        "holdout_uri": f"{lake.uri.rstrip('/')}/runs/{model}/{run_key(run_id)}/holdout.parquet",
        "rows": len(frame),
        "window_start": first.isoformat(),
        "window_end": last.isoformat(),
        "raw_batches": raw_hashes_for_days(cfg, window_days_list, settings),
        "feature_service": cfg.feature_service,
    }


def _write_training_set(lake: ObjectStore, prefix: str, frame: pd.DataFrame) -> tuple[str, str]:
    """Write the set once, keyed by its content: ``<prefix>/training_set-<sha256[:16]>.parquet``.

    A cleared or re-run task that builds a different set writes a new object beside the first and
    never overwrites the one a registered version (and its monitoring) points at; the same set is not
    written twice. Returns the key and the full sha256 (recorded in the version's lineage).
    """
    import hashlib

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    key = f"{prefix}/training_set-{digest[:16]}.parquet"
    if not lake.put_if_absent(key, data):
        log.info("training set %s already written (same content): kept", key)
    return key, digest


# ---------------------------------------------------------------------------------------------- train


def train_arguments(
    model: str,
    training_set: dict[str, Any],
    *,
    run_name: str,
    estimator_params: dict[str, Any] | None,
    tags: dict[str, str],
) -> list[str]:
    """CLI arguments of ``python -m mlops.train`` for the local process.

    The training pod passes the same flags, as Jinja templates over the upstream XCom
    (see ``dags/model_training.py``); ``tests/unit/test_pod.py`` checks the pod's flags.
    """
    return [
        "--model",
        model,
        "--training-set",
        training_set["uri"],
        "--holdout-output",
        training_set["holdout_uri"],
        "--estimator-params",
        json.dumps(estimator_params or {}),
        "--tags",
        json.dumps(tags),
        "--run-name",
        run_name,
    ]


def train_local(
    model: str,
    training_set: dict[str, Any],
    *,
    run_name: str,
    estimator_params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Run the training CLI as a local process (the laptop twin of the training pod).

    Exit 2 is the CLI's verdict on the data (``GateFailed``). A process killed by a signal (the OOM
    killer's SIGKILL, exit 137), one that outlives ``training.timeout_minutes`` (its whole process group
    is killed) or one that dies otherwise raises :class:`InfrastructureError`, which Airflow retries; its
    MLflow run, found by the ``mlops.attempt`` tag set here, is ended FAILED or KILLED.
    """
    attempt = uuid.uuid4().hex
    tags = {**(tags or {}), ATTEMPT_TAG: attempt}
    # Each attempt scores its own holdout file: a re-run never rewrites one a registered version points at.
    holdout = str(training_set["holdout_uri"])
    training_set = {**training_set, "holdout_uri": f"{holdout.removesuffix('.parquet')}-{attempt[:12]}.parquet"}
    args = train_arguments(model, training_set, run_name=run_name, estimator_params=estimator_params, tags=tags)
    settings = get_settings()
    if timeout_s is None:
        timeout_s = get_config(model).config.training.timeout_minutes * 60
    out_dir = settings.state_dir / "work" / model
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{run_key(run_name)}.json"
    output.unlink(missing_ok=True)  # a result left by an earlier attempt must not pass for this one's
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "include"), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops.train", *args, "--output", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=settings.state_dir,
        start_new_session=True,  # its own process group: a timeout kills the trainer and its workers
    )
    try:
        _, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        _, stderr = proc.communicate()
        _log_tail(stderr)
        ended = end_attempt_runs(model, attempt, "KILLED")
        raise InfrastructureError(
            f"training of {model} timed out after {timeout_s / 60:g} min (training.timeout_minutes): process "
            f"group killed, MLflow run(s) {ended or 'none yet'} ended KILLED; retrying"
        ) from None
    _log_tail(stderr)
    code = proc.returncode
    if code == 0 and output.exists():
        result: dict[str, Any] = json.loads(output.read_text())
        return result
    if code == TRAIN_VERDICT_EXIT:
        reason = (stderr.strip().splitlines() or ["no output"])[-1]
        end_attempt_runs(model, attempt, "FAILED")
        raise GateFailed(f"training of {model} failed (exit {code}): {reason}")
    ended = end_attempt_runs(model, attempt, "FAILED")
    raise InfrastructureError(
        f"training of {model} {_death(code)}: infrastructure failure, not a verdict; MLflow run(s) "
        f"{ended or 'none yet'} ended FAILED; retrying"
    )


ATTEMPT_TAG = "mlops.attempt"
TRAIN_VERDICT_EXIT = 2  # mlops.train's exit for a ValueError about the data or the config


def _death(code: int) -> str:
    """How a process ended, in words: killed by which signal (137/-9: most often the OOM killer)."""
    import signal

    number = -code if code < 0 else code - 128 if code > 128 else 0
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        hint = " (out of memory? the OOM killer sends SIGKILL)" if number == signal.SIGKILL else ""
        return f"was killed by {name} (exit {code}){hint}"
    if code == 0:
        return "exited 0 without writing its result"
    return f"crashed (exit {code})"


def _kill_group(pid: int) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pid, signal.SIGKILL)


def _log_tail(stderr: str) -> None:
    for line in stderr.splitlines()[-30:]:
        log.info("train | %s", line)


def end_attempt_runs(model: str, attempt: str, status: str) -> list[str]:
    """End the MLflow run(s) of one training attempt still RUNNING (its process died); returns their ids."""
    import mlflow

    from mlops.tracking import client, configure

    try:
        configure()
        experiment = mlflow.get_experiment_by_name(model)
        if experiment is None:
            return []
        mlflow_client = client()
        runs = mlflow_client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{ATTEMPT_TAG}` = '{attempt}' and attributes.status = 'RUNNING'",
        )
        for run in runs:
            mlflow_client.set_tag(run.info.run_id, "mlops.ended_by", f"training process ended: {status}")
            mlflow_client.set_terminated(run.info.run_id, status=status)
        return [run.info.run_id for run in runs]
    except Exception as exc:  # the registry doctor ends it later; the training's own error matters more
        log.warning("could not end the MLflow run of training attempt %s: %s", attempt, exc)
        return []


# ---------------------------------------------------------------------------------------------- gates


def _report_path(settings: Settings, model: str, run_id: str, gate: str) -> Path:
    path = settings.reports_dir / model / run_key(run_id) / f"{gate}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _log_gate(result: Any, mlflow_run_id: str) -> None:
    """Log the gate's HTML (and JSON twin) and numbers to the training run in MLflow."""
    from mlops.tracking import client

    mlflow_client = client()
    mlflow_client.log_artifact(mlflow_run_id, str(result.report_html), artifact_path="reports")
    twin = Path(result.report_html).with_suffix(".json")
    if twin.exists():
        mlflow_client.log_artifact(mlflow_run_id, str(twin), artifact_path="reports")
    for name, value in result.metrics.items():
        if isinstance(value, int | float) and not math.isnan(value):
            mlflow_client.log_metric(mlflow_run_id, f"gate_{result.gate}_{name}", float(value))
    mlflow_client.set_tag(
        mlflow_run_id,
        f"gate.{result.gate}",
        "skipped" if result.skipped else ("passed" if result.passed else "failed"),
    )


def _finish_gate(result: Any, mlflow_run_id: str) -> dict[str, Any]:
    _log_gate(result, mlflow_run_id)
    log.info("%s (report: %s)", result.summary, result.report_html)
    if not result.passed:
        raise GateFailed(f"{result.summary} (report: {result.report_html})")
    out: dict[str, Any] = result.to_dict()
    return out


def drift_reference(
    store: ObjectStore,
    key: str,
    cfg: ModelConfig,
    *,
    exclude_holdout_days: int | None = None,
    max_rows: int | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, int]:
    """A seeded uniform sample of a training set's rows for the drift check, and how many rows it was
    drawn from; never the whole set in memory.

    Reads the feature and timestamp columns one row group at a time and keeps only the sampled rows,
    so memory is bounded by a row group plus ``max_rows`` (default the drift gate's own sample size),
    whatever the training window. Sets up to ``max_rows`` come back whole, in file order. With
    ``exclude_holdout_days`` the holdout is left out, cut where :func:`mlops.train.time_split` cuts it.
    A feature column the set lacks is not read, so the drift gate names it.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops.gates import DRIFT_SAMPLE_ROWS
    from mlops.train import holdout_cutoff

    limit = DRIFT_SAMPLE_ROWS if max_rows is None else max_rows
    local = store.local_path(key)
    parquet = pq.ParquetFile(local if local is not None else io.BytesIO(store.get(key)))
    present = set(parquet.schema_arrow.names)
    ts = cfg.timestamp_column
    columns = [c for c in dict.fromkeys([*cfg.feature_columns, ts]) if c in present]
    rows = parquet.metadata.num_rows
    eligible: np.ndarray | None = None  # None: every row
    if exclude_holdout_days is not None:
        if ts not in present:
            raise ValueError(f"training set {key} has no timestamp column {ts!r}: cannot leave out its holdout")
        stamps = parquet.read(columns=[ts]).column(0).to_pandas()
        eligible = np.flatnonzero((stamps < holdout_cutoff(stamps, exclude_holdout_days)).to_numpy())
        rows = len(eligible)
    if rows <= limit:
        chosen = np.arange(rows) if eligible is None else eligible
    else:
        rng = np.random.default_rng(seed)
        picks = rng.choice(rows, size=limit, replace=False)
        chosen = np.sort(picks if eligible is None else eligible[picks])
    pieces = []
    start = 0
    for group in range(parquet.num_row_groups):
        end = start + parquet.metadata.row_group(group).num_rows
        lo, hi = np.searchsorted(chosen, [start, end])
        if hi > lo:
            pieces.append(parquet.read_row_group(group, columns=columns).take(pa.array(chosen[lo:hi] - start)))
        start = end
    table = pa.concat_tables(pieces) if pieces else parquet.schema_arrow.empty_table().select(columns)
    return table.to_pandas(), rows


def _holdout(trained: dict[str, Any]) -> pd.DataFrame:
    parent, _, name = trained["holdout_uri"].rpartition("/")
    return _read_parquet(open_store(parent), name)


def gate_drift(model: str, trained: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Evidently drift between the training rows and the newest validated batch."""
    from mlops.gates import drift_gate

    settings = get_settings()
    cfg = get_config(model).config
    parent, _, name = trained["training_set_uri"].rpartition("/")
    reference, rows = drift_reference(open_store(parent), name, cfg)  # the whole training window, sampled
    newest = validated_days(model, settings)[-1]
    current = read_validated(model, [newest], settings)
    report = _report_path(settings, model, run_id, "drift")
    result = drift_gate(reference, current, cfg, report, reference_rows=rows)
    return _finish_gate(result, trained["run_id"])


def gate_quality(model: str, trained: dict[str, Any], run_id: str) -> dict[str, Any]:
    from mlops.gates import quality_gate
    from mlops.train import PROBA_COLUMN

    settings = get_settings()
    cfg = get_config(model).config
    holdout = _holdout(trained)
    result = quality_gate(
        holdout,
        holdout[cfg.label.column],
        holdout[PROBA_COLUMN].to_numpy(),
        cfg,
        _report_path(settings, model, run_id, "quality"),
    )
    return _finish_gate(result, trained["run_id"])


def gate_fairness(model: str, trained: dict[str, Any], run_id: str) -> dict[str, Any]:
    from mlops.gates import fairness_gate
    from mlops.train import PROBA_COLUMN

    settings = get_settings()
    cfg = get_config(model).config
    holdout = _holdout(trained)
    result = fairness_gate(
        holdout,
        holdout[cfg.label.column],
        holdout[PROBA_COLUMN].to_numpy(),
        cfg,
        _report_path(settings, model, run_id, "fairness"),
    )
    return _finish_gate(result, trained["run_id"])


def gate_champion(model: str, trained: dict[str, Any], run_id: str, force: bool = False) -> dict[str, Any]:
    """Challenger vs the current champion on the same frozen holdout.

    The champion is loaded only through the verified loader: a trusted signature over exactly its
    files and a skops (never pickle) format, checked before anything is deserialized.
    """
    from mlops.gates import champion_gate
    from mlops.registry import CHAMPION, get_alias_version
    from mlops.scoring import load_verified
    from mlops.tracking import configure
    from mlops.train import binary_target, classification_metrics

    settings = configure()
    cfg = get_config(model).config
    metric = cfg.gates.champion.metric
    champion_version = get_alias_version(model, CHAMPION)
    champion_value = None
    if champion_version is not None:
        champion = load_verified(model, champion_version).pipeline
        holdout = _holdout(trained)
        try:
            proba = champion.predict_proba(holdout[cfg.feature_columns])[:, 1]
        except (KeyError, ValueError) as exc:
            if not force:
                raise GateFailed(
                    f"champion gate failed: champion v{champion_version} cannot score this holdout ({exc}); "
                    "the features changed: trigger with force=true to replace it"
                ) from exc
            proba = None
        if proba is not None:
            y_true = binary_target(holdout[cfg.label.column], cfg).to_numpy()
            champion_value = classification_metrics(y_true, proba)[metric]
    result = champion_gate(
        trained["metrics"][metric],
        champion_value,
        cfg,
        _report_path(settings, model, run_id, "champion"),
        champion_version=champion_version,
        force=force,
    )
    return _finish_gate(result, trained["run_id"])


# -------------------------------------------------------------------------------------------- promote


def _git_commit() -> str:
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = [
        "apache-airflow",
        "mlflow",
        "scikit-learn",
        "xgboost-cpu",
        "xgboost",
        "pandas",
        "feast",
        "great-expectations",
        "evidently",
        "fairlearn",
    ]
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def lineage_tags(
    loaded: LoadedConfig,
    trained: dict[str, Any],
    training_set: dict[str, Any],
    *,
    dag_id: str,
    run_id: str,
    training_image: str,
) -> dict[str, str]:
    cfg = loaded.config
    return {
        "lineage.git_commit": _git_commit(),
        "lineage.raw_batches": json.dumps([h[:16] for h in training_set["raw_batches"]]),
        "lineage.training_window": f"{training_set['window_start']}..{training_set['window_end']}",
        "lineage.feature_service": cfg.feature_service,
        "lineage.gx_suite": cfg.gx_suite,
        "lineage.config_hash": loaded.config_hash,
        "lineage.config_file": loaded.path.name,
        "lineage.training_image": training_image,
        "lineage.dag_id": dag_id,
        "lineage.dag_run_id": run_id,
        "lineage.training_run_id": trained["run_id"],
        "lineage.libraries": json.dumps(_library_versions(), sort_keys=True),
        "model_sha256": trained.get("model_sha256", ""),
        "holdout_uri": trained["holdout_uri"],
        "lineage.training_set_uri": training_set["uri"],
        "lineage.training_set_sha256": training_set.get("sha256", ""),
        **{f"metric.{k}": f"{v:.6f}" for k, v in trained["metrics"].items()},
    }


def register(
    model: str,
    trained: dict[str, Any],
    training_set: dict[str, Any],
    *,
    dag_id: str,
    run_id: str,
    actor: str = "airflow",
    task_id: str = "register",
) -> dict[str, Any]:
    """Register the gated model with its lineage and gate verdicts and point ``challenger`` at it."""
    from mlops.pod import pod_image
    from mlops.registry import CHALLENGER, register_version, set_alias
    from mlops.tracking import client

    settings = get_settings()
    loaded = get_config(model)
    image = "local-process" if settings.training_backend == "local" else pod_image(loaded.config.training.resources)
    tags = lineage_tags(loaded, trained, training_set, dag_id=dag_id, run_id=run_id, training_image=image)
    run_tags = client().get_run(trained["run_id"]).data.tags
    tags.update({k: v for k, v in run_tags.items() if k.startswith("gate.")})  # the doctor checks the champion's
    version = register_version(model, trained["run_id"], tags)
    set_alias(
        model,
        CHALLENGER,
        version,
        actor=actor,
        reason="passed every gate",
        dag_id=dag_id,
        dag_run_id=run_id,
        task_id=task_id,
    )
    return {"version": version, "tags": tags}


def promote(
    model: str,
    version: str,
    *,
    actor: str,
    reason: str,
    dag_id: str = "",
    run_id: str = "",
    task_id: str = "promote",
) -> dict[str, Any]:
    """Point ``champion`` at the version (recorded in the alias history; a retry is the same move)."""
    from mlops.registry import CHAMPION, AliasMoved, set_alias

    try:
        change = set_alias(
            model,
            CHAMPION,
            version,
            actor=actor,
            reason=reason,
            dag_id=dag_id,
            dag_run_id=run_id,
            task_id=task_id,
        )
    except AliasMoved as exc:
        raise GateFailed(f"promotion of {model} v{version} abandoned: {exc}") from None
    return {"model": model, "champion": change.to_version, "previous": change.from_version}


def needs_approval(cfg: ModelConfig, requested: bool | None) -> bool:
    """A run may ask for approval; it may not switch off approval that the model's config requires."""
    return cfg.promotion.require_approval or bool(requested)
