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
    """Copy the interval's landed files into the raw store (content-addressed, idempotent).

    Skips (``NothingToDo``) when the interval's landed content is already published and materialized:
    whichever path came first did the work and emitted the events; this one emits none.
    """
    from mlops import snapshots
    from mlops.ingest import DuplicateBatchError, find_landed, ingest_interval, interval_key, landing_store

    settings = get_settings()
    cfg = get_config(model).config
    lake = _lake(settings)
    begin, finish = _parse_dt(start), _parse_dt(end)
    interval = interval_key(begin, finish)
    with snapshots.day_lock(settings, model, interval):
        try:
            result = ingest_interval(cfg, begin, finish, settings)
        except DuplicateBatchError as exc:
            landing = landing_store(cfg, settings)
            content = snapshots.content_id([landing.sha256(k) for k in find_landed(cfg, landing, begin, finish)])
            prefix = snapshots.quarantine_prefix(model, interval, content)
            _quarantine(lake, prefix, [], {"error": str(exc)}, [], str(exc))
            raise GateFailed(str(exc)) from exc
    if not result.files:
        raise NothingToDo(f"no batch landed for {model} in [{start}, {end})")
    hashes = [f.sha256 for f in result.files]
    content = snapshots.content_id(hashes)
    record = snapshots.current(lake, model, interval)
    if record is not None and record.snapshot_id == content and record.materialized_at:
        raise NothingToDo(
            f"{model} {interval}: the landed content is already published (snapshot {content}) and "
            "materialized: nothing to do, no event"
        )
    reason = snapshots.quarantined_reason(lake, model, interval, content)
    if reason is not None:
        raise GateFailed(f"{model} {interval} is quarantined for this content (land a corrected file): {reason}")
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
        "hashes": hashes,
        "snapshot": content,
        "new_objects": result.new_objects,
    }


def pending_landed_days(model: str) -> list[str]:
    """Days whose landed content is neither published nor quarantined yet, for the landing watcher."""
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
    return {
        "interval": ingested["interval"],
        "rows": validated["rows"],
        "snapshot": validated["snapshot"],
        "materialized": materialized["rows"],
    }


def process_landed(model: str, days: list[str]) -> dict[str, Any]:
    """Every pending day in order; a bad day is quarantined and the others still go through.

    Returns the processed days, one line per quarantined day and one per landing entry that is not a
    batch (a folder, a hidden file, a link, ...); raises ``NothingToDo`` when no day had anything left
    to do (a rerun after every day went through, or the daily DAG got there first).
    """
    from mlops.ingest import landing_store, scan_landing

    cfg = get_config(model).config
    ignored = scan_landing(cfg, landing_store(cfg, get_settings())).ignored
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
        "ignored": ignored,
    }


# ------------------------------------------------------------------------------------------- validate


def validate(model: str, interval: str, start: str | datetime, end: str | datetime) -> dict[str, Any]:
    """GX gate for the interval's landed files TOGETHER: pass → one published snapshot; fail → quarantine.

    All or nothing: every file of the day is read, checked and published as one snapshot (so key and
    timestamp must be unique across files), or the whole day is quarantined and the previously
    published snapshot, if any, stays what readers see. Size limits are checked from the store's sizes
    before any byte is parsed.
    """
    from mlops import snapshots
    from mlops.ingest import raw_store, read_manifest

    settings = get_settings()
    cfg = get_config(model).config
    files = read_manifest(cfg, interval, settings)
    if not files:
        raise NothingToDo(f"no ingested batch for {model} {interval}")
    lake = _lake(settings)
    hashes = [f.sha256 for f in files]
    content = snapshots.content_id(hashes)
    key = snapshots.validated_key(model, interval)
    with snapshots.day_lock(settings, model, interval):
        record = snapshots.current(lake, model, interval)
        if record is not None and record.snapshot_id == content and record.materialized_at:
            raise NothingToDo(f"{model} {interval}: snapshot {content} is already published and online: no event")
        if record is not None and record.snapshot_id == content:
            log.info("%s %s: snapshot %s is already published", model, interval, content)
            return {
                "interval": interval,
                "rows": record.rows,
                "validated": [key],
                "reports": [],
                "snapshot": content,
                "published": False,
            }
        gated = _gate_day(cfg, interval, content, files, raw_store(cfg, settings), lake, settings, start, end)
        buffer = io.BytesIO()
        gated.frame[cfg.all_columns].to_parquet(buffer, index=False)
        published = snapshots.publish(
            lake,
            model,
            interval,
            buffer.getvalue(),
            hashes,
            files=[{"name": f.name, "sha256": f.sha256, "size": f.size} for f in files],
            rows=len(gated.frame),
        )
    log.info("published %s %s snapshot %s: %d rows, %d file(s)", model, interval, content, published.rows, len(files))
    return {
        "interval": interval,
        "rows": published.rows,
        "validated": [key],
        "reports": gated.reports,
        "snapshot": content,
        "replaced": published.replaced,
        "published": True,
    }


class _GatedDay:
    def __init__(self, frame: pd.DataFrame, reports: list[str]) -> None:
        self.frame = frame
        self.reports = reports


def _gate_day(
    cfg: ModelConfig,
    interval: str,
    content: str,
    files: list[Any],
    raw: ObjectStore,
    lake: ObjectStore,
    settings: Settings,
    start: str | datetime,
    end: str | datetime,
) -> _GatedDay:
    """Size limits, reading, typing and the GX suite over the whole day; quarantine and raise on failure."""
    import pandas as pd

    from mlops import snapshots
    from mlops.validate import BatchReadError, coerce_types, read_batch, validate_batch

    model = cfg.name
    batch_id = f"{interval}-{content[:8]}"
    report = settings.reports_dir / model / "data_quality" / f"{batch_id}.html"
    prefix = snapshots.quarantine_prefix(model, interval, content)
    batches = [(raw, f.raw_key, f.name) for f in files]

    def fail(line: str, result: dict[str, Any], report_path: Path | None = None) -> GateFailed:
        if report_path is None:
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(f"<html><body><h1>FAIL</h1><p>{_escape(line)}</p></body></html>")
            report_path = report
        _quarantine(lake, prefix, batches, result, [report_path], line)
        return GateFailed(f"{line} (quarantined under {settings.lake_uri}/{prefix}/)")

    dq = cfg.data_quality
    oversize = [
        f"{f.name} is {f.size / 2**20:.3g} MiB, over data_quality.max_file_mb {dq.max_file_mb:g}"
        for f in files
        if f.size > dq.max_file_mb * 2**20
    ]
    total = sum(f.size for f in files)
    if not oversize and total > dq.max_day_mb * 2**20:
        oversize = [
            f"the day's {len(files)} file(s) total {total / 2**20:.3g} MiB, over data_quality.max_day_mb "
            f"{dq.max_day_mb:g}"
        ]
    if oversize:
        line = f"GX gate failed for {model} batch {batch_id}: too large, not read: " + "; ".join(oversize)
        raise fail(line, {"error": "size limit", "sizes": {f.name: f.size for f in files}})

    frames: list[pd.DataFrame] = []
    problems: list[str] = []
    for f in files:
        try:
            frame = coerce_types(read_batch(raw.get(f.raw_key), f.fmt, name=f.name, cfg=cfg), cfg)
        except BatchReadError as exc:
            problems.append(f"unreadable: {exc}")
            continue
        missing = [c for c in cfg.all_columns if c not in frame.columns]
        if missing and len(files) > 1:  # one file alone: the GX schema rule names them
            problems.append(f"{f.name}: missing columns {', '.join(missing)}")
        frames.append(frame)
    if problems:
        line = f"GX gate failed for {model} batch {batch_id}: " + "; ".join(problems)
        raise fail(line, {"error": "; ".join(problems)})
    day = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    outcome = validate_batch(
        day,
        cfg,
        batch_id=batch_id,
        interval_start=_parse_dt(start),
        interval_end=_parse_dt(end),
        gx_root=settings.state_dir / "gx",
        report_path=report,
    )
    if not outcome.success:
        raise fail(outcome.summary_line(), outcome.result, outcome.report_html)
    repeats = _repeats_of_other_days(cfg, lake, interval, day)
    if repeats:
        line = f"GX gate failed for {model} batch {batch_id}: " + "; ".join(repeats)
        raise fail(line, {"error": "; ".join(repeats)})
    log.info("validated %s %s (%d file(s)): %d rows, %s", model, interval, len(files), len(day), outcome.statistics)
    return _GatedDay(day, [str(outcome.report_html)])


def _repeats_of_other_days(cfg: ModelConfig, lake: ObjectStore, interval: str, frame: pd.DataFrame) -> list[str]:
    """Rows whose (entity, timestamp) is already in another published day: they would count twice in a
    training window. Only days whose freshness windows can overlap this one's are read (two columns)."""
    import pandas as pd

    from mlops import snapshots

    try:
        day = date.fromisoformat(interval)
    except ValueError:
        return []
    key = [cfg.entity.join_key, cfg.timestamp_column]
    reach = math.ceil(cfg.data_quality.freshness_max_age_hours / 24) + 1
    mine = frame[key].assign(**{cfg.timestamp_column: pd.to_datetime(frame[cfg.timestamp_column], utc=True)})
    mine[cfg.timestamp_column] = mine[cfg.timestamp_column].dt.as_unit("us")
    found = []
    for offset in [*range(-reach, 0), *range(1, reach + 1)]:
        other = day + timedelta(days=offset)
        stored = snapshots.validated_key(cfg.name, other)
        if not lake.exists(stored):
            continue
        theirs = _read_parquet_columns(lake, stored, key)
        theirs[cfg.timestamp_column] = pd.to_datetime(theirs[cfg.timestamp_column], utc=True).dt.as_unit("us")
        try:
            both = mine.merge(theirs.drop_duplicates(), on=key, how="inner")
        except (TypeError, ValueError):  # key types differ: nothing can be equal
            continue
        if len(both):
            sample = ", ".join(f"({k}, {t.isoformat()})" for k, t in both.head(3).itertuples(index=False))
            found.append(
                f"{cfg.entity.join_key}+{cfg.timestamp_column}: {len(both)} rows repeat the published day "
                f"{other} (e.g. {sample})"
            )
    return found


def _read_parquet_columns(store: ObjectStore, key: str, columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    local = store.local_path(key)
    return pd.read_parquet(local if local is not None else io.BytesIO(store.get(key)), columns=columns)


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def _quarantine(
    lake: ObjectStore,
    prefix: str,
    batches: list[tuple[ObjectStore, str, str]],
    result: dict[str, Any],
    reports: list[Path],
    reason: str,
) -> None:
    """Keep the day's batches (copied in chunks), its GX result, its report and the one-line reason."""
    for store, key, name in batches:
        store.copy_to(key, lake, f"{prefix}/{name}")
    for report in reports:
        if report.exists():
            lake.put(f"{prefix}/report.html", report.read_bytes())
    lake.put(f"{prefix}/result.json", json.dumps(result, indent=2, default=str).encode())
    lake.put(f"{prefix}/reason.txt", (reason + "\n").encode())  # last: its presence means "settled"
    log.warning("quarantined %s under %s: %s", [b[2] for b in batches], prefix, reason)


def validated_days(model: str, settings: Settings | None = None) -> list[date]:
    """Days with a published snapshot (``validated/<model>/date=<day>/data.parquet``)."""
    from mlops import snapshots

    return snapshots.published_days(_lake(settings or get_settings()), model)


def read_validated(model: str, days: list[date], settings: Settings | None = None) -> pd.DataFrame:
    """The published snapshots of ``days``: one file per day, nothing else in a partition is read."""
    import pandas as pd

    from mlops import snapshots

    settings = settings or get_settings()
    lake = _lake(settings)
    keys = [snapshots.validated_key(model, day) for day in days]
    frames = [_read_parquet(lake, key) for key in keys if lake.exists(key)]
    if not frames:
        raise NothingToDo(f"no validated data for {model} on {[d.isoformat() for d in days]}")
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------- features


def materialize(model: str, start: str | datetime, end: str | datetime) -> dict[str, Any]:
    """Apply the model's Feast objects (idempotent) and materialize exactly [start, end).

    A day whose published snapshot is already online skips (``NothingToDo``, so no Asset event): when the
    landing watcher and the daily DAG both reached this step for one day, only the first one emits.
    """
    from mlops import snapshots
    from mlops.ingest import interval_days

    begin, finish = _parse_dt(start), _parse_dt(end)
    days = interval_days(begin, finish)
    if len(days) != 1:
        return _materialize(model, begin, finish)
    settings = get_settings()
    lake = _lake(settings)
    with snapshots.day_lock(settings, model, days[0]):
        record = snapshots.current(lake, model, days[0])
        if record is not None and record.materialized_at:
            raise NothingToDo(
                f"{model} {days[0]}: snapshot {record.snapshot_id} is already online since "
                f"{record.materialized_at}: nothing to do, no event"
            )
        return _materialize(model, begin, finish)


def _materialize(model: str, start: datetime, end: datetime) -> dict[str, Any]:
    from mlops import features, snapshots
    from mlops.ingest import interval_days

    cfg = get_config(model).config
    applied = features.apply(cfg)
    # By batch date: the interval's batch goes online whole, with its rows stamped up to the GX
    # freshness limit before the interval.
    rows = features.materialize_interval(cfg, start, end)
    lake = _lake(get_settings())
    for day in interval_days(start, end):
        snapshots.mark_materialized(lake, model, day)
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
    from mlops import features, snapshots

    settings = get_settings()
    cfg = get_config(model).config
    first, last = training_window(model, window_end, window_days)
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    labels = features.labels_for_window(cfg, start, end)
    if labels.empty:
        raise NothingToDo(f"no labelled rows for {model} between {first} and {last}")
    repeated = int(labels.duplicated([cfg.entity.join_key, cfg.timestamp_column]).sum())
    if repeated:
        raise GateFailed(
            f"training window {first}..{last} of {model} has {repeated} repeated (entity, timestamp) rows "
            "across days: find the days with `validated_days` and land corrected files"
        )
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
        "raw_batches": snapshots.raw_batches(lake, model, window_days_list),
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
