"""Lake I/O shared by the steps: the lake store of the settings, parquet reads and writes, run keys, UTC times."""

from __future__ import annotations

import io
import logging
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mlops.core.settings import Settings
from mlops.core.storage import ObjectStore, open_store

if TYPE_CHECKING:
    import pandas as pd


log = logging.getLogger(__name__)


def run_key(run_id: str) -> str:
    """A filesystem/S3-safe key for an Airflow run id (idempotent outputs are keyed on it)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("_")[:120] or "run"


def open_lake(settings: Settings) -> ObjectStore:
    return open_store(settings.lake_uri)


def read_parquet(store: ObjectStore, key: str) -> pd.DataFrame:
    import pandas as pd

    local = store.local_path(key)
    if local is not None:
        return pd.read_parquet(local)
    return pd.read_parquet(io.BytesIO(store.get(key)))


def write_parquet(store: ObjectStore, key: str, df: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    store.put(key, buffer.getvalue())


def parse_dt(value: str | datetime) -> datetime:
    """An ISO-8601 string or a datetime as an aware UTC datetime; naive values are taken as UTC, as everywhere."""
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def read_parquet_columns(store: ObjectStore, key: str, columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    local = store.local_path(key)
    return pd.read_parquet(local if local is not None else io.BytesIO(store.get(key)), columns=columns)


def read_parquet_uri(uri: str) -> pd.DataFrame:
    """A parquet file named by its full URI (a folder or ``s3://`` prefix and the file name)."""
    parent, _, name = uri.rstrip("/").rpartition("/")
    return read_parquet(open_store(parent), name)


def write_parquet_uri(uri: str, df: pd.DataFrame) -> None:
    """Write ``df`` as the parquet file named by its full URI."""
    parent, _, name = uri.rstrip("/").rpartition("/")
    write_parquet(open_store(parent), name, df)
