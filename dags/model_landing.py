"""
### Landing watcher: `<model>__landing`

Event-driven ingestion. The producer lands batch files (`YYYY-MM-DD*.csv|parquet`) in the model's landing
location; an AssetWatcher in Airflow's triggerer emits a `<model>.landed` Asset event, which starts this DAG:

- **S3 (production)**: S3 event notifications of the model's prefix go to its SQS queue
  (`MLOPS_LANDING_QUEUE_URL`, wired by `python -m mlops.data.landing_events setup`); the watcher receives and
  deletes them. S3's `s3:TestEvent` and events of files already ingested find no pending day: the run skips.
- **Local folder**: the producer then writes the ready flag (`source.ready_flag`, `_READY` by default); the
  watcher deletes it.

Airflow may merge a burst of events into one run, so the run works out the pending days itself:

1. **find_new_batches**: days whose landed content is neither published nor quarantined yet (skipped when
   none). Only `YYYY-MM-DD*.csv|parquet` files at the top of the landing folder are batches; anything
   else (folders, hidden files, links, ...) is logged with a reason and never blocks the other days.
2. **process**: one task instance per such day (dynamic task mapping: each day is its own box in the
   grid, named by the day), one at a time, oldest first: the data DAG's steps, i.e. ingest into the
   content-addressed raw store, the Great Expectations gate over the day's files as one snapshot, Feast
   materialization. A bad day is quarantined (its instance succeeds with the quarantine line) and the
   other days still go through; a day already published and online skips.
3. **publish**: emits `<model>.features` (scoring) and `<model>.labels` (retraining, when the config's
   `retraining.on_new_labels` is on) for the days that passed. When every batch is quarantined it fails
   instead and no Asset event is emitted; when every day skipped, it skips.
4. **verdict**: fails the run with one line per quarantined batch; nothing is deleted.

The daily `<model>__data` DAG keeps running on its schedule: a day is processed by whichever path comes
first (a per-day lock serialises them) and the other one skips without emitting an Asset event.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, dag, task
from airflow.sdk.exceptions import AirflowFailException

from mlops.core.config import ModelConfig
from mlops.orchestration.dagkit import (
    features_asset,
    generate_dags,
    labels_asset,
    landed_asset,
    landing_watch,
    model_dag,
    run_step,
)


def build_landing_dag(cfg: ModelConfig) -> DAG:
    model = cfg.name
    landed = landed_asset(cfg)
    common = model_dag(cfg, "landing", __doc__, tags=("data", "event-driven"))
    common["doc_md"] += f"\n\n**Started by**: {landing_watch(landed)}."

    @dag(**common, schedule=[landed])
    def landing_pipeline() -> None:
        @task
        def find_new_batches() -> list[str]:
            from mlops.data import steps as data_steps

            return run_step(data_steps.pending_landed_days, model)

        # One task instance per day, named by its day in the grid; one at a time, oldest first.
        @task(map_index_template="{{ task.op_kwargs['day'] }}", max_active_tis_per_dagrun=1)
        def process(day: str) -> dict[str, Any]:
            from mlops.data import steps as data_steps

            return run_step(data_steps.process_landed_one, model, day)

        @task(outlets=[features_asset(model), labels_asset(model)], trigger_rule="none_failed_min_one_success")
        def publish(results: list[dict[str, Any]], **context: Any) -> dict[str, Any]:
            from mlops.data import steps as data_steps

            result = run_step(data_steps.landed_summary, model, list(results))
            if not result["intervals"]:  # a failed task emits no Asset event
                raise AirflowFailException("every landed batch was quarantined: " + " | ".join(result["quarantined"]))
            extra = {"intervals": result["intervals"], "rows": result["rows"]}
            outlet_events = context["outlet_events"]
            outlet_events[features_asset(model)].extra = extra
            outlet_events[labels_asset(model)].extra = extra
            return result

        @task
        def verdict(result: dict[str, Any]) -> dict[str, Any]:
            if result["quarantined"]:
                raise AirflowFailException(
                    f"{len(result['quarantined'])} landed batch(es) quarantined: " + " | ".join(result["quarantined"])
                )
            return {"processed": result["intervals"], "rows": result["rows"], "ignored": result["ignored"]}

        verdict(publish(process.expand(day=find_new_batches())))

    return landing_pipeline()


generate_dags(globals(), "landing", build_landing_dag)
