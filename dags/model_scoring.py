"""
### Batch scoring: `<model>__scoring`

Runs on every `<model>.features` Asset event (a batch was validated and materialized). For each
interval behind the run it scores the batch's entities with `models:/<model>@champion`, features from
the Feast online store, and writes the predictions with the model version and run id beside every row.
When a `challenger` alias exists, the batch is also scored in **shadow** (stored apart, never served) and
the comparison is logged to MLflow. The model is verified against the checksum recorded at registration
and cached per version. Emits `<model>.predictions`.

An event-triggered run also scores every validated day newer than the newest scored one: Airflow may
merge a burst of events into one run without listing them all (apache/airflow#56749), and no batch may
be left unscored.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, dag, task

from mlops.core.config import ModelConfig
from mlops.orchestration.dagkit import (
    features_asset,
    generate_dags,
    intervals_param,
    model_dag,
    predictions_asset,
    requested_intervals,
    run_each,
)


def build_scoring_dag(cfg: ModelConfig) -> DAG:
    model = cfg.name

    @dag(
        **model_dag(cfg, "scoring", __doc__, describe=False),
        schedule=[features_asset(model)],
        params={"intervals": intervals_param()},
    )
    def scoring_pipeline() -> None:
        @task(outlets=[predictions_asset(model)])
        def score(**context: Any) -> dict[str, Any]:
            from mlops.model import scoring
            from mlops.quality import monitoring

            intervals = requested_intervals(context, features_asset(model), lambda: monitoring.scoring_backlog(model))
            if not intervals:
                from airflow.sdk.exceptions import AirflowSkipException

                raise AirflowSkipException("no features event behind this run: nothing to score")
            results = run_each(scoring.score_interval, model, intervals, run_id=context["run_id"])
            latest = results[-1]
            context["outlet_events"][predictions_asset(model)].extra = {
                "interval": latest["interval"],
                "intervals": intervals,
                "champion_version": latest["champion_version"],
                "rows": sum(r["rows"] for r in results),
            }
            return {"scored": results}

        score()

    return scoring_pipeline()


generate_dags(globals(), "scoring", build_scoring_dag)
