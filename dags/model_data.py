"""
### Data pipeline: `<model>__data`

One DAG per model config in `include/models/`. For each daily data interval:

1. **ingest**: batch files named `YYYY-MM-DD*.csv|parquet` at the top of the landing location are copied
   into the immutable, content-addressed raw store. Re-running an interval changes nothing; the same file
   landed for another day is rejected as a duplicate.
2. **validate**: the Great Expectations gate over ALL of the day's files together. The day passes as one
   snapshot (`validated/<model>/date=<day>/data.parquet`, replaced atomically) or is quarantined whole
   with its GX result and report, and the task fails with one line naming the failed expectations.
3. **materialize**: Feast `apply` (idempotent) and materialization of exactly this interval into the
   online store. Emits the `<model>.features` Asset event.

**Which day**: a run processes its data interval, the day that ENDS at its logical date:
`airflow dags test <model>__data 2026-03-11` processes 2026-03-10. To name the days themselves, and run
many in one process, use `make backfill MODEL=<model> START=2026-03-01 END=2026-03-10`.

No landed file for the interval, or a day whose landed content is already published and materialized
(the `<model>__landing` watcher got there first, or a rerun) → the run is skipped, not failed, and emits
no Asset event. Runs for one model and day are serialised by a lock.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, CronDataIntervalTimetable, dag, task

from mlops.core.config import ModelConfig
from mlops.orchestration.dagkit import (
    cron,
    features_asset,
    generate_dags,
    model_dag,
    run_step,
)


def _interval(context: Any) -> tuple[str, str]:
    start, end = context["data_interval_start"], context["data_interval_end"]
    if start is None or end is None:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("this DAG needs a data interval: trigger it with a logical date")
    return start.isoformat(), end.isoformat()


def build_data_dag(cfg: ModelConfig) -> DAG:
    model = cfg.name

    @dag(
        **model_dag(cfg, "data", __doc__), schedule=CronDataIntervalTimetable(cron(cfg.ingest_schedule), timezone="UTC")
    )
    def data_pipeline() -> None:
        @task
        def ingest(**context: Any) -> dict[str, Any]:
            from mlops.data import steps as data_steps

            return run_step(data_steps.ingest, model, *_interval(context))

        @task
        def validate(ingested: dict[str, Any], **context: Any) -> dict[str, Any]:
            from mlops.data import steps as data_steps

            return run_step(data_steps.validate, model, ingested["interval"], *_interval(context))

        @task(outlets=[features_asset(model)])
        def materialize(validated: dict[str, Any], **context: Any) -> dict[str, Any]:
            from mlops.features import steps as feature_steps

            result = run_step(feature_steps.materialize, model, *_interval(context))
            context["outlet_events"][features_asset(model)].extra = {
                "interval": validated["interval"],
                "rows": validated["rows"],
                "snapshot": validated["snapshot"],
            }
            return result

        materialize(validate(ingest()))

    return data_pipeline()


generate_dags(globals(), "data", build_data_dag)
