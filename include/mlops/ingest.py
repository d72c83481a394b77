"""Ingest: copy new batch files from the landing location into an immutable, content-addressed raw store.

Layout of the raw store (under ``<lake>/raw/<model>/``):

- ``objects/<sha256[:2]>/<sha256>.<ext>``: the file's bytes, written once, never overwritten or deleted.
- ``index/<sha256>.json``: which interval first brought these bytes (detects a batch landed twice).
- ``intervals/<YYYY-MM-DD>.json``: the manifest of one data interval (what validate reads).

Re-running an interval rewrites an identical manifest and writes no object: idempotent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta

from mlops.config import ModelConfig, check_landing_path
from mlops.settings import Settings, get_settings
from mlops.storage import ObjectStore, open_store

log = logging.getLogger(__name__)

BATCH_NAME = re.compile(r"^(?P<day>\d{4}-\d{2}-\d{2})[^/]*\.(?P<ext>csv|parquet)$")


class DuplicateBatchError(RuntimeError):
    """The same bytes were already ingested for another interval."""


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
    """Landing keys whose file name dates fall in the interval, in a stable order."""
    wanted = {d.isoformat() for d in interval_days(start, end)}
    keys = []
    for key in landing.list():
        match = BATCH_NAME.match(key.rsplit("/", 1)[-1])
        if match and match["day"] in wanted and match["ext"] in cfg.source.formats:
            keys.append(key)
    return sorted(keys)


def pending_days(cfg: ModelConfig, settings: Settings | None = None) -> list[date]:
    """Days with a landed batch whose content is not in the raw store yet, oldest first.

    A batch that was ingested and then quarantined is not pending again; a corrected file landed for
    the same day has new content, so it is.
    """
    settings = settings or get_settings()
    landing = landing_store(cfg, settings)
    raw = raw_store(cfg, settings)
    days: set[date] = set()
    for key in landing.list():
        match = BATCH_NAME.match(key.rsplit("/", 1)[-1])
        if not match or match["ext"] not in cfg.source.formats:
            continue
        try:
            day = date.fromisoformat(match["day"])
        except ValueError:
            log.warning("ignoring landed file %s: %s is not a date", key, match["day"])
            continue
        if day in days:
            continue
        sha = hashlib.sha256(landing.get(key)).hexdigest()
        if not raw.exists(f"index/{sha}.json"):
            days.add(day)
    return sorted(days)


def ingest_interval(cfg: ModelConfig, start: datetime, end: datetime, settings: Settings | None = None) -> IngestResult:
    """Copy the interval's landed files into the raw store; raise on a batch already seen elsewhere."""
    settings = settings or get_settings()
    landing = landing_store(cfg, settings)
    raw = raw_store(cfg, settings)
    interval = interval_key(start, end)
    result = IngestResult(model=cfg.name, interval=interval, manifest_key=f"intervals/{interval}.json")
    duplicates: list[str] = []
    for key in find_landed(cfg, landing, start, end):
        data = landing.get(key)
        sha = hashlib.sha256(data).hexdigest()
        fmt = key.rsplit(".", 1)[-1]
        name = key.rsplit("/", 1)[-1]
        index_key = f"index/{sha}.json"
        if raw.exists(index_key):
            first = json.loads(raw.get(index_key))
            if first["interval"] != interval:
                duplicates.append(
                    f"{name} has the same content (sha256 {sha[:12]}) as {first['name']} ingested for "
                    f"interval {first['interval']}"
                )
                continue
        raw_key = f"objects/{sha[:2]}/{sha}.{fmt}"
        if raw.put_if_absent(raw_key, data):
            result.new_objects += 1
        raw.put_if_absent(index_key, json.dumps({"interval": interval, "name": name}).encode())
        result.files.append(RawFile(name=name, sha256=sha, fmt=fmt, raw_key=raw_key, size=len(data)))
        log.info("ingested %s (%d bytes, sha256 %s) for %s", name, len(data), sha[:12], interval)
    if result.files:
        manifest = {"model": cfg.name, "interval": interval, "files": [asdict(f) for f in result.files]}
        raw.put(result.manifest_key, json.dumps(manifest, indent=2, sort_keys=True).encode())
    if duplicates:
        raise DuplicateBatchError(
            f"duplicate batch rejected for {cfg.name} {interval}: "
            + "; ".join(duplicates)
            + " (raw data kept; nothing re-ingested)"
        )
    return result


def read_manifest(cfg: ModelConfig, interval: str, settings: Settings | None = None) -> list[RawFile]:
    raw = raw_store(cfg, settings or get_settings())
    key = f"intervals/{interval}.json"
    if not raw.exists(key):
        return []
    return [RawFile(**f) for f in json.loads(raw.get(key))["files"]]


def raw_hashes_for_days(cfg: ModelConfig, days: list[date], settings: Settings | None = None) -> list[str]:
    """Content hashes of every raw batch of the given days (lineage of a training window)."""
    hashes: list[str] = []
    for day in days:
        hashes.extend(f.sha256 for f in read_manifest(cfg, day.isoformat(), settings))
    return hashes
