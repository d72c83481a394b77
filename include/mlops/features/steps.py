"""Feature steps the DAGs call: materialize an interval online, build a point-in-time training set."""

from __future__ import annotations

import io
import logging
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlops.core.config import get_config
from mlops.core.settings import get_settings
from mlops.core.storage import ObjectStore

if TYPE_CHECKING:
    import pandas as pd
from mlops.core.errors import GateFailed, NothingToDo
from mlops.core.lake import open_lake, parse_dt, run_key
from mlops.data.steps import validated_days

log = logging.getLogger(__name__)


def materialize(model: str, start: str | datetime, end: str | datetime) -> dict[str, Any]:
    """Apply the model's Feast objects (idempotent) and materialize exactly [start, end).

    A day whose published snapshot is already online skips (``NothingToDo``, so no Asset event): when the
    landing watcher and the daily DAG both reached this step for one day, only the first one emits.
    """
    from mlops.data import snapshots
    from mlops.data.ingest import interval_days

    begin, finish = parse_dt(start), parse_dt(end)
    days = interval_days(begin, finish)
    if len(days) != 1:
        return _materialize(model, begin, finish)
    settings = get_settings()
    lake = open_lake(settings)
    with snapshots.day_lock(settings, model, days[0]):
        record = snapshots.current(lake, model, days[0])
        if record is not None and record.materialized_at:
            raise NothingToDo(
                f"{model} {days[0]}: snapshot {record.snapshot_id} is already online since "
                f"{record.materialized_at}: nothing to do, no event"
            )
        return _materialize(model, begin, finish)


def _materialize(model: str, start: datetime, end: datetime) -> dict[str, Any]:
    from mlops.core.progress import log_group
    from mlops.data import snapshots
    from mlops.data.ingest import interval_days
    from mlops.features import store as features

    cfg = get_config(model).config
    with log_group(f"Feast apply and materialize {model} [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M})", log):
        applied = features.apply(cfg)
        # By batch date: the interval's batch goes online whole, with its rows stamped up to the GX
        # freshness limit before the interval.
        rows = features.materialize_interval(cfg, start, end)
    lake = open_lake(get_settings())
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
    from mlops.data import snapshots
    from mlops.features import store as features

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
    lake = open_lake(settings)
    key, digest = write_training_set(lake, f"runs/{model}/{run_key(run_id)}", frame)
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
        "partitions": _partitions(lake, model, window_days_list),
        "feature_service": cfg.feature_service,
    }


def _partitions(lake: ObjectStore, model: str, days: list[date]) -> list[dict[str, str]]:
    """The published day partitions a training set read (its lineage inputs): location and snapshot id."""
    from mlops.data import snapshots

    found = []
    for day in days:
        record = snapshots.current(lake, model, day)
        if record is not None:
            folder = snapshots.validated_key(model, day).rpartition("/")[0]
            found.append(
                {"day": day.isoformat(), "uri": f"{lake.uri.rstrip('/')}/{folder}", "snapshot": record.snapshot_id}
            )
    return found


def write_training_set(lake: ObjectStore, prefix: str, frame: pd.DataFrame) -> tuple[str, str]:
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
