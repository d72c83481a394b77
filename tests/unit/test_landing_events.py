"""S3 landing events: the queue setting, the watcher's trigger, and the operator's set-up on moto's server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import boto3
import pytest

from mlops.core.config import get_config
from mlops.core.settings import LandingQueue, SettingsError, get_settings, landing_queue
from mlops.data.ingest import landing_store
from mlops.data.landing_events import SQS_TRIGGER, LandingEventsError, main, notification_id, queue_trigger, setup
from mlops.orchestration.dagkit import landed_asset, landing_watch

REPO = Path(__file__).resolve().parents[2]
CFG = get_config("credit_risk", REPO / "include" / "models").config
TEMPLATE = "https://sqs.eu-west-1.amazonaws.com/123456789012/mlops-landing-{model}"


def test_queue_setting_is_a_template_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_LANDING_QUEUE_URL", raising=False)
    monkeypatch.delenv("MLOPS_LANDING_QUEUE_CONN_ID", raising=False)
    assert landing_queue("credit_risk") is None
    monkeypatch.setenv("MLOPS_LANDING_QUEUE_URL", TEMPLATE)
    queue = landing_queue("credit_risk")
    assert queue == LandingQueue(
        url="https://sqs.eu-west-1.amazonaws.com/123456789012/mlops-landing-credit_risk", conn_id="aws_default"
    )
    assert queue.name == "mlops-landing-credit_risk"
    monkeypatch.setenv("MLOPS_LANDING_QUEUE_CONN_ID", "landing_events")
    assert landing_queue("tumor_diagnosis") == LandingQueue(
        url="https://sqs.eu-west-1.amazonaws.com/123456789012/mlops-landing-tumor_diagnosis", conn_id="landing_events"
    )


@pytest.mark.parametrize(
    "template",
    [
        "https://sqs.eu-west-1.amazonaws.com/123456789012/mlops-landing",  # one queue for every model
        "https://sqs.eu-west-1.amazonaws.com/123456789012/{model}-{model}",
        "https://sqs.eu-west-1.amazonaws.com/123456789012/{model.__class__}",
        "https://sqs.eu-west-1.amazonaws.com/{account}/mlops-landing-{model}",
        "sqs://mlops-landing-{model}",
        "https://sqs.eu-west-1.amazonaws.com/{model}/landing",  # the model is not in the queue name
    ],
)
def test_a_malformed_queue_template_is_refused(monkeypatch: pytest.MonkeyPatch, template: str) -> None:
    monkeypatch.setenv("MLOPS_LANDING_QUEUE_URL", template)
    with pytest.raises(SettingsError, match="MLOPS_LANDING_QUEUE_URL must"):
        landing_queue("credit_risk")


def test_the_watcher_trigger_long_polls_the_queue_through_the_connection() -> None:
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    trigger = queue_trigger(LandingQueue(url="https://sqs.eu-west-1.amazonaws.com/1/q", conn_id="landing_events"))
    assert isinstance(trigger, MessageQueueTrigger)
    classpath, kwargs = trigger.serialize()  # what the triggerer runs
    assert classpath == SQS_TRIGGER
    assert kwargs["sqs_queue"] == "https://sqs.eu-west-1.amazonaws.com/1/q"
    assert kwargs["aws_conn_id"] == "landing_events"
    assert kwargs["delete_message_on_reception"] is True  # a received message is never seen twice
    assert kwargs["wait_time_seconds"] == 20  # long polling: no busy loop
    assert kwargs["waiter_delay"] <= 1  # and no minute-long sleep after an empty poll (the default is 60 s)


def test_s3_landing_asset_is_the_prefix_watched_through_its_queue(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_LANDING_URI", "s3://landing-bucket/landing")
    monkeypatch.setenv("MLOPS_LANDING_QUEUE_URL", TEMPLATE)
    monkeypatch.setenv("MLOPS_LANDING_QUEUE_CONN_ID", "landing_events")
    asset = landed_asset(CFG)
    assert asset.name == "credit_risk.landed"
    assert asset.uri == "s3://landing-bucket/landing/credit_risk" == landing_store(CFG, get_settings()).uri
    (watcher,) = asset.watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath == SQS_TRIGGER
    assert kwargs["sqs_queue"] == TEMPLATE.replace("{model}", "credit_risk")
    assert kwargs["aws_conn_id"] == "landing_events"
    assert "mlops-landing-credit_risk" in landing_watch(asset)

    monkeypatch.delenv("MLOPS_LANDING_QUEUE_URL")  # S3 without a queue: no watcher, and the docs say so
    asset = landed_asset(CFG)
    assert asset.watchers == [] and asset.uri == "s3://landing-bucket/landing/credit_risk"
    assert landing_watch(asset).startswith("no watcher")


def test_a_local_landing_folder_keeps_the_ready_flag_even_with_a_queue_set(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_LANDING_QUEUE_URL", TEMPLATE)  # set for the S3 models; this one lands locally
    asset = landed_asset(CFG)
    (watcher,) = asset.watchers
    assert watcher.trigger.serialize()[0].endswith("FileDeleteTrigger")
    assert asset.uri == (state_dir / "landing" / "credit_risk").as_uri()
    assert landing_watch(asset) == f"the ready flag `{state_dir / 'landing' / 'credit_risk' / '_READY'}`"


def _parse_landing_dags(env: dict[str, str]) -> dict[str, Any]:
    """Import dags/model_landing.py in a fresh interpreter: its watchers, SQL statements and connections made."""
    code = textwrap.dedent(f"""
        import importlib.util, json, socket
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
        queries, connects = [], []
        event.listen(Engine, "before_cursor_execute", lambda *a, **k: queries.append(a[2]))
        real_connect = socket.socket.connect
        def connect(sock, address):
            connects.append(repr(address))
            return real_connect(sock, address)
        socket.socket.connect = connect
        spec = importlib.util.spec_from_file_location("model_landing", {str(REPO / "dags" / "model_landing.py")!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        dag = module.credit_risk__landing
        (asset,) = dag.timetable.asset_condition.objects
        print(json.dumps({{
            "uri": asset.uri,
            "watchers": [w.trigger.serialize()[0] for w in asset.watchers],
            "doc": dag.doc_md,
            "queries": len(queries),
            "connects": connects,
        }}))
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def test_parsing_the_landing_dags_on_s3_makes_no_call(state_dir: Path) -> None:
    """The watcher is built from settings alone: no AWS call, no connection lookup, no DB access."""
    env = {
        "MLOPS_MODELS_DIR": str(REPO / "include" / "models"),
        "MLOPS_LANDING_URI": "s3://landing-bucket/landing",
        "MLOPS_LANDING_QUEUE_URL": TEMPLATE,
    }
    parsed = _parse_landing_dags(env)
    assert parsed["uri"] == "s3://landing-bucket/landing/credit_risk"
    assert parsed["watchers"] == [SQS_TRIGGER]
    assert "mlops-landing-credit_risk" in parsed["doc"]
    assert parsed["queries"] == 0 and parsed["connects"] == []


def test_a_malformed_queue_template_is_an_import_error_naming_the_setting(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("MLOPS_LANDING_URI", "s3://landing-bucket/landing")
    monkeypatch.setenv("MLOPS_LANDING_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/123456789012/landing")
    bag = DagBag(dag_folder=str(REPO / "dags" / "model_landing.py"))
    (error,) = bag.import_errors.values()
    assert "MLOPS_LANDING_QUEUE_URL must contain {model}" in error


# ------------------------------------------------------------------------- set-up, on moto's server


def _clients(endpoint: str) -> tuple[Any, Any]:
    return boto3.client("s3", endpoint_url=endpoint), boto3.client("sqs", endpoint_url=endpoint)


def _receive(sqs: Any, url: str) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def test_setup_wires_the_prefix_to_the_queue_idempotently(
    state_dir: Path, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3, sqs = _clients(moto_server)
    s3.create_bucket(Bucket="landing")
    other = sqs.create_queue(QueueName="someone-elses")["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    foreign = {
        "Id": "someone-elses",
        "QueueArn": other_arn,
        "Events": ["s3:ObjectRemoved:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "elsewhere/"}]}},
    }
    s3.put_bucket_notification_configuration(
        Bucket="landing", NotificationConfiguration={"QueueConfigurations": [foreign]}
    )
    _receive(sqs, other)
    monkeypatch.setenv("MLOPS_LANDING_URI", "s3://landing/in")
    monkeypatch.setenv("MLOPS_LANDING_QUEUE_URL", f"{moto_server}/123456789012/mlops-landing-{{model}}")

    first = setup("credit_risk")
    assert first.notification_changed
    assert (first.bucket, first.prefix) == ("landing", "in/credit_risk/")
    assert first.queue_url == f"{moto_server}/123456789012/mlops-landing-credit_risk"
    configs = s3.get_bucket_notification_configuration(Bucket="landing")["QueueConfigurations"]
    assert foreign in configs  # the bucket's other notifications are kept
    (ours,) = [c for c in configs if c["Id"] == notification_id("credit_risk")]
    assert ours["QueueArn"] == first.queue_arn and ours["Events"] == ["s3:ObjectCreated:*"]
    assert ours["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "in/credit_risk/"}]
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=first.queue_url, AttributeNames=["Policy"])["Attributes"]["Policy"]
    )
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"] == {"ArnLike": {"aws:SourceArn": "arn:aws:s3:::landing"}}

    second = setup("credit_risk")  # a second run changes nothing
    assert not second.notification_changed and second.queue_arn == first.queue_arn
    assert s3.get_bucket_notification_configuration(Bucket="landing")["QueueConfigurations"] == configs

    # S3's test event, then one message per object under the model's prefix only, the key URL-encoded.
    s3.put_object(Bucket="landing", Key="in/credit_risk/2026-03-01.csv", Body=b"a,b\n1,2\n")
    s3.put_object(Bucket="landing", Key="in/tumor_diagnosis/2026-03-01.csv", Body=b"a,b\n1,2\n")
    bodies = _receive(sqs, first.queue_url)
    assert [b.get("Event") for b in bodies if "Records" not in b] == ["s3:TestEvent"]
    keys = [r["s3"]["object"]["key"] for b in bodies for r in b.get("Records", [])]
    assert keys == ["in%2Fcredit_risk%2F2026-03-01.csv"]


def test_setup_refuses_what_cannot_work(state_dir: Path, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    s3, _ = _clients(moto_server)
    s3.create_bucket(Bucket="landing")
    monkeypatch.setenv("MLOPS_LANDING_URI", "s3://landing/in")
    monkeypatch.delenv("MLOPS_LANDING_QUEUE_URL", raising=False)
    with pytest.raises(LandingEventsError, match="MLOPS_LANDING_QUEUE_URL is not set"):
        setup("credit_risk")
    # The template names another account than the credentials': the watcher would poll a queue nobody feeds.
    monkeypatch.setenv("MLOPS_LANDING_QUEUE_URL", f"{moto_server}/999999999999/mlops-landing-{{model}}")
    with pytest.raises(LandingEventsError, match="fix the region or account"):
        setup("credit_risk")
    monkeypatch.setenv("MLOPS_LANDING_URI", str(state_dir / "landing"))  # a local folder has the ready flag
    with pytest.raises(LandingEventsError, match="need an s3:// MLOPS_LANDING_URI"):
        setup("credit_risk")


def test_setup_command_line(
    state_dir: Path, moto_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    s3, _ = _clients(moto_server)
    s3.create_bucket(Bucket="landing")
    monkeypatch.setenv("MLOPS_LANDING_URI", "s3://landing")
    assert main(["setup", "--model", "credit_risk"]) == 1
    assert "error: MLOPS_LANDING_QUEUE_URL is not set" in capsys.readouterr().err
    monkeypatch.setenv("MLOPS_LANDING_QUEUE_URL", f"{moto_server}/123456789012/mlops-landing-{{model}}")
    monkeypatch.setenv("MLOPS_LANDING_URI", "s3://no-such-bucket/landing")
    assert main(["setup", "--model", "credit_risk"]) == 1
    assert "error: credit_risk: " in (err := capsys.readouterr().err) and "NoSuchBucket" in err
    monkeypatch.setenv("MLOPS_LANDING_URI", "s3://landing")
    assert main(["setup"]) == 0  # every model config
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(p["model"], p["prefix"]) for p in printed] == [
        ("credit_risk", "credit_risk/"),
        ("tumor_diagnosis", "tumor_diagnosis/"),
    ]
