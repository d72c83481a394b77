"""Feast online store on SQLite with one row per entity and one column per feature.

Feast's own SQLite store keeps one row per (entity, feature) holding a serialized protobuf and writes
it with one ``execute`` per value: materializing 50,000 rows of 32 features ran 1.6M statements and
~1.5M protobuf conversions (1,477 rows/s). This store keeps the natural layout instead:

* one table per feature view, ``entity_key`` (the join key's own value) as primary key, the event
  and created timestamps as integer microseconds, and a column per feature in its SQL type;
* :meth:`EntityRowSqliteOnlineStore.write_arrow` loads an Arrow table with one ``executemany`` and
  no protobuf at all (what :func:`mlops.features.store.materialize_interval` uses);
* Feast's generic ``online_write_batch`` (``feast materialize``, ``write_to_online_store``) and
  ``online_read`` (``get_online_features``) work as for any store;
* a write never moves an entity back in time: a row older than the stored one is ignored, so a late
  backfill cannot overwrite newer values (Feast's SQLite store would).

Only feature views with a single join key are supported (every model config has one).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from feast import Entity, FeatureView
from feast.infra.infra_object import InfraObject
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.types import (
    Bool,
    Bytes,
    Float32,
    Float64,
    Int32,
    Int64,
    String,
)
from feast.value_type import ValueType
from pydantic import StrictStr
from typing_extensions import override

from mlops.core.util import quote_identifier as _quote

_SQL_TYPES: dict[Any, str] = {
    Float64: "REAL",
    Float32: "REAL",
    Int64: "INTEGER",
    Int32: "INTEGER",
    Bool: "INTEGER",
    String: "TEXT",
    Bytes: "BLOB",
}
"""Feature types stored as plain SQL values; any other type is stored as a serialized ValueProto."""

_ARROW_TYPES: dict[Any, pa.DataType] = {
    Float64: pa.float64(),
    Float32: pa.float64(),
    Int64: pa.int64(),
    Int32: pa.int64(),
    Bool: pa.bool_(),
    String: pa.string(),
    Bytes: pa.binary(),
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EntityRowSqliteOnlineStoreConfig(FeastConfigBaseModel):
    """``online_store`` section of feature_store.yaml for :class:`EntityRowSqliteOnlineStore`."""

    type: Literal["mlops.features.sqlite_online.EntityRowSqliteOnlineStore"] = (
        "mlops.features.sqlite_online.EntityRowSqliteOnlineStore"
    )
    path: StrictStr = "data/online_rows.db"
    """Path of the SQLite file; relative paths are taken from the feature repo."""


class OnlineStoreLayoutError(ValueError):
    """A feature view this store cannot hold (e.g. a composite entity key)."""


def _column(feature: str) -> str:
    """Feature columns get a prefix, so no feature name can clash with the key or timestamps."""
    return _quote(f"f:{feature}")


def table_name(project: str, view: FeatureView) -> str:
    return f"{project}_{view.name}"


def join_key(view: FeatureView) -> str:
    keys = [column.name for column in view.entity_columns]
    if len(keys) != 1:
        raise OnlineStoreLayoutError(
            f"feature view {view.name}: the entity-row online store needs exactly one join key, got {keys}"
        )
    return keys[0]


def _micros(value: datetime | None) -> int | None:
    if value is None:
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1_000_000, tz=UTC).replace(microsecond=value % 1_000_000)


def _key_value(key: EntityKeyProto) -> Any:
    if len(key.entity_values) != 1:
        raise OnlineStoreLayoutError(f"entity key {list(key.join_keys)} has {len(key.entity_values)} values, need 1")
    return feast_value_type_to_python_type(key.entity_values[0])


class EntityRowSqliteOnlineStore(OnlineStore):
    """SQLite online store: one row per entity, one column per feature (see the module docstring)."""

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._path: str | None = None

    # ---------------------------------------------------------------------------------- connection

    @staticmethod
    def db_path(config: RepoConfig) -> str:
        path = Path(config.online_store.path)
        if config.repo_path and not path.is_absolute():
            path = Path(config.repo_path) / path
        return str(path)

    def _connection(self, config: RepoConfig) -> sqlite3.Connection:
        path = self.db_path(config)
        if self._conn is None or self._path != path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, check_same_thread=False, timeout=60)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._path = path
        return self._conn

    # -------------------------------------------------------------------------------------- schema

    def _ensure_table(self, conn: sqlite3.Connection, config: RepoConfig, view: FeatureView) -> str:
        """Create the view's table, or add columns for features it gained (old rows read as null)."""
        join_key(view)
        name = table_name(config.project, view)
        columns = ", ".join(f"{_column(f.name)} {_SQL_TYPES.get(f.dtype, 'BLOB')}" for f in view.features)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_quote(name)} (entity_key PRIMARY KEY, event_ts INTEGER NOT NULL, "
            f"created_ts INTEGER{', ' + columns if columns else ''})"
        )
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({_quote(name)})")}
        for feature in view.features:
            if f"f:{feature.name}" not in present:
                sql_type = _SQL_TYPES.get(feature.dtype, "BLOB")
                conn.execute(f"ALTER TABLE {_quote(name)} ADD COLUMN {_column(feature.name)} {sql_type}")
        return name

    @override
    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        conn = self._connection(config)
        with conn:
            for view in tables_to_keep:
                self._ensure_table(conn, config, view)
            for view in tables_to_delete:
                conn.execute(f"DROP TABLE IF EXISTS {_quote(table_name(config.project, view))}")

    @override
    def teardown(self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]) -> None:
        conn = self._connection(config)
        with conn:
            for view in tables:
                conn.execute(f"DROP TABLE IF EXISTS {_quote(table_name(config.project, view))}")

    @override
    def plan(self, config: RepoConfig, desired_registry_proto: Any) -> list[InfraObject]:
        return []

    # ------------------------------------------------------------------------------------- writing

    def _upsert_sql(self, name: str, view: FeatureView) -> str:
        """Insert or replace a whole row unless the stored row is newer (event time, then created)."""
        columns = ["entity_key", "event_ts", "created_ts", *(_column(f.name) for f in view.features)]
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        return (
            f"INSERT INTO {_quote(name)} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT(entity_key) DO UPDATE SET {updates} "
            f"WHERE excluded.event_ts > {_quote(name)}.event_ts OR (excluded.event_ts = {_quote(name)}.event_ts "
            f"AND coalesce(excluded.created_ts, 0) >= coalesce({_quote(name)}.created_ts, 0))"
        )

    def write_arrow(
        self,
        config: RepoConfig,
        view: FeatureView,
        table: pa.Table,
        timestamp_field: str,
        created_timestamp_field: str | None = None,
    ) -> int:
        """Write an Arrow table (join key, timestamps, every feature) in one transaction; returns rows.

        Values are cast to the features' declared types; a feature type without a plain SQL form is
        refused here (use Feast's ``write_to_online_store`` for those).
        """
        key = join_key(view)
        arrays: list[list[Any]] = [table.column(key).to_pylist()]
        timestamps = [timestamp_field, created_timestamp_field]
        for field in timestamps:
            if field is None:
                arrays.append([None] * table.num_rows)
                continue
            column = pc.cast(table.column(field), pa.timestamp("us", tz="UTC"))
            arrays.append(pc.cast(column, pa.int64()).to_pylist())
        for feature in view.features:
            arrow_type = _ARROW_TYPES.get(feature.dtype)
            if arrow_type is None:
                raise OnlineStoreLayoutError(
                    f"feature {view.name}.{feature.name} has type {feature.dtype}; write it through Feast"
                )
            column = pc.cast(table.column(feature.name), arrow_type)
            if pa.types.is_floating(arrow_type):  # NaN is a missing value, as in Feast's conversion
                column = pc.if_else(pc.is_nan(column), pa.scalar(None, arrow_type), column)
            arrays.append(column.to_pylist())
        if any(v is None for v in arrays[1]):
            raise ValueError(f"{view.name}: rows without '{timestamp_field}' cannot be written online")
        conn = self._connection(config)
        with conn:
            name = self._ensure_table(conn, config, view)
            conn.executemany(self._upsert_sql(name, view), zip(*arrays, strict=True))
        return table.num_rows

    @override
    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        plain = {f.name: f.dtype in _SQL_TYPES for f in table.features}

        def stored(feature: str, values: dict[str, ValueProto]) -> Any:
            value = values.get(feature)
            if value is None or value.WhichOneof("val") is None:
                return None
            if plain[feature]:
                return feast_value_type_to_python_type(value)
            return value.SerializeToString()

        rows = [
            (
                _key_value(key),
                _micros(event_ts),
                _micros(created_ts),
                *(stored(f.name, values) for f in table.features),
            )
            for key, values, event_ts, created_ts in data
        ]
        conn = self._connection(config)
        with conn:
            name = self._ensure_table(conn, config, table)
            conn.executemany(self._upsert_sql(name, table), rows)
        if progress:
            progress(len(rows))

    # ------------------------------------------------------------------------------------- reading

    @override
    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        features = [f for f in table.features if requested_features is None or f.name in requested_features]
        keys = [_key_value(k) for k in entity_keys]
        if not keys:
            return []
        conn = self._connection(config)
        name = table_name(config.project, table)
        selected = ", ".join(["entity_key", "event_ts", *(_column(f.name) for f in features)])
        try:
            rows = conn.execute(
                f"SELECT {selected} FROM {_quote(name)} WHERE entity_key IN ({', '.join('?' * len(keys))})", keys
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return [(None, None)] * len(keys)
            raise
        found = {row[0]: row for row in rows}
        result: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
        for key in keys:
            row = found.get(key)
            if row is None:
                result.append((None, None))
                continue
            values: dict[str, ValueProto] = {}
            for feature, raw in zip(features, row[2:], strict=True):
                values[feature.name] = self._proto(feature.dtype, raw)
            result.append((_from_micros(row[1]), values))
        return result

    @staticmethod
    def _proto(dtype: Any, raw: Any) -> ValueProto:
        if raw is None:
            return ValueProto()
        if dtype not in _SQL_TYPES:
            return ValueProto.FromString(raw)
        if dtype in (Float64, Float32):
            return ValueProto(double_val=float(raw)) if dtype == Float64 else ValueProto(float_val=float(raw))
        if dtype == Bool:
            return ValueProto(bool_val=bool(raw))
        value_type: ValueType = dtype.to_value_type()
        return python_values_to_proto_values([raw], value_type)[0]
