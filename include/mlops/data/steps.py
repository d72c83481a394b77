"""Data steps the DAGs call: ingest landed batches, validate them (the blocking GX gate), list validated days."""

from __future__ import annotations

import io
import json
import logging
import math
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.core.config import ModelConfig, get_config
from mlops.core.settings import Settings, get_settings
from mlops.core.storage import ObjectStore

if TYPE_CHECKING:
    import pandas as pd
from mlops.core.errors import GateFailed, NothingToDo
from mlops.core.lake import open_lake, parse_dt, read_parquet, read_parquet_columns
from mlops.core.progress import log_group

log = logging.getLogger(__name__)


def ingest(model: str, start: str | datetime, end: str | datetime) -> dict[str, Any]:
    """Copy the interval's landed files into the raw store (content-addressed, idempotent).

    Skips (``NothingToDo``) when the interval's landed content is already published and materialized:
    whichever path came first did the work and emitted the events; this one emits none.
    """
    from mlops.data import snapshots
    from mlops.data.ingest import DuplicateBatchError, find_landed, ingest_interval, interval_key, landing_store

    settings = get_settings()
    cfg = get_config(model).config
    lake = open_lake(settings)
    begin, finish = parse_dt(start), parse_dt(end)
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
    from mlops.data.ingest import pending_days

    cfg = get_config(model).config
    days = pending_days(cfg)
    if not days:
        raise NothingToDo(f"no new batch in {model}'s landing location")
    return [d.isoformat() for d in days]


def process_landed_day(model: str, day: str) -> dict[str, Any]:
    """The data DAG's three steps for one landed day: ingest, the GX gate, materialize."""
    from mlops.features.steps import materialize  # data → features: the landing flow's last step

    start = parse_dt(day)
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
    to do (a rerun after every day went through, or the daily DAG got there first). The landing DAG
    runs the same two halves as one task instance per day (``process_landed_one``) and one summary
    (``landed_summary``).
    """
    results: list[dict[str, Any]] = []
    for day in days:
        try:
            results.append(process_landed_one(model, day))
        except NothingToDo as exc:
            log.info("%s: %s", day, exc)
    return landed_summary(model, results, days)


def process_landed_one(model: str, day: str) -> dict[str, Any]:
    """One landed day: processed, or quarantined with its one line (a result, so the other days go on).

    ``NothingToDo`` (the day is already published and online) propagates: that day's task skips.
    """
    try:
        return {**process_landed_day(model, day), "quarantined": None}
    except GateFailed as exc:
        return {"interval": day, "quarantined": str(exc)}


def landed_summary(model: str, results: list[dict[str, Any]], days: list[str] | None = None) -> dict[str, Any]:
    """The landing run's outcome from its days' results: processed days, quarantine lines, ignored entries."""
    from mlops.data.ingest import landing_store, scan_landing

    results = [r for r in results if isinstance(r, dict)]  # a skipped day has no result
    processed = [r for r in results if not r.get("quarantined")]
    quarantined = [str(r["quarantined"]) for r in results if r.get("quarantined")]
    if not processed and not quarantined:
        raise NothingToDo(f"nothing left to process for {model} in {days if days is not None else 'this run'}")
    cfg = get_config(model).config
    return {
        "intervals": [p["interval"] for p in processed],
        "rows": sum(int(p["rows"]) for p in processed),
        "processed": processed,
        "quarantined": quarantined,
        "ignored": scan_landing(cfg, landing_store(cfg, get_settings())).ignored,
    }


def validate(model: str, interval: str, start: str | datetime, end: str | datetime) -> dict[str, Any]:
    """GX gate for the interval's landed files TOGETHER: pass → one published snapshot; fail → quarantine.

    All or nothing: every file of the day is read, checked and published as one snapshot (so key and
    timestamp must be unique across files), or the whole day is quarantined and the previously
    published snapshot, if any, stays what readers see. Size limits are checked from the store's sizes
    before any byte is parsed.
    """
    from mlops.data import snapshots
    from mlops.data.ingest import raw_store, read_manifest

    settings = get_settings()
    cfg = get_config(model).config
    files = read_manifest(cfg, interval, settings)
    if not files:
        raise NothingToDo(f"no ingested batch for {model} {interval}")
    lake = open_lake(settings)
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
        with log_group(f"Great Expectations gate: {model} {interval}, {len(files)} file(s)", log):
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

    from mlops.data import snapshots
    from mlops.data.validate import BatchReadError, coerce_types, read_batch, validate_batch

    model = cfg.name
    batch_id = f"{interval}-{content[:8]}"
    report = settings.reports_dir / model / "data_quality" / f"{batch_id}.html"
    prefix = snapshots.quarantine_prefix(model, interval, content)
    batches = [(raw, f.raw_key, f.name) for f in files]

    def fail(line: str, result: dict[str, Any], report_path: Path | None = None) -> GateFailed:
        if report_path is None:
            from mlops.quality.reports import write_html

            write_html(report, f"FAIL: {model} batch {batch_id}", "", verdict="FAIL", summary=line)
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
        interval_start=parse_dt(start),
        interval_end=parse_dt(end),
        gx_root=settings.state_dir / "gx",
        report_path=report,
    )
    if not outcome.success:
        raise fail(outcome.summary_line(), outcome.result, outcome.report_html)
    repeats = _repeats_of_other_days(cfg, lake, interval, day)
    if repeats:
        line = f"GX gate failed for {model} batch {batch_id}: " + "; ".join(repeats)
        raise fail(line, {"error": "; ".join(repeats)})
    absent = _classes_absent_from_first_batch(cfg, interval, day, settings)
    if absent:
        line = f"GX gate failed for {model} batch {batch_id}: {absent}"
        raise fail(line, {"error": absent})
    log.info("validated %s %s (%d file(s)): %d rows, %s", model, interval, len(files), len(day), outcome.statistics)
    return _GatedDay(day, [str(outcome.report_html)])


def _classes_absent_from_first_batch(cfg: ModelConfig, interval: str, frame: pd.DataFrame, settings: Settings) -> str:
    """On the model's first validated batch, every configured label class must occur: a class that never
    appears is most often a config that does not match the data (``positive_class: 1`` for a ``yes``/``no``
    label), which would otherwise train a model that never predicts it. Empty when fine, not the first, or
    a regression label (a number, no classes)."""
    if cfg.task == "regression" or any(day.isoformat() != interval for day in validated_days(cfg.name, settings)):
        return ""
    seen = set(frame[cfg.label.column].dropna().tolist())
    absent = [value for value in cfg.label.allowed_values if value not in seen]
    if not absent:
        return ""
    found = ", ".join(repr(v) for v in sorted(seen, key=str)) or "none"
    return (
        f"label '{cfg.label.column}' never takes the configured class(es) {absent} in the model's first batch "
        f"(values found: {found}); check label.positive_class and label.classes against the data"
    )


def _repeats_of_other_days(cfg: ModelConfig, lake: ObjectStore, interval: str, frame: pd.DataFrame) -> list[str]:
    """Rows whose (entity, timestamp) is already in another published day: they would count twice in a
    training window. Only days whose freshness windows can overlap this one's are read (two columns)."""
    import pandas as pd

    from mlops.data import snapshots

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
        theirs = read_parquet_columns(lake, stored, key)
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
    from mlops.data import snapshots

    return snapshots.published_days(open_lake(settings or get_settings()), model)


def read_validated(model: str, days: list[date], settings: Settings | None = None) -> pd.DataFrame:
    """The published snapshots of ``days``: one file per day, nothing else in a partition is read."""
    import pandas as pd

    from mlops.data import snapshots

    settings = settings or get_settings()
    lake = open_lake(settings)
    keys = [snapshots.validated_key(model, day) for day in days]
    frames = [read_parquet(lake, key) for key in keys if lake.exists(key)]
    if not frames:
        raise NothingToDo(f"no validated data for {model} on {[d.isoformat() for d in days]}")
    return pd.concat(frames, ignore_index=True)
