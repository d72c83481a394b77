"""Ingest: content-addressed, immutable, idempotent per interval; local folder and S3 alike."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from mlops.core.config import get_config
from mlops.core.settings import get_settings
from mlops.core.storage import open_store
from mlops.data import snapshots
from mlops.data.ingest import DuplicateBatchError, ingest_interval, interval_days, pending_days, read_manifest
from mlops_dev.processes import free_port

REPO = Path(__file__).resolve().parents[2]
CFG = get_config("credit_risk", REPO / "include" / "models").config
DAY = datetime(2026, 3, 1, tzinfo=UTC)
NEXT = datetime(2026, 3, 2, tzinfo=UTC)


def _land(root: Path, name: str, content: bytes) -> None:
    (root / "credit_risk").mkdir(parents=True, exist_ok=True)
    (root / "credit_risk" / name).write_bytes(content)


def test_ingest_copies_by_hash_and_is_idempotent(state_dir: Path) -> None:
    landing = state_dir / "landing"
    _land(landing, "2026-03-01.csv", b"a,b\n1,2\n")
    _land(landing, "2026-03-01-extra.parquet", b"PAR1-not-really")
    _land(landing, "2026-03-02.csv", b"other day\n")
    _land(landing, "notes.txt", b"ignored")
    first = ingest_interval(CFG, DAY, NEXT)
    assert [f.name for f in first.files] == ["2026-03-01-extra.parquet", "2026-03-01.csv"]
    assert first.new_objects == 2
    raw = state_dir / "lake" / "raw" / "credit_risk"
    manifest = (raw / "intervals" / "2026-03-01.json").read_bytes()
    objects = sorted(p.name for p in (raw / "objects").rglob("*") if p.is_file())
    assert len(objects) == 2 and all(len(name.split(".")[0]) == 64 for name in objects)

    second = ingest_interval(CFG, DAY, NEXT)
    assert second.new_objects == 0
    assert (raw / "intervals" / "2026-03-01.json").read_bytes() == manifest
    assert sorted(p.name for p in (raw / "objects").rglob("*") if p.is_file()) == objects
    assert [f.sha256 for f in read_manifest(CFG, "2026-03-01", get_settings())] == [f.sha256 for f in first.files]


def test_same_file_landed_for_another_day_is_rejected_and_kept(state_dir: Path) -> None:
    landing = state_dir / "landing"
    _land(landing, "2026-03-01.csv", b"same bytes\n")
    ingest_interval(CFG, DAY, NEXT)
    _land(landing, "2026-03-02.csv", b"same bytes\n")
    with pytest.raises(DuplicateBatchError, match=r"2026-03-02.csv has the same content .* 2026-03-01"):
        ingest_interval(CFG, NEXT, datetime(2026, 3, 3, tzinfo=UTC))
    assert (landing / "credit_risk" / "2026-03-02.csv").exists()  # nothing deleted
    assert read_manifest(CFG, "2026-03-02", get_settings()) == []


def test_pending_days_are_the_landed_days_whose_content_is_new(state_dir: Path) -> None:
    landing = state_dir / "landing"
    assert pending_days(CFG) == []  # no landing folder yet
    _land(landing, "2026-03-02.csv", b"second day\n")
    _land(landing, "2026-03-01.csv", b"first day\n")
    _land(landing, "2026-02-30.csv", b"not a date\n")
    _land(landing, "_READY", b"")
    _land(landing, "2026-03-03.json", b"{}")  # not an accepted format
    assert [d.isoformat() for d in pending_days(CFG)] == ["2026-03-01", "2026-03-02"]
    ingested = ingest_interval(CFG, DAY, NEXT)
    # Ingested is not settled: until the day is published (and materialized) or quarantined, it is pending.
    assert [d.isoformat() for d in pending_days(CFG)] == ["2026-03-01", "2026-03-02"]
    lake = open_store(get_settings().lake_uri)
    snapshots.publish(lake, "credit_risk", "2026-03-01", b"parquet", [f.sha256 for f in ingested.files], rows=1)
    assert [d.isoformat() for d in pending_days(CFG)] == ["2026-03-01", "2026-03-02"]  # not online yet
    snapshots.mark_materialized(lake, "credit_risk", "2026-03-01")
    assert [d.isoformat() for d in pending_days(CFG)] == ["2026-03-02"]
    second = snapshots.content_id([hashlib.sha256(b"second day\n").hexdigest()])
    lake.put(f"{snapshots.quarantine_prefix('credit_risk', '2026-03-02', second)}/reason.txt", b"bad\n")
    assert pending_days(CFG) == []  # a quarantined day's content is settled too
    _land(landing, "2026-03-01.csv", b"first day, corrected\n")  # new content for a published day
    assert [d.isoformat() for d in pending_days(CFG)] == ["2026-03-01"]


def test_no_files_means_empty_result(state_dir: Path) -> None:
    assert ingest_interval(CFG, DAY, NEXT).files == []


def test_interval_days() -> None:
    assert [d.isoformat() for d in interval_days(DAY, datetime(2026, 3, 4, tzinfo=UTC))] == [
        "2026-03-01",
        "2026-03-02",
        "2026-03-03",
    ]


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3-compatible server on loopback (a real HTTP server, reached through boto3)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("MLOPS_S3_ENDPOINT_URL", endpoint)
    try:
        yield endpoint
    finally:
        server.stop()


def test_ingest_from_and_to_s3(state_dir: Path, s3_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="landing")
    s3.create_bucket(Bucket="lake")
    s3.put_object(Bucket="landing", Key="in/credit_risk/2026-03-01.csv", Body=b"x,y\n1,2\n")
    monkeypatch.setenv("MLOPS_LANDING_URI", "s3://landing/in")
    monkeypatch.setenv("MLOPS_LAKE_URI", "s3://lake/prod")
    result = ingest_interval(CFG, DAY, NEXT)
    sha = result.files[0].sha256
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="lake")["Contents"]}
    assert f"prod/raw/credit_risk/objects/{sha[:2]}/{sha}.csv" in keys
    manifest = json.loads(
        s3.get_object(Bucket="lake", Key="prod/raw/credit_risk/intervals/2026-03-01.json")["Body"].read()
    )
    assert manifest["files"][0]["sha256"] == sha
    assert ingest_interval(CFG, DAY, NEXT).new_objects == 0
    store = open_store("s3://lake/prod")
    assert store.exists(f"raw/credit_risk/objects/{sha[:2]}/{sha}.csv")
    assert not store.exists("raw/credit_risk/objects/none")


def test_local_store_refuses_keys_outside_its_root(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "root"))
    with pytest.raises(ValueError, match="escapes"):
        store.put("../outside", b"x")


def test_offline_store_reads_an_s3_lake_through_a_mirror_of_exactly_its_partitions(
    state_dir: Path, s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB cannot read S3 without downloading its httpfs extension: partitions are mirrored."""
    import io

    import pandas as pd

    from mlops.features.store import labels_for_window, sync_validated, validated_root
    from mlops_dev.datagen import GENERATORS

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="lake")
    monkeypatch.setenv("MLOPS_LAKE_URI", "s3://lake/prod")
    for day in ("2026-03-01", "2026-03-02"):
        buffer = io.BytesIO()
        GENERATORS["credit_risk"](datetime.fromisoformat(day).date(), rows_per_batch=50).to_parquet(buffer)
        s3.put_object(Bucket="lake", Key=f"prod/{snapshots.validated_key('credit_risk', day)}", Body=buffer.getvalue())
    assert validated_root().startswith(str(state_dir))
    window = labels_for_window(CFG, DAY, datetime(2026, 3, 3, tzinfo=UTC))
    assert len(window) == 100 and set(window.columns) == {"customer_id", "event_timestamp", "defaulted"}
    assert sync_validated(CFG) == 0  # already mirrored: nothing fetched again

    # A partition file that leaves the lake leaves the mirror: reads match the lake exactly.
    s3.delete_object(Bucket="lake", Key="prod/validated/credit_risk/date=2026-03-02/data.parquet")
    assert len(labels_for_window(CFG, DAY, datetime(2026, 3, 3, tzinfo=UTC))) == 50
    mirrored = sorted(p.relative_to(validated_root()).as_posix() for p in Path(validated_root()).rglob("*.parquet"))
    assert mirrored == ["credit_risk/date=2026-03-01/data.parquet"]
    assert len(pd.read_parquet(Path(validated_root()) / mirrored[0])) == 50

    # A corrected day replaces its snapshot in the lake: the mirror fetches the new version.
    buffer = io.BytesIO()
    GENERATORS["credit_risk"](DAY.date(), rows_per_batch=70).to_parquet(buffer)
    s3.put_object(Bucket="lake", Key="prod/validated/credit_risk/date=2026-03-01/data.parquet", Body=buffer.getvalue())
    assert len(labels_for_window(CFG, DAY, datetime(2026, 3, 3, tzinfo=UTC))) == 70


def test_s3_landing_scan_and_copy_into_a_local_lake(
    state_dir: Path, s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches are streamed from S3 into the local raw store; nested keys and other names are reported."""
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="landing")
    body = b"x,y\n1,2\n"
    s3.put_object(Bucket="landing", Key="in/credit_risk/2026-03-01.csv", Body=body)
    s3.put_object(Bucket="landing", Key="in/credit_risk/old/2026-03-02.csv", Body=b"nested\n")
    s3.put_object(Bucket="landing", Key="in/credit_risk/.2026-03-03.csv", Body=b"hidden\n")
    monkeypatch.setenv("MLOPS_LANDING_URI", "s3://landing/in")
    from mlops.data.ingest import landing_store, scan_landing

    scan = scan_landing(CFG, landing_store(CFG, get_settings()))
    assert [(f.key, f.size) for files in scan.batches.values() for f in files] == [("2026-03-01.csv", len(body))]
    assert [line.split(":")[0] for line in scan.ignored] == [
        "ignored landing entry '.2026-03-03.csv'",
        "ignored landing entry 'old'",
    ]
    result = ingest_interval(CFG, DAY, NEXT)
    sha = result.files[0].sha256
    assert sha == hashlib.sha256(body).hexdigest()
    raw = state_dir / "lake" / "raw" / "credit_risk" / "objects" / sha[:2] / f"{sha}.csv"
    assert raw.read_bytes() == body
    assert not list((state_dir / "lake" / "raw" / "credit_risk" / ".staging").iterdir())
