"""One validated snapshot per model and day, published all-or-nothing.

Layout in the lake (what readers see first):

- ``validated/<model>/date=<day>/data.parquet``: the day's published snapshot, the ONLY file readers
  read (Feast's offline store globs ``date=*/data.parquet``). Replaced in one atomic write (local: staged
  outside every partition, fsynced, renamed; S3: one PUT), so a reader sees the old day or the new day,
  never half of one, never two versions, never a temp file.
- ``snapshots/<model>/date=<day>/<id>.parquet`` and ``<id>.json``: every snapshot ever published for the
  day, written once before it is published, so a replaced snapshot stays as history outside the
  readers' globs.
- ``snapshots/<model>/date=<day>/current.json``: the record of the published snapshot (id, the raw
  batches' sha256, rows, time, the id it replaced, when it was materialized).
- ``quarantine/<model>/<day>/<id>/``: a day whose content failed, with its one-line ``reason.txt``.

A snapshot's id is a hash of the day's raw batch hashes, so the same landed content always has the
same id: a second path (the daily DAG after the landing watcher, or a rerun) sees it is published and
does nothing. Two runs for one model and day are serialised by :func:`day_lock`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from mlops.core.locks import file_lock
from mlops.core.settings import Settings
from mlops.core.storage import ObjectStore

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "data.parquet"
"""The one file name readers read in a day's partition."""


def validated_key(model: str, day: str | date) -> str:
    """Lake key of a day's published snapshot."""
    return f"validated/{model}/date={_day(day)}/{SNAPSHOT_FILE}"


def _day(day: str | date) -> str:
    return day.isoformat() if isinstance(day, date) else day


def _folder(model: str, day: str | date) -> str:
    return f"snapshots/{model}/date={_day(day)}"


def content_id(raw_batches: list[str]) -> str:
    """Id of a day's content: the same set of raw batches always gives the same id."""
    return hashlib.sha256("\n".join(sorted(raw_batches)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SnapshotRecord:
    """What a published day is made of: enough to name its lineage and to skip a second path."""

    model: str
    day: str
    snapshot_id: str
    raw_batches: list[str]
    files: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    published_at: str = ""
    replaced: str | None = None
    materialized_at: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()


def current(lake: ObjectStore, model: str, day: str | date) -> SnapshotRecord | None:
    """The record of the day's published snapshot, or None."""
    key = f"{_folder(model, day)}/current.json"
    if not lake.exists(key):
        return None
    return SnapshotRecord(**json.loads(lake.get(key)))


def history(lake: ObjectStore, model: str, day: str | date) -> list[SnapshotRecord]:
    """Every snapshot ever published for the day, oldest first."""
    records = [
        SnapshotRecord(**json.loads(lake.get(key)))
        for key in lake.list(f"{_folder(model, day)}/")
        if key.endswith(".json") and not key.endswith("/current.json")
    ]
    return sorted(records, key=lambda r: r.published_at)


def publish(
    lake: ObjectStore, model: str, day: str | date, data: bytes, raw_batches: list[str], **details: Any
) -> SnapshotRecord:
    """Publish ``data`` (parquet bytes) as the day's one snapshot, replacing the previous one.

    Order matters for a crash at any step: the snapshot is first kept as history, then published by one
    atomic write, then recorded; a rerun finds the record missing or older and publishes again (same id).
    """
    previous = current(lake, model, day)
    snapshot_id = content_id(raw_batches)
    record = SnapshotRecord(
        model=model,
        day=_day(day),
        snapshot_id=snapshot_id,
        raw_batches=list(raw_batches),
        published_at=datetime.now(UTC).isoformat(),
        replaced=previous.snapshot_id if previous and previous.snapshot_id != snapshot_id else None,
        **details,
    )
    folder = _folder(model, day)
    lake.put_if_absent(f"{folder}/{snapshot_id}.parquet", data)
    lake.put(f"{folder}/{snapshot_id}.json", record.to_json())
    lake.put(validated_key(model, day), data)
    lake.put(f"{folder}/current.json", record.to_json())
    if record.replaced:
        log.info("%s %s: snapshot %s replaced %s (kept as history)", model, record.day, snapshot_id, record.replaced)
    return record


def mark_materialized(lake: ObjectStore, model: str, day: str | date) -> None:
    """Note that the published snapshot went online: a second path then has nothing left to do."""
    record = current(lake, model, day)
    if record is None or record.materialized_at:
        return
    done = replace(record, materialized_at=datetime.now(UTC).isoformat())
    lake.put(f"{_folder(model, day)}/current.json", done.to_json())


def published_days(lake: ObjectStore, model: str) -> list[date]:
    """Days that have a published snapshot, oldest first."""
    days = set()
    for key in lake.list(f"validated/{model}/"):
        parts = key.split("/")
        if len(parts) == 4 and parts[2].startswith("date=") and parts[3] == SNAPSHOT_FILE:
            try:
                days.add(date.fromisoformat(parts[2][5:]))
            except ValueError:
                continue
    return sorted(days)


def raw_batches(lake: ObjectStore, model: str, days: list[date]) -> list[str]:
    """The raw batch hashes of the published snapshots of ``days`` (a training set's lineage)."""
    hashes: list[str] = []
    for day in days:
        record = current(lake, model, day)
        if record is not None:
            hashes.extend(record.raw_batches)
    return hashes


def quarantine_prefix(model: str, day: str | date, snapshot_id: str) -> str:
    return f"quarantine/{model}/{_day(day)}/{snapshot_id}"


def quarantined_reason(lake: ObjectStore, model: str, day: str | date, snapshot_id: str) -> str | None:
    """The one-line reason this exact content of the day was quarantined, or None."""
    key = f"{quarantine_prefix(model, day, snapshot_id)}/reason.txt"
    return lake.get(key).decode().strip() if lake.exists(key) else None


@contextmanager
def day_lock(settings: Settings, model: str, day: str | date) -> Iterator[None]:
    """Serialise work on one model's day (the landing watcher and the daily DAG may run at once).

    A file lock under the state folder: it serialises every worker of one machine (LocalExecutor, the
    demo, tests). Workers on several machines need a shared state folder for it to hold.
    """
    with file_lock(settings.state_dir / "locks" / model / f"{_day(day)}.lock"):
        yield
