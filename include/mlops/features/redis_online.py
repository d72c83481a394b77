"""Fast Arrow writes to Feast's Redis online store (production).

Writes the same keys and protobuf bytes as Feast's own Redis store, in pipelined batches, so Feast's
``get_online_features`` reads them unchanged; see :func:`write_arrow_redis`.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.repo_config import RepoConfig
from feast.type_map import python_values_to_proto_values
from feast.types import Float64, String

from mlops.core.progress import progress
from mlops.features.sqlite_online import join_key

REDIS_PIPELINE_ROWS = 5_000
"""Entities per Redis pipeline round trip when writing Arrow tables to Feast's Redis store."""

_DOUBLE_TAG = 0x29  # ValueProto field 5 (double_val), wire type 1 (64-bit)
_STRING_TAG = b"\x12"  # ValueProto field 2 (string_val), wire type 2 (length-delimited)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _serialized_values(column: pa.ChunkedArray | pa.Array, dtype: Any) -> list[bytes]:
    """Serialized ``ValueProto``s of one feature column, byte for byte what Feast's conversion writes.

    Float64 (``double_val``) and String (``string_val``) are encoded here without a proto object per
    value; a null or NaN is the empty message, as in Feast. Any other type goes through Feast's own
    ``python_values_to_proto_values``.
    """
    if dtype == Float64:
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype("<f8", copy=False)
        rows = np.empty((len(values), 9), dtype=np.uint8)
        rows[:, 0] = _DOUBLE_TAG
        rows[:, 1:] = np.ascontiguousarray(values).view(np.uint8).reshape(-1, 8)
        raw = rows.tobytes()
        out = [raw[i : i + 9] for i in range(0, len(raw), 9)]
        for i in np.flatnonzero(np.isnan(values)).tolist():
            out[i] = b""
        return out
    if dtype == String:
        encoded: list[bytes] = []
        for value in pc.cast(column, pa.string()).to_pylist():
            if value is None:
                encoded.append(b"")
            else:
                data = value.encode("utf-8")
                encoded.append(_STRING_TAG + (bytes((len(data),)) if len(data) < 0x80 else _varint(len(data))) + data)
        return encoded
    values_any = column.to_numpy(zero_copy_only=False)
    return [p.SerializeToString() for p in python_values_to_proto_values(values_any, dtype.to_value_type())]


def _serialized_timestamps(micros: list[int]) -> list[bytes]:
    """Serialized ``google.protobuf.Timestamp`` per row (what Feast stores under ``_ts:<view>``)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    return [Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000).SerializeToString() for us in micros]


REDIS_SCRIPT_KEYS = 250
"""Entities per call of the compare-and-set script (bounds how long one call holds Redis: ~5 ms)."""

_REDIS_WRITE_SCRIPT = """
-- KEYS: entity hashes. ARGV: n, ttl, field_1..field_n (field_1 is '_ts:<view>'), then per key:
-- seconds, nanos, value_1..value_n (value_1 is the serialized timestamp). A key is written only
-- when its stored timestamp is older, as Feast's writer decides; returns how many were written.
local n, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local function stamp(s)
  local fields, pos = {0, 0}, 1
  while pos <= #s do
    local tag = string.byte(s, pos)
    local value, shift, byte = 0, 0, 128
    pos = pos + 1
    while byte >= 128 do
      byte = string.byte(s, pos)
      if byte == nil then return nil end
      value = value + (byte % 128) * 2 ^ shift
      shift, pos = shift + 7, pos + 1
    end
    if tag == 8 then fields[1] = value elseif tag == 16 then fields[2] = value else return nil end
  end
  return fields
end
local written, per = 0, n + 2
for i, key in ipairs(KEYS) do
  local at = 2 + n + (i - 1) * per
  local seconds, nanos = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local prev = redis.call('HGET', key, ARGV[3])
  local old = prev and stamp(prev)
  if not old or old[1] < seconds or (old[1] == seconds and old[2] < nanos) then
    local hash = {}
    for j = 1, n do
      hash[2 * j - 1] = ARGV[2 + j]
      hash[2 * j] = ARGV[at + 2 + j]
    end
    redis.call('HSET', key, unpack(hash))
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
    written = written + 1
  end
end
return written
"""


def write_arrow_redis(
    online: Any,
    config: RepoConfig,
    view: FeatureView,
    table: pa.Table,
    timestamp_field: str,
    *,
    pipeline_rows: int | None = None,
) -> int:
    """Write an Arrow table into Feast's Redis online store in Feast's own layout; returns rows written.

    The result is what Feast's ``online_write_batch`` stores (one hash per entity key: the mmh3 of
    ``<view>:<feature>`` -> serialized ``ValueProto``, ``_ts:<view>`` -> serialized timestamp, the
    key's TTL), so ``get_online_features`` and Feast's own writers keep working on it. As in Feast,
    a row not newer than the entity's stored timestamp is skipped: a write never moves an entity back
    in time. Two differences, both for speed: values are serialized a column at a time instead of
    through a proto object per value, and on a single Redis (or Sentinel) the compare-and-set runs
    server-side, in a Lua script over :data:`REDIS_SCRIPT_KEYS` entities per call, instead of one
    read and one write command per entity (which is also atomic, where Feast's read-then-write is
    not). Redis Cluster, whose keys of one call may live on different nodes, gets the two commands
    per entity in a pipeline.
    """
    from feast.infra.online_stores.helpers import _mmh3
    from feast.infra.online_stores.redis import _versioned_fv_name

    key_name = join_key(view)
    key_type = next(column.dtype for column in view.entity_columns if column.name == key_name).to_value_type()
    store_config = config.online_store
    client = online._get_client(store_config)
    fv_name = _versioned_fv_name(view, config)
    ts_key = f"_ts:{fv_name}".encode()
    field_keys = [ts_key] + [_mmh3(f"{fv_name}:{feature.name}") for feature in view.features]
    ttl = int(getattr(store_config, "key_ttl_seconds", None) or 0)
    script = client.register_script(_REDIS_WRITE_SCRIPT) if _scripted(store_config) else None
    step = pipeline_rows or REDIS_PIPELINE_ROWS
    written = 0
    # One pipeline in flight while the next chunk is serialized: the socket wait releases the GIL,
    # so Redis runs the scripts on one core while this process encodes on the other. One at a time
    # keeps the chunks' order, so an entity in two chunks ends with the later row.
    sender = ThreadPoolExecutor(max_workers=1) if script is not None else None
    in_flight: Future[int] | None = None
    try:
        offsets = range(0, table.num_rows, step)
        for offset in progress(offsets, f"redis write {view.name}", unit=f"chunks of {step} rows"):
            chunk = table.slice(offset, step)
            keys = _chunk_keys(config, chunk.column(key_name), key_name, key_type)
            micros = _timestamp_micros(chunk.column(timestamp_field))
            columns = [_serialized_values(chunk.column(feature.name), feature.dtype) for feature in view.features]
            rows = list(zip(_serialized_timestamps(micros), *columns, strict=True))
            if script is not None and sender is not None:
                header: list[Any] = [len(field_keys), ttl, *field_keys]
                pipe = client.pipeline(transaction=False)
                for first in range(0, len(keys), REDIS_SCRIPT_KEYS):
                    args = list(header)
                    for at in range(first, min(first + REDIS_SCRIPT_KEYS, len(keys))):
                        args += (micros[at] // 1_000_000, (micros[at] % 1_000_000) * 1000, *rows[at])
                    script(keys=keys[first : first + REDIS_SCRIPT_KEYS], args=args, client=pipe)
                if in_flight is not None:
                    written += in_flight.result()
                in_flight = sender.submit(_execute, pipe)
                continue
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hget(key, ts_key)
                previous = pipe.execute()
            with client.pipeline(transaction=False) as pipe:
                for key, row, prev in zip(keys, rows, previous, strict=True):
                    if prev is not None and _timestamp_nanos(row[0]) <= _timestamp_nanos(prev):
                        continue  # not newer than what is stored: never move an entity back in time
                    pipe.hset(key, mapping=dict(zip(field_keys, row, strict=True)))
                    if ttl:
                        pipe.expire(name=key, time=ttl)
                    written += 1
                pipe.execute()
        if in_flight is not None:
            written += in_flight.result()
    finally:  # on a fault too: the pipeline in flight completes (each entity's script call is atomic)
        if sender is not None:
            sender.shutdown(wait=True)
    return written


def _chunk_keys(config: RepoConfig, column: pa.ChunkedArray, key_name: str, key_type: Any) -> list[bytes]:
    """Feast's Redis keys of one chunk's entities."""
    from feast.infra.online_stores.helpers import _redis_key

    version = config.entity_key_serialization_version
    key_protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), key_type)
    return [
        _redis_key(config.project, EntityKeyProto(join_keys=[key_name], entity_values=[value]), version)
        for value in key_protos
    ]


def _execute(pipe: Any) -> int:
    """Run one pipeline of script calls; the number of entities they wrote."""
    with pipe:
        return sum(int(n) for n in pipe.execute())


def _scripted(store_config: Any) -> bool:
    """Whether the compare-and-set script can run: not on Redis Cluster (keys of a call span nodes)."""
    from feast.infra.online_stores.redis import RedisType

    return getattr(store_config, "redis_type", RedisType.redis) != RedisType.redis_cluster


def _timestamp_micros(column: pa.ChunkedArray | pa.Array) -> list[int]:
    micros = pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64())
    if micros.null_count:
        raise ValueError("rows without an event timestamp cannot be written online")
    return micros.to_pylist()  # type: ignore[no-any-return]


def _timestamp_nanos(serialized: bytes) -> int:
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.ParseFromString(serialized)
    return int(stamp.seconds) * 1_000_000_000 + int(stamp.nanos)
