"""Event-driven landing in S3, through Airflow's real scheduler, dag-processor and triggerer.

Files land in S3 (moto's server, a process) → S3 event notifications to the model's SQS queue (wired by
``mlops.data.landing_events.setup``) → the AssetWatcher's ``MessageQueueTrigger`` in the triggerer → an
``<model>.landed`` Asset event → ``<model>__landing`` ingests, validates and materializes every new day,
emitting the day's ``<model>.features`` event once. The lake is in S3 too. The Airflow deployment
carries only the landing DAG file: the features event's consumers (scoring, monitoring) are tested
elsewhere, and would only load the two cores here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from mlops.core.config import get_config
from mlops.core.settings import get_settings
from mlops.data.ingest import pending_days
from mlops.data.landing_events import LandingEvents, setup
from mlops_dev.services import AirflowServices, RunInfo, asset_events

pytestmark = pytest.mark.integration

MODEL = "credit_risk"
DAG_ID = f"{MODEL}__landing"
DAYS = [date(2026, 3, 1), date(2026, 3, 2)]
REPO = Path(__file__).resolve().parents[2]
CONN_ID = "mlops_landing_events"


@dataclass
class Landing:
    services: AirflowServices
    wired: LandingEvents
    s3: Any
    sqs: Any


@pytest.fixture
def s3_landing(state_dir: Path, moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LandingEvents:
    """Landing and lake in S3; the model's prefix wired to its queue (S3 queues its test event at once)."""
    models = tmp_path / "models"
    models.mkdir()
    config = yaml.safe_load((REPO / "include" / "models" / f"{MODEL}.yaml").read_text())
    config["training"]["schedule"] = None
    (models / f"{MODEL}.yaml").write_text(yaml.safe_dump(config))
    s3 = boto3.client("s3", endpoint_url=moto_server)
    for bucket in ("landing", "lake"):
        s3.create_bucket(Bucket=bucket)
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    monkeypatch.setenv("MLOPS_LANDING_URI", "s3://landing/landing")
    monkeypatch.setenv("MLOPS_LAKE_URI", "s3://lake/lake")
    monkeypatch.setenv("MLOPS_LANDING_QUEUE_URL", f"{moto_server}/123456789012/mlops-landing-{{model}}")
    monkeypatch.setenv("MLOPS_LANDING_QUEUE_CONN_ID", CONN_ID)
    return setup(MODEL)


@pytest.fixture
def landing(s3_landing: LandingEvents, moto_server: str, state_dir: Path, tmp_path: Path) -> Iterator[Landing]:
    """Airflow's processes on this test's own SQLite DB, with only the landing DAG file; stopped by pid."""
    from airflow import settings

    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(REPO / "dags" / "model_landing.py", dags / "model_landing.py")
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": moto_server, "region_name": "us-east-1"},
    }
    extra_env = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(connection),
    }
    services = AirflowServices(get_settings(), state_dir / "services-logs", extra_env=extra_env)
    services.env.pop("AWS_ENDPOINT_URL_SQS")  # the watcher must reach the queue through its connection alone
    with pytest.MonkeyPatch.context() as patch:  # this process reads the runs and events of the same DB
        patch.setenv("AIRFLOW_HOME", services.env["AIRFLOW_HOME"])
        patch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", services.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        settings.configure_vars()
        settings.reconfigure_orm()
        try:
            services.start()
            yield Landing(
                services=services,
                wired=s3_landing,
                s3=boto3.client("s3", endpoint_url=moto_server),
                sqs=boto3.client("sqs", endpoint_url=moto_server),
            )
        finally:
            services.stop()
    settings.configure_vars()
    settings.reconfigure_orm()
    assert all(proc.poll() is not None for proc in services.procs.values())


def _bodies(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The S3 notifications an Asset event of the watcher carries (its trigger's message batch)."""
    return [json.loads(m["Body"]) for m in event["extra"]["payload"]["message_batch"]]


def _keys(events: list[dict[str, Any]]) -> list[str]:
    return [r["s3"]["object"]["key"] for e in events for b in _bodies(e) for r in b.get("Records", [])]


def _finished(services: AirflowServices) -> list[RunInfo]:
    return [r for r in services.runs(DAG_ID) if r.state in ("success", "failed")]


def test_files_landed_in_s3_start_the_landing_dag_once_per_day(landing: Landing) -> None:
    airflow = landing.services

    # S3's test event, queued when the bucket was wired, reaches the watcher first: a run that finds no
    # pending day and skips, emitting nothing.
    (first,) = airflow.wait("the run started by S3's test event", lambda: _finished(airflow), 300)
    states = airflow.task_states(DAG_ID, first.run_id)
    assert first.state == "success" and first.run_type == "asset_triggered", states
    assert states == {"find_new_batches": "skipped", "process": "skipped", "publish": "skipped", "verdict": "skipped"}
    (test_event,) = asset_events(f"{MODEL}.landed")
    assert [b.get("Event") for b in _bodies(test_event)] == ["s3:TestEvent"]
    assert first.consumed_event_ids == [test_event["id"]]
    assert asset_events(f"{MODEL}.features") == []

    # Two days land back to back; however Airflow groups their events into runs, each day is processed
    # and announced exactly once.
    from mlops_dev.datagen import GENERATORS

    for day in DAYS:
        body = GENERATORS[MODEL](day, rows_per_batch=300).to_csv(index=False).encode()
        landing.s3.put_object(Bucket=landing.wired.bucket, Key=f"{landing.wired.prefix}{day}.csv", Body=body)
    expected_keys = [f"landing%2F{MODEL}%2F{day}.csv" for day in DAYS]

    def settled() -> list[RunInfo] | None:
        """Every notification received, every landed event consumed by a finished run."""
        events = asset_events(f"{MODEL}.landed")
        if not set(expected_keys) <= set(_keys(events)):
            return None
        runs = airflow.runs(DAG_ID)
        consumed = {i for r in runs for i in r.consumed_event_ids}
        done = all(r.state in ("success", "failed") for r in runs) and {e["id"] for e in events} <= consumed
        return runs if done else None

    runs = airflow.wait("both days' notifications to be processed", settled, 600, poll=2)
    assert [r.state for r in runs] == ["success"] * len(runs), [airflow.task_states(DAG_ID, r.run_id) for r in runs]
    assert {r.run_type for r in runs} == {"asset_triggered"}
    features = asset_events(f"{MODEL}.features")
    announced = [day for e in features for day in e["extra"]["intervals"]]
    assert sorted(announced) == [str(day) for day in DAYS]  # each day once, none twice
    assert all(e["source_dag_id"] == DAG_ID for e in features)
    assert sorted(_keys(asset_events(f"{MODEL}.landed"))) == expected_keys  # each notification once

    # Nothing is left behind: the queue is drained, and every landed byte is in the raw store.
    attributes = landing.sqs.get_queue_attributes(
        QueueUrl=landing.wired.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    assert pending_days(get_config(MODEL).config) == []
