"""Feast integration: definitions, interval materialization, and point-in-time correct training sets.

Every test builds a fresh local store (SQLite online store, file registry, DuckDB offline store over
parquet partitions) under tmp_path through ``mlops.features.store.get_store``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.core.config import ModelConfig, load_config
from mlops.core.settings import REPO_ROOT, Settings, get_settings
from mlops.data.snapshots import validated_key
from mlops.features import store as features

MODELS = ["credit_risk", "tumor_diagnosis"]
DAY0 = pd.Timestamp("2024-03-01", tz="UTC")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MLOPS_ENV", "local")
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLOPS_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.delenv("MLOPS_FEATURE_REPO", raising=False)
    return get_settings()


def _cfg(name: str) -> ModelConfig:
    return load_config(REPO_ROOT / "include" / "models" / f"{name}.yaml").config


def _key(cfg: ModelConfig, i: int) -> Any:
    return int(i) if cfg.entity.dtype == "int64" else f"P{i:06d}"


def _rows(
    cfg: ModelConfig,
    ids: list[int],
    times: list[pd.Timestamp],
    values: list[float],
    labels: list[Any] | None = None,
) -> pd.DataFrame:
    """Rows with every column of the model; all numeric features carry ``values``."""
    n = len(ids)
    key_dtype = "int64" if cfg.entity.dtype == "int64" else object
    data: dict[str, Any] = {
        cfg.entity.join_key: pd.Series([_key(cfg, i) for i in ids], dtype=key_dtype),
        cfg.timestamp_column: pd.to_datetime(pd.Series(times), utc=True),
    }
    for column in cfg.features.numeric:
        data[column] = np.asarray(values, dtype="float64")
    for column in cfg.stored_columns:
        if column not in data:
            data[column] = [f"{column}_{int(v) % 3}" for v in values]
    data[cfg.label.column] = labels if labels is not None else [cfg.label.positive_class] * n
    return pd.DataFrame(data)[cfg.all_columns]


def _write(cfg: ModelConfig, settings: Settings, frame: pd.DataFrame, unit: str | None = None) -> None:
    """Write validated partitions like the pipeline does: one file per batch date."""
    ts = cfg.timestamp_column
    for day, part in frame.groupby(frame[ts].dt.strftime("%Y-%m-%d")):
        _write_batch(cfg, settings, pd.Timestamp(day), part, unit)


def _write_batch(
    cfg: ModelConfig, settings: Settings, day: pd.Timestamp, frame: pd.DataFrame, unit: str | None = None
) -> None:
    """The published snapshot of ``day`` (one file per partition), whatever its rows' timestamps."""
    path = Path(settings.lake_uri) / validated_key(cfg.name, day.date())
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False, coerce_timestamps=unit)


def _labels(cfg: ModelConfig, ids: list[int], times: list[pd.Timestamp], labels: list[Any]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            cfg.entity.join_key: [_key(cfg, i) for i in ids],
            cfg.timestamp_column: pd.to_datetime(pd.Series(times), utc=True),
            cfg.label.column: labels,
        }
    )


def _first_numeric(cfg: ModelConfig) -> str:
    return cfg.features.numeric[0]


@pytest.mark.parametrize("name", MODELS)
def test_feature_objects_follow_the_config(name: str) -> None:
    from feast import ValueType
    from feast.types import Float64, String

    cfg = _cfg(name)
    entity, source, view, service = features.feature_objects(cfg, "/lake/validated")
    assert entity.join_key == cfg.entity.join_key
    assert entity.value_type == (ValueType.INT64 if cfg.entity.dtype == "int64" else ValueType.STRING)
    assert source.timestamp_field == cfg.timestamp_column
    assert source.path == f"/lake/validated/{cfg.name}/date=*/data.parquet"
    assert view.name == cfg.feature_view and service.name == cfg.feature_service
    assert view.ttl == timedelta(days=cfg.features.ttl_days) and view.online
    dtypes = {f.name: f.dtype for f in view.features}
    assert list(dtypes) == cfg.stored_columns
    assert all(dtypes[c] == Float64 for c in cfg.features.numeric)
    assert all(dtypes[c] == String for c in cfg.stored_columns if c not in cfg.features.numeric)


def test_repo_objects_cover_every_model_and_refuse_conflicting_entities() -> None:
    cfgs = [_cfg(n) for n in MODELS]
    names = [obj.name for obj in features.repo_objects(cfgs, "/lake/validated")]
    assert len(names) == len(set(names)) == 4 * len(MODELS)
    clash = cfgs[1].model_copy(update={"entity": cfgs[0].entity.model_copy(update={"join_key": "other_id"})})
    with pytest.raises(ValueError, match="already defined"):
        features.repo_objects([cfgs[0], clash], "/lake/validated")


def test_production_yaml_is_a_valid_repo_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from feast.repo_config import load_repo_config

    monkeypatch.setenv("FEAST_REGISTRY_URL", "postgresql+psycopg://feast:secret@postgres:5432/feast")
    monkeypatch.setenv("FEAST_REDIS_CONNECTION", "redis:6379,db=0")
    repo = REPO_ROOT / "feature_repo"
    config = load_repo_config(repo, repo / "feature_store.production.yaml")
    assert config.registry.path.startswith("postgresql+psycopg://")
    assert config.online_store.type == "redis"
    assert config.online_store.connection_string == "redis:6379,db=0"
    assert isinstance(config.offline_store, features.LakeDuckDBOfflineStoreConfig)


def test_repo_config_takes_the_state_dir_from_settings_without_touching_the_environment(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "elsewhere"))
    before = dict(os.environ)
    other = dataclasses.replace(settings, state_dir=tmp_path / "from-settings")
    store = features.get_store(other)
    assert dict(os.environ) == before  # nothing written to the process environment
    assert store.config.registry.path == f"{tmp_path / 'from-settings'}/feast/registry.db"
    assert store.config.online_store.path == f"{tmp_path / 'from-settings'}/feast/online_rows.db"
    production = dataclasses.replace(
        other, feature_store_yaml=REPO_ROOT / "feature_repo" / "feature_store.production.yaml"
    )
    monkeypatch.setenv("FEAST_REGISTRY_URL", "postgresql+psycopg://feast@postgres:5432/feast")
    monkeypatch.setenv("FEAST_REDIS_CONNECTION", "redis:6379,db=0")
    assert features.repo_config(production).online_store.connection_string == "redis:6379,db=0"  # others: env


@pytest.mark.parametrize("name", MODELS)
def test_apply_twice_is_idempotent(settings: Settings, name: str) -> None:
    cfg = _cfg(name)
    store = features.get_store(settings)
    first = features.apply(cfg, store)
    second = features.apply(cfg, features.get_store(settings))
    assert first == second == [cfg.entity.name, f"{cfg.name}_validated", cfg.feature_view, cfg.feature_service]
    assert (settings.state_dir / "feast" / "registry.db").exists()
    store = features.get_store(settings)
    assert [v.name for v in store.list_feature_views()] == [cfg.feature_view]
    assert [s.name for s in store.list_feature_services()] == [cfg.feature_service]
    assert [e.name for e in store.list_entities()] == [cfg.entity.name]


@pytest.mark.parametrize("name", MODELS)
def test_materialize_interval_loads_latest_values_of_that_interval_only(settings: Settings, name: str) -> None:
    cfg = _cfg(name)
    day = timedelta(days=1)
    history = _rows(
        cfg,
        ids=[1, 1, 2, 3, 4],
        times=[
            DAY0 + timedelta(hours=10),
            DAY0 + day + timedelta(hours=10),
            DAY0 + day,
            DAY0 + 2 * day,
            DAY0 + 3 * day,
        ],
        values=[1.0, 2.0, 5.0, 7.0, 9.0],
    )
    _write(cfg, settings, history)
    store = features.get_store(settings)
    features.apply(cfg, store)

    # [DAY0, DAY0+2d): entity 3 sits exactly on the exclusive end, entity 4 is a later day.
    for _ in range(2):  # a rerun of the same interval is idempotent
        assert features.materialize_interval(cfg, DAY0, DAY0 + 2 * day, store) == 3
        online = features.online_features(cfg, [_key(cfg, i) for i in (1, 2, 3, 4)], store)
        assert list(online[cfg.entity.join_key]) == [_key(cfg, i) for i in (1, 2, 3, 4)]
        values = online[_first_numeric(cfg)].tolist()
        assert values[:2] == [2.0, 5.0]
        assert pd.isna(values[2]) and pd.isna(values[3])
        assert list(online.columns) == [cfg.entity.join_key, *cfg.stored_columns]

    assert features.materialize_interval(cfg, DAY0 + 2 * day, DAY0 + 4 * day, store) == 2
    later = features.online_features(cfg, [_key(cfg, 3), _key(cfg, 4)], store)
    assert later[_first_numeric(cfg)].tolist() == [7.0, 9.0]
    assert features.materialize_interval(cfg, DAY0 + 10 * day, DAY0 + 11 * day, store) == 0


@pytest.mark.parametrize("name", MODELS)
def test_point_in_time_join_never_leaks_future_feature_values(settings: Settings, name: str) -> None:
    cfg = _cfg(name)
    rng = np.random.default_rng(7)
    horizon = 20 * 86_400
    epoch0 = int(DAY0.timestamp())

    # Entity 0: value 1.0 at t0, label at t1, value 999.0 at t2 > t1.
    ids, times, values = [0, 0], [DAY0 + timedelta(hours=1), DAY0 + timedelta(hours=3)], [1.0, 999.0]
    # ~200 random entities whose numeric features hold their own timestamp (epoch seconds), so any
    # value after the label's timestamp is detectable.
    for entity in range(1, 201):
        offsets = np.unique(rng.integers(0, horizon, rng.integers(1, 6)))
        for offset in offsets:
            ids.append(entity)
            times.append(DAY0 + timedelta(seconds=int(offset)))
            values.append(float(epoch0 + offset))
    history = _rows(cfg, ids, times, values)
    _write(cfg, settings, history)  # pandas' default ns timestamps
    store = features.get_store(settings)
    features.apply(cfg, store)

    label_ids = [0, *rng.integers(1, 201, 300).tolist()]
    label_times = [DAY0 + timedelta(hours=2)] + [
        DAY0 + timedelta(seconds=int(s)) for s in rng.integers(-86_400, horizon + 86_400, 300)
    ]
    labels = _labels(cfg, label_ids, label_times, list(range(len(label_ids))))
    labels = labels.sample(frac=1.0, random_state=3)  # shuffled order, non-range index

    result = features.training_set(cfg, labels, store)
    column = _first_numeric(cfg)
    assert len(result) == len(labels)
    assert result.index.equals(labels.index)
    assert result[cfg.label.column].tolist() == labels[cfg.label.column].tolist()
    first = result[result[cfg.label.column] == 0]
    assert first[column].tolist() == [1.0]

    # Brute-force expectation: the latest feature row at or before each label timestamp.
    seen = result[result[cfg.entity.join_key] != _key(cfg, 0)]
    for _, row in seen.iterrows():
        label_epoch = row[cfg.timestamp_column].timestamp()
        own = history[history[cfg.entity.join_key] == row[cfg.entity.join_key]]
        earlier = own[own[cfg.timestamp_column] <= row[cfg.timestamp_column]]
        if earlier.empty:
            assert pd.isna(row[column])
        else:
            assert row[column] <= label_epoch
            assert row[column] == earlier[column].max()
    assert seen[column].notna().any() and seen[column].isna().any()


@pytest.mark.parametrize("name", MODELS)
def test_asof_join_returns_what_feasts_own_join_returns(
    settings: Settings, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our ASOF join (linear) against Feast's ibis join (rows x history), on the same store and labels:
    a short TTL, labels at exact feature timestamps, at the TTL's edge, before any row, unknown keys."""
    base = _cfg(name)
    cfg = base.model_copy(update={"features": base.features.model_copy(update={"ttl_days": 2})})
    rng = np.random.default_rng(11)
    ids: list[int] = []
    times: list[Any] = []
    for entity in range(150):
        for offset in np.unique(rng.integers(0, 6 * 86_400, rng.integers(1, 8))):
            ids.append(entity)
            times.append(DAY0 + timedelta(seconds=int(offset)))
    history = _rows(cfg, ids, times, [float(v) for v in rng.normal(size=len(ids))])
    categorical = [c for c in cfg.stored_columns if c not in cfg.features.numeric]
    history[categorical[0]] = [f"v{i}" for i in range(len(history))]  # distinct per row: a wrong row shows
    _write(cfg, settings, history)
    store = features.get_store(settings)
    features.apply(cfg, store)
    picks = rng.integers(0, len(ids), 120)
    label_ids = [ids[i] for i in picks] * 3 + [ids[0], 999] + rng.integers(0, 150, 300).tolist()
    label_times = (
        [times[i] for i in picks]  # exactly at a feature row
        + [times[i] + timedelta(days=2) for i in picks]  # exactly at the TTL's edge
        + [times[i] + timedelta(days=2, seconds=1) for i in picks]  # just past it
        + [DAY0 - timedelta(seconds=1), DAY0 + timedelta(days=1)]
        + [DAY0 + timedelta(seconds=int(s)) for s in rng.integers(-86_400, 9 * 86_400, 300)]
    )
    labels = _labels(cfg, label_ids, label_times, list(range(len(label_ids))))

    asof = features.training_set(cfg, labels, store)

    monkeypatch.setattr(features, "_historical_features_asof", features._historical_features_feast)
    by_feast = features.training_set(cfg, labels, store)
    pd.testing.assert_frame_equal(asof, by_feast)
    column = _first_numeric(cfg)
    assert asof[column].notna().sum() > 200 and asof[column].isna().sum() > 100  # both kinds are compared


@pytest.mark.parametrize("name", MODELS)
def test_training_set_keeps_every_label_row_in_order(settings: Settings, name: str) -> None:
    cfg = _cfg(name)
    ttl = timedelta(days=cfg.features.ttl_days)
    t0 = DAY0
    history = _rows(cfg, ids=[1, 2, 3], times=[t0, t0, t0 + timedelta(days=5)], values=[10.0, 20.0, 30.0])
    _write(cfg, settings, history, unit="us")
    store = features.get_store(settings)
    features.apply(cfg, store)

    cases = [
        (2, t0 + timedelta(days=1), 20.0),  # plain hit
        (1, t0 + ttl + timedelta(days=1), None),  # feature older than the TTL
        (3, t0 + timedelta(days=1), None),  # only a later feature row exists
        (9, t0 + timedelta(days=1), None),  # unknown entity
        (1, t0 + timedelta(days=2), 10.0),  # duplicate (key, timestamp) ...
        (1, t0 + timedelta(days=2), 10.0),  # ... both rows come back
        (1, t0, 10.0),  # feature at exactly the label timestamp counts
        (1, t0 - timedelta(seconds=1), None),  # one second too early
    ]
    labels = _labels(
        cfg,
        [c[0] for c in cases],
        [c[1] for c in cases],
        [cfg.label.positive_class if i % 2 else f"other{i}" for i in range(len(cases))],
    )
    labels.index = pd.Index([f"row{i}" for i in range(len(cases))][::-1])
    labels["split"] = "train"

    result = features.training_set(cfg, labels, store)
    assert len(result) == len(labels)
    assert result.index.equals(labels.index)
    for column in labels.columns:
        assert result[column].tolist() == labels[column].tolist(), column
    expected = [c[2] for c in cases]
    column = _first_numeric(cfg)
    for got, want in zip(result[column], expected, strict=True):
        assert (pd.isna(got) and want is None) or got == want
    categorical = [c for c in cfg.stored_columns if c not in cfg.features.numeric]
    missing = [want is None for want in expected]
    assert result.loc[missing, categorical].isna().all().all()
    assert result.loc[[not m for m in missing], categorical].notna().all().all()
    assert list(result.columns) == [
        cfg.entity.join_key,
        cfg.timestamp_column,
        *cfg.stored_columns,
        cfg.label.column,
        "split",
    ]


def test_training_set_reads_int_then_float_batches_without_rounding(settings: Settings) -> None:
    cfg = _cfg("credit_risk")
    first = _rows(cfg, [1], [DAY0], [3.0])
    first[cfg.features.numeric] = first[cfg.features.numeric].astype("int64")
    _write(cfg, settings, first)
    _write(cfg, settings, _rows(cfg, [1], [DAY0 + timedelta(days=1)], [3.5]))
    store = features.get_store(settings)
    features.apply(cfg, store)
    labels = _labels(cfg, [1, 1], [DAY0 + timedelta(hours=1), DAY0 + timedelta(days=2)], [0, 1])
    result = features.training_set(cfg, labels, store)
    assert result[_first_numeric(cfg)].tolist() == [3.0, 3.5]


def test_training_set_rejects_bad_label_frames(settings: Settings) -> None:
    cfg = _cfg("credit_risk")
    labels = _labels(cfg, [1], [DAY0], [1])
    with pytest.raises(ValueError, match="lacks columns"):
        features.training_set(cfg, labels.drop(columns=[cfg.timestamp_column]))
    with pytest.raises(ValueError, match="already has feature columns"):
        features.training_set(cfg, labels.assign(**{_first_numeric(cfg): 1.0}))
    with pytest.raises(ValueError, match="null"):
        features.training_set(cfg, labels.assign(**{cfg.entity.join_key: [None]}))
    empty = features.training_set(cfg, labels.iloc[:0])
    assert empty.empty and cfg.stored_columns[0] in empty.columns


@pytest.mark.parametrize("name", MODELS)
def test_labels_for_window_selects_partitions_by_date(settings: Settings, name: str) -> None:
    cfg = _cfg(name)
    day = timedelta(days=1)
    frame = _rows(
        cfg,
        ids=[1, 2, 3, 4],
        times=[DAY0 + timedelta(hours=5), DAY0 + day + timedelta(hours=2), DAY0 + day, DAY0 + 2 * day],
        values=[1.0, 2.0, 3.0, 4.0],
        labels=[cfg.label.positive_class] * 4,
    )
    _write(cfg, settings, frame)
    got = features.labels_for_window(cfg, DAY0 + day, DAY0 + 2 * day)
    assert list(got.columns) == [cfg.entity.join_key, cfg.timestamp_column, cfg.label.column]
    assert got[cfg.entity.join_key].tolist() == [_key(cfg, 3), _key(cfg, 2)]  # sorted by timestamp
    assert str(got[cfg.timestamp_column].dt.tz) == "UTC"
    assert len(features.labels_for_window(cfg, DAY0, DAY0 + 3 * day)) == 4
    assert len(features.labels_for_window(cfg, DAY0 + timedelta(hours=1), DAY0 + 2 * day)) == 2
    assert features.labels_for_window(cfg, DAY0 + 9 * day, DAY0 + 10 * day).empty
    naive = datetime(2024, 3, 1)
    assert len(features.labels_for_window(cfg, naive, naive + day)) == 1


@pytest.mark.parametrize("name", MODELS)
def test_materialize_loads_whole_batches_and_never_goes_back_in_time(settings: Settings, name: str) -> None:
    cfg = _cfg(name)
    day = timedelta(days=1)
    column = _first_numeric(cfg)
    # The batch of DAY0+1 carries a late row of entity 1, stamped the evening before.
    _write_batch(cfg, settings, DAY0 + day, _rows(cfg, [1, 2], [DAY0 + timedelta(hours=20), DAY0 + day], [3.0, 4.0]))
    # The batch of DAY0 holds older values of 1 and 2, and entity 5 seen nowhere else.
    older = _rows(cfg, [1, 2, 5], [DAY0 + timedelta(hours=10), DAY0 + timedelta(hours=12), DAY0], [1.0, 2.0, 6.0])
    _write_batch(cfg, settings, DAY0, older)
    store = features.get_store(settings)
    features.apply(cfg, store)
    keys = [_key(cfg, i) for i in (1, 2, 5)]

    assert features.materialize_interval(cfg, DAY0 + day, DAY0 + 2 * day, store) == 2
    first = features.online_features(cfg, keys, store)[column].tolist()
    assert first[:2] == [3.0, 4.0] and pd.isna(first[2])  # the late row came with its batch

    assert features.materialize_interval(cfg, DAY0, DAY0 + day, store) == 3  # a backfill of the older batch
    assert features.online_features(cfg, keys, store)[column].tolist() == [3.0, 4.0, 6.0]
    recorded = {(s.date(), e.date()) for s, e in store.get_feature_view(cfg.feature_view).materialization_intervals}
    assert recorded == {((DAY0 + day).date(), (DAY0 + 2 * day).date()), (DAY0.date(), (DAY0 + day).date())}


def test_online_store_serves_what_feast_writes_through_its_own_api(settings: Settings) -> None:
    cfg = _cfg("credit_risk")
    store = features.get_store(settings)
    features.apply(cfg, store)
    frame = _rows(cfg, [1, 2], [DAY0, DAY0 + timedelta(hours=1)], [1.5, 7.0])
    frame.loc[1, _first_numeric(cfg)] = np.nan
    text = next(c for c in cfg.stored_columns if c not in cfg.features.numeric)
    frame.loc[0, text] = None
    store.write_to_online_store(
        cfg.feature_view, df=frame[[cfg.entity.join_key, cfg.timestamp_column, *cfg.stored_columns]]
    )
    online = features.online_features(cfg, [1, 2, 3], store)
    assert online[_first_numeric(cfg)].iloc[0] == 1.5
    assert pd.isna(online[_first_numeric(cfg)].iloc[1])
    assert pd.isna(online[text].iloc[0]) and online[text].iloc[1] == frame[text].iloc[1]
    assert online.iloc[2, 1:].isna().all()  # never written: all features missing, the row kept


def test_online_store_adds_columns_for_new_features_and_refuses_composite_keys(settings: Settings) -> None:
    from feast import Entity, FeatureView, Field
    from feast.types import Float64

    from mlops.features.sqlite_online import EntityRowSqliteOnlineStore, OnlineStoreLayoutError

    cfg = _cfg("credit_risk")
    store = features.get_store(settings)
    features.apply(cfg, store)
    frame = _rows(cfg, [1], [DAY0], [2.0])
    _write_batch(cfg, settings, DAY0, frame)
    features.materialize_interval(cfg, DAY0, DAY0 + timedelta(days=1), store)

    view = store.get_feature_view(cfg.feature_view)
    grown = FeatureView(
        name=view.name,
        entities=[store.get_entity(cfg.entity.name)],
        schema=[*view.schema, Field(name="new_ratio", dtype=Float64)],
        source=view.batch_source,
        ttl=view.ttl,
    )
    online = EntityRowSqliteOnlineStore()
    online.update(store.config, [], [grown], [], [], partial=False)
    ((timestamp, values),) = online.online_read(store.config, grown, [_entity_key(cfg, 1)])
    assert timestamp == DAY0.to_pydatetime()
    assert values is not None and values["new_ratio"].WhichOneof("val") is None  # old rows: missing
    assert values[_first_numeric(cfg)].double_val == 2.0

    second = Entity(name="branch", join_keys=["branch_id"])
    composite = FeatureView(
        name="two_keys",
        entities=[store.get_entity(cfg.entity.name), second],
        schema=[*view.schema, Field(name="branch_id", dtype=Float64)],
        source=view.batch_source,
    )
    with pytest.raises(OnlineStoreLayoutError, match="exactly one join key"):
        online.update(store.config, [], [composite], [], [], partial=False)


def _entity_key(cfg: ModelConfig, i: int) -> Any:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    value = Value(int64_val=i) if cfg.entity.dtype == "int64" else Value(string_val=_key(cfg, i))
    return EntityKey(join_keys=[cfg.entity.join_key], entity_values=[value])


REDIS_TEST_DB = 12  # of the local Redis; flushed before and after (the bench uses 11, the stack 13)


def _redis_dump(client: Any) -> dict[bytes, dict[bytes, bytes]]:
    return {key: client.hgetall(key) for key in client.scan_iter(count=1000)}


# Both cases flush and fill Redis database 12: under `make test`'s two workers they must not run at the same
# time on two workers, so they join the production stack's group (one worker, one at a time).
@pytest.mark.xdist_group("production_stack")
@pytest.mark.parametrize("scripted", [True, False], ids=["lua-compare-and-set", "cluster-pipeline"])
def test_redis_arrow_writer_stores_what_feast_stores_and_serves_what_local_serves(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripted: bool
) -> None:
    """Production's Redis store is loaded by our column-at-a-time Arrow writer (a server-side script,
    or Redis Cluster's pipelined commands): every hash must be byte for byte what Feast's own
    ``write_to_online_store`` stores for the same intervals, and Redis must serve the same frame as
    the local entity-row store."""
    import redis
    import yaml
    from feast import FeatureStore

    from mlops.features import redis_online as online_store

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_TEST_DB)
    client.ping()  # Redis runs here and in CI; a missing one is a failure, not a skip
    cfg = _cfg("credit_risk")
    rng = np.random.default_rng(3)
    ids = [int(i) for i in rng.integers(0, 40, 120)]
    times = [DAY0 + timedelta(minutes=int(m)) for m in rng.integers(0, 3 * 24 * 60, 120)]
    frame = _rows(cfg, ids, times, [float(v) for v in rng.normal(size=120)])
    frame.loc[::7, _first_numeric(cfg)] = np.nan
    frame.loc[::5, cfg.features.numeric[1]] = None
    frame.loc[3, cfg.features.numeric[2]] = -0.0
    categorical = cfg.features.categorical[0]
    frame.loc[::6, categorical] = None
    frame.loc[1, categorical] = "é" * 70  # a two-byte length prefix
    frame.loc[2, categorical] = ""
    _write(cfg, settings, frame)
    local = features.get_store(settings)
    yaml_file = tmp_path / "redis_store.yaml"
    config = yaml.safe_load((REPO_ROOT / "feature_repo" / "feature_store.yaml").read_text())
    config["registry"]["path"] = str(tmp_path / "redis_registry.db")
    config["online_store"] = {
        "type": "redis",
        "connection_string": f"127.0.0.1:6379,db={REDIS_TEST_DB}",
        "key_ttl_seconds": 86_400,
    }
    yaml_file.write_text(yaml.safe_dump(config))
    remote = FeatureStore(repo_path=str(REPO_ROOT / "feature_repo"), fs_yaml_file=yaml_file)
    monkeypatch.setattr(online_store, "REDIS_PIPELINE_ROWS", 16)  # several pipelines per interval
    monkeypatch.setattr(online_store, "REDIS_SCRIPT_KEYS", 5)  # several script calls per pipeline
    monkeypatch.setattr(online_store, "_scripted", lambda store_config: scripted)

    def materialize(store: Any) -> None:
        features.apply(cfg, store)
        for offset in (2, 0, 1):  # out of order: older rows must not replace newer ones
            start = DAY0 + timedelta(days=offset)
            features.materialize_interval(cfg, start, start + timedelta(days=1), store)

    client.flushdb()
    try:
        with monkeypatch.context() as feast_writes:  # the reference: Feast's own conversion and writer
            feast_writes.setattr(features, "ONLINE_WRITE_CHUNK", 16)
            feast_writes.setattr(features, "_arrow_writer", lambda online: None)
            materialize(remote)
        by_feast = _redis_dump(client)
        client.flushdb()
        materialize(remote)
        by_arrow = _redis_dump(client)
        ttls = {client.ttl(key) for key in by_arrow}
        materialize(local)
        keys = [*sorted(set(ids)), 999]
        served_local = features.online_features(cfg, keys, local)
        served_remote = features.online_features(cfg, keys, remote)
    finally:
        client.flushdb()
    assert len(by_arrow) == len(set(ids)) and by_arrow == by_feast
    assert all(0 < ttl <= 86_400 for ttl in ttls)
    pd.testing.assert_frame_equal(served_local, served_remote)
    latest = frame.sort_values(cfg.timestamp_column).groupby(cfg.entity.join_key).tail(1).set_index(cfg.entity.join_key)
    expected = latest.loc[sorted(set(ids)), _first_numeric(cfg)].to_numpy()
    np.testing.assert_array_equal(served_local[_first_numeric(cfg)].to_numpy()[:-1], expected)
    assert served_local.iloc[-1, 1:].isna().all()


@pytest.mark.parametrize("keep_checks", [False, True])
def test_feast_is_imported_without_typeguard_unless_asked(keep_checks: bool, tmp_path: Path) -> None:
    """In a fresh interpreter that installs the hook explicitly (as the executor, demo and bench do):
    Feast's constructors lose typeguard's checks, other code keeps them; importing mlops changes nothing."""
    import subprocess
    import sys

    probe = (
        "import sys, mlops, mlops.core.config\n"
        "from mlops.features import boot\n"
        "assert not any(isinstance(f, boot._FeastImportHook) for f in sys.meta_path), 'import-time hook'\n"
        "boot.install()\n"
        "import mlops.features.store, feast, typeguard\n"
        "def outside(x: int) -> int:\n"
        "    return x\n"
        "checked = typeguard.typechecked(outside)\n"
        "try:\n"
        "    checked('not an int')\n"
        "    print('outside: unchecked')\n"
        "except typeguard.TypeCheckError:\n"
        "    print('outside: checked')\n"
        "try:\n"
        "    feast.Entity(name='e', join_keys=['k'], description=123)\n"
        "    print('feast: unchecked')\n"
        "except typeguard.TypeCheckError:\n"
        "    print('feast: checked')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_FEAST_TYPECHECKS"}
    if keep_checks:
        env["MLOPS_FEAST_TYPECHECKS"] = "1"
    env["PYTHONPATH"] = str(REPO_ROOT / "include")
    script = tmp_path / "probe.py"  # typeguard instruments from source: a file, not -c
    script.write_text(probe)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "outside: checked" in out
    assert ("feast: checked" if keep_checks else "feast: unchecked") in out
