"""S3 landing events: the bucket notification and SQS queue that start ``<model>__landing`` in production.

When the landing root (``MLOPS_LANDING_URI``) is ``s3://``, every object created under a model's landing
prefix (``<root>/<model>/``) is announced by S3 to that model's SQS queue (``MLOPS_LANDING_QUEUE_URL``, a
template with ``{model}``). An Airflow ``AssetWatcher`` in the triggerer long-polls the queue, deletes what
it receives and emits a ``<model>.landed`` Asset event, which starts ``<model>__landing``: no polling DAG,
no worker slot held while waiting.

Operators wire a model once (idempotent; run it again after changing the landing root or the queue)::

    python -m mlops.data.landing_events setup --model credit_risk      # or no --model: every model config

It creates the queue if it is missing, lets the bucket send to it (the queue policy), and adds or updates
the bucket's notification for the model's prefix, keeping every other notification of the bucket. S3
answers a new notification with an ``s3:TestEvent`` message (no Records): the landing run it starts finds
no pending day and skips. The credentials are the operator's (boto3's usual chain; ``MLOPS_S3_ENDPOINT_URL``
and ``AWS_ENDPOINT_URL_SQS`` for S3/SQS-compatible servers); the watcher only needs to receive and delete
messages, through its Airflow connection (``MLOPS_LANDING_QUEUE_CONN_ID``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mlops.core.settings import LandingQueue

if TYPE_CHECKING:
    from airflow.triggers.base import BaseEventTrigger

# What ``MessageQueueTrigger(scheme="sqs")`` serializes to (the triggerer runs this class).
SQS_TRIGGER = "airflow.providers.amazon.aws.triggers.sqs.SqsSensorTrigger"
# Long polling: a receive call waits up to 20 s (the SQS maximum) and returns as soon as a message
# arrives, so a landed file starts its run within about a second at ~3 requests a minute per model.
WAIT_TIME_SECONDS = 20
WAITER_DELAY_SECONDS = 1
MAX_MESSAGES = 10
S3_EVENTS = ["s3:ObjectCreated:*"]
POLICY_SID = "mlops-landing-s3-events"


class LandingEventsError(RuntimeError):
    """The landing events of a model cannot be wired as configured; the message names the fix."""


def queue_trigger(queue: LandingQueue) -> BaseEventTrigger:
    """The watcher's trigger for a model's landing queue: long-poll, delete what was received, fire once.

    ``MessageQueueTrigger`` (common-messaging provider) with ``scheme="sqs"`` hands these arguments to the
    amazon provider's SQS trigger, which reads the queue through the Airflow connection ``queue.conn_id``
    (its extra's ``endpoint_url`` for an SQS-compatible server). Building it creates no client.
    """
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    return MessageQueueTrigger(
        scheme="sqs",
        sqs_queue=queue.url,
        aws_conn_id=queue.conn_id,
        max_messages=MAX_MESSAGES,
        wait_time_seconds=WAIT_TIME_SECONDS,
        waiter_delay=WAITER_DELAY_SECONDS,
    )


# ------------------------------------------------------------------------------------------- set-up


@dataclass(frozen=True)
class LandingEvents:
    """How one model's landing events are wired (what ``setup`` made sure of)."""

    model: str
    bucket: str
    prefix: str
    queue_url: str
    queue_arn: str
    notification_id: str
    notification_changed: bool


def notification_id(model: str) -> str:
    return f"mlops-landing-{model}"


def _rules(config: dict[str, Any]) -> dict[str, str]:
    rules = config.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    return {str(rule["Name"]).lower(): str(rule["Value"]) for rule in rules}


def _same(current: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    if current is None:
        return False
    return (
        current.get("QueueArn") == wanted["QueueArn"]
        and sorted(current.get("Events", [])) == sorted(wanted["Events"])
        and _rules(current) == _rules(wanted)
    )


def _queue_policy(existing: str | None, queue_arn: str, bucket: str) -> str:
    """The queue's policy with our one statement (S3 may send from this bucket), other statements kept."""
    policy: dict[str, Any] = json.loads(existing) if existing else {"Version": "2012-10-17", "Statement": []}
    statements = [s for s in policy.get("Statement", []) if s.get("Sid") != POLICY_SID]
    statements.append(
        {
            "Sid": POLICY_SID,
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}},
        }
    )
    policy["Statement"] = statements
    return json.dumps(policy, sort_keys=True)


def setup(model: str, *, s3: Any | None = None, sqs: Any | None = None) -> LandingEvents:
    """Wire S3 event notifications of ``model``'s landing prefix to its SQS queue (idempotent)."""
    import boto3

    from mlops.core.config import get_config
    from mlops.core.settings import LANDING_QUEUE_URL, get_settings, landing_queue
    from mlops.core.storage import S3Store
    from mlops.data.ingest import landing_store

    cfg = get_config(model).config
    queue = landing_queue(model)
    if queue is None:
        raise LandingEventsError(
            f"{LANDING_QUEUE_URL} is not set: set it to the queue URL template, e.g. "
            "https://sqs.eu-west-1.amazonaws.com/123456789012/mlops-landing-{model}"
        )
    store = landing_store(cfg, get_settings())
    if not isinstance(store, S3Store):
        raise LandingEventsError(
            f"{model} lands in {store.uri}, not in S3: S3 event notifications need an s3:// MLOPS_LANDING_URI "
            "(a local landing folder is watched through the ready flag instead)"
        )
    s3 = s3 or store.client
    sqs = sqs or boto3.client("sqs")
    url = str(sqs.create_queue(QueueName=queue.name)["QueueUrl"])  # returns the existing queue's URL
    if url.rstrip("/") != queue.url.rstrip("/"):
        raise LandingEventsError(
            f"queue {queue.name} is {url}, but {LANDING_QUEUE_URL} gives {queue.url} for {model}: fix the region "
            "or account in the template, or run with credentials of the queue's account and region"
        )
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn", "Policy"])["Attributes"]
    arn = str(attributes["QueueArn"])
    policy = _queue_policy(attributes.get("Policy"), arn, store.bucket)
    if attributes.get("Policy") != policy:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": policy})

    prefix = f"{store.prefix}/" if store.prefix else ""
    wanted: dict[str, Any] = {
        "Id": notification_id(model),
        "QueueArn": arn,
        "Events": S3_EVENTS,
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
    }
    current = s3.get_bucket_notification_configuration(Bucket=store.bucket)
    current.pop("ResponseMetadata", None)
    queues = current.get("QueueConfigurations", [])
    ours = next((c for c in queues if c.get("Id") == wanted["Id"]), None)
    changed = not _same(ours, wanted)
    if changed:
        current["QueueConfigurations"] = [c for c in queues if c.get("Id") != wanted["Id"]] + [wanted]
        s3.put_bucket_notification_configuration(Bucket=store.bucket, NotificationConfiguration=current)
    return LandingEvents(
        model=model,
        bucket=store.bucket,
        prefix=prefix,
        queue_url=url,
        queue_arn=arn,
        notification_id=wanted["Id"],
        notification_changed=changed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    from mlops.core.config import ConfigError
    from mlops.core.settings import SettingsError
    from mlops.orchestration.dagkit import load_model_configs

    parser = argparse.ArgumentParser(prog="python -m mlops.data.landing_events", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    wire = commands.add_parser("setup", help="create the queue and the bucket notification (idempotent)")
    wire.add_argument("--model", action="append", help="model name (repeatable); default: every model config")
    args = parser.parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    models = args.model or sorted(loaded.config.name for loaded in load_model_configs()[0])
    for model in models:
        try:
            print(json.dumps(asdict(setup(model))))
        except (LandingEventsError, SettingsError, ConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except (BotoCoreError, ClientError) as exc:  # e.g. no permission, no such bucket, a store without SQS
            print(f"error: {model}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
