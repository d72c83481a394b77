"""Ingest: copy new batch files from the landing location into an immutable, content-addressed raw store.

Layout of the raw store (under ``<lake>/raw/<model>/``):

- ``objects/<sha256[:2]>/<sha256>.<ext>``: the file's bytes, written once, never overwritten or deleted.
- ``index/<sha256>.json``: which interval first brought these bytes (detects a batch landed twice).
- ``intervals/<YYYY-MM-DD>.json``: the manifest of one data interval: every batch file landed for it
  now (what validate reads, as one snapshot).

Re-running an interval rewrites an identical manifest and writes no object: idempotent.

Only files at the TOP of the landing location whose names match :data:`BATCH_NAME` (with a format the
model accepts) are batches. Everything else (folders and what is in them, hidden files, links, special
or unreadable files, other names or extensions) is reported by :func:`scan_landing` with a reason and
never read; it never blocks the other days. Sizes come from the store (stat / S3 HEAD) and bytes are
hashed and copied in chunks, so nothing here holds a whole file in memory.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta

from mlops.core.config import ModelConfig, check_landing_path
from mlops.core.settings import Settings, get_settings
from mlops.core.storage import Entry, ObjectStore, open_store

log = logging.getLogger(__name__)

BATCH_NAME = re.compile(r"^(?P<day>\d{4}-\d{2}-\d{2})[^/]*\.(?P<ext>csv|parquet)$")


class DuplicateBatchError(RuntimeError):
    """The same bytes were already ingested for another interval."""


@dataclass(frozen=True)
class LandedFile:
    """A batch file at the top of the landing location, with its size from the store."""

    key: str
    day: date
    size: int


@dataclass
class LandingScan:
    """What is in the landing location: batch files by day, and every other name with the reason."""

    batches: dict[date, list[LandedFile]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def _ignore(scan: LandingScan, name: str, reason: str) -> None:
    line = f"ignored landing entry {name!r}: {reason}"
    log.warning(line)
    scan.ignored.append(line)


def scan_landing(cfg: ModelConfig, landing: ObjectStore) -> LandingScan:
    """Classify every top-level name of the landing location; only matching regular files are batches."""
    scan = LandingScan()
    for entry in landing.entries():
        name = entry.name
        if name == cfg.source.ready_flag:
            continue  # the producer's ready flag: expected, not a batch
        reason = _rejection(cfg, entry)
        if reason is not None:
            _ignore(scan, name, reason)
            continue
        day = date.fromisoformat(name[:10])
        scan.batches.setdefault(day, []).append(LandedFile(key=name, day=day, size=entry.size))
    for files in scan.batches.values():
        files.sort(key=lambda f: f.key)
    return scan


def _rejection(cfg: ModelConfig, entry: Entry) -> str | None:
    """Why a top-level landing entry is not a batch, or None when it is one."""
    reason = _kind_rejection(entry) or _name_rejection(cfg, entry.name)
    if reason is None and entry.kind == "unreadable":
        return "unreadable (permission denied)"
    return reason


def _kind_rejection(entry: Entry) -> str | None:
    """Folders, hidden files, links and special files are never batches."""
    if entry.kind == "folder":
        return f"a folder (batches are files at the top of the landing location; nothing inside {entry.name}/ is read)"
    if entry.name.startswith("."):
        return "a hidden file"
    if entry.kind == "symlink":
        return "a symbolic link (links are not followed)"
    if entry.kind == "special":
        return "not a regular file"
    return None


def _name_rejection(cfg: ModelConfig, name: str) -> str | None:
    """A batch is named ``YYYY-MM-DD*.<format>`` with a real date and an accepted format."""
    accepted = "|".join(cfg.source.formats)
    match = BATCH_NAME.match(name)
    if match is None:
        return f"name does not match YYYY-MM-DD*.{accepted}"
    if match["ext"] not in cfg.source.formats:
        return f"format {match['ext']} is not accepted for {cfg.name} (source.formats: {accepted})"
    try:
        date.fromisoformat(match["day"])
    except ValueError:
        return f"{match['day']} is not a date"
    return None


@dataclass(frozen=True)
class RawFile:
    name: str
    sha256: str
    fmt: str
    raw_key: str
    size: int


@dataclass
class IngestResult:
    model: str
    interval: str
    manifest_key: str
    files: list[RawFile] = field(default_factory=list)
    new_objects: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def landing_store(cfg: ModelConfig, settings: Settings) -> ObjectStore:
    """The model's landing folder: always below the environment's landing root, never elsewhere."""
    return open_store(settings.landing_uri).child(check_landing_path(cfg.source.landing))


def raw_store(cfg: ModelConfig, settings: Settings) -> ObjectStore:
    return open_store(settings.lake_uri).child(f"raw/{cfg.name}")


def interval_days(start: datetime, end: datetime) -> list[date]:
    """Calendar days covered by the half-open interval [start, end)."""
    days = []
    current = start.date()
    while datetime.combine(current, datetime.min.time(), tzinfo=start.tzinfo) < end:
        days.append(current)
        current += timedelta(days=1)
    return days


def interval_key(start: datetime, end: datetime) -> str:
    days = interval_days(start, end)
    if not days:
        raise ValueError(f"empty data interval [{start}, {end})")
    return days[0].isoformat() if len(days) == 1 else f"{days[0].isoformat()}_{days[-1].isoformat()}"


def find_landed(cfg: ModelConfig, landing: ObjectStore, start: datetime, end: datetime) -> list[str]:
    """Landing keys of the batches whose file name dates fall in the interval, in a stable order."""
    return [f.key for f in landed_files(cfg, landing, start, end)]


def landed_files(cfg: ModelConfig, landing: ObjectStore, start: datetime, end: datetime) -> list[LandedFile]:
    scan = scan_landing(cfg, landing)
    days = interval_days(start, end)
    return sorted((f for day in days for f in scan.batches.get(day, [])), key=lambda f: f.key)


def pending_days(cfg: ModelConfig, settings: Settings | None = None) -> list[date]:
    """Days whose landed content is not settled yet (neither published nor quarantined), oldest first.

    A day's content is the set of its landed batch hashes: a corrected file landed for a published day
    is new content, so the day is pending again; the same bytes landed again are not.
    """
    from mlops.data import snapshots

    settings = settings or get_settings()
    landing = landing_store(cfg, settings)
    lake = open_store(settings.lake_uri)
    days = []
    for day, files in sorted(scan_landing(cfg, landing).batches.items()):
        content = snapshots.content_id([landing.sha256(f.key) for f in files])
        record = snapshots.current(lake, cfg.name, day)
        if record is not None and record.snapshot_id == content and record.materialized_at:
            continue
        if snapshots.quarantined_reason(lake, cfg.name, day, content) is not None:
            continue
        days.append(day)
    return days


def ingest_interval(cfg: ModelConfig, start: datetime, end: datetime, settings: Settings | None = None) -> IngestResult:
    """Copy the interval's landed files into the raw store; raise on a batch already seen elsewhere.

    The manifest lists every batch landed for the interval now: that is the content validate publishes.
    """
    settings = settings or get_settings()
    landing = landing_store(cfg, settings)
    raw = raw_store(cfg, settings)
    interval = interval_key(start, end)
    result = IngestResult(model=cfg.name, interval=interval, manifest_key=f"intervals/{interval}.json")
    duplicates: list[str] = []
    for landed in landed_files(cfg, landing, start, end):
        key = landed.key
        sha = landing.sha256(key)
        fmt = key.rsplit(".", 1)[-1]
        name = key.rsplit("/", 1)[-1]
        index_key = f"index/{sha}.json"
        if landed.size and raw.exists(index_key):  # 0 bytes: no data to double, the gate names it empty
            first = json.loads(raw.get(index_key))
            if first["interval"] != interval:
                duplicates.append(
                    f"{name} has the same content (sha256 {sha[:12]}) as {first['name']} ingested for "
                    f"interval {first['interval']}"
                )
                continue
        raw_key = f"objects/{sha[:2]}/{sha}.{fmt}"
        if not raw.exists(raw_key):
            landing.copy_to(key, raw, raw_key)
            result.new_objects += 1
        raw.put_if_absent(index_key, json.dumps({"interval": interval, "name": name}).encode())
        result.files.append(RawFile(name=name, sha256=sha, fmt=fmt, raw_key=raw_key, size=landed.size))
        log.info("ingested %s (%d bytes, sha256 %s) for %s", name, landed.size, sha[:12], interval)
    if duplicates:
        raise DuplicateBatchError(
            f"duplicate batch rejected for {cfg.name} {interval}: "
            + "; ".join(duplicates)
            + " (raw data kept; nothing re-ingested)"
        )
    if result.files:
        manifest = {"model": cfg.name, "interval": interval, "files": [asdict(f) for f in result.files]}
        raw.put(result.manifest_key, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return result


def read_manifest(cfg: ModelConfig, interval: str, settings: Settings | None = None) -> list[RawFile]:
    raw = raw_store(cfg, settings or get_settings())
    key = f"intervals/{interval}.json"
    if not raw.exists(key):
        return []
    return [RawFile(**f) for f in json.loads(raw.get(key))["files"]]
