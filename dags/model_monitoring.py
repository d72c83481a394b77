"""
### Monitoring: `<model>__monitoring`

Runs on every `<model>.predictions` Asset event. For the scored interval it measures, against the
champion's reference (its training rows and holdout scores):

- **feature drift** (Evidently) and **prediction drift** (Kolmogorov-Smirnov on the scores);
- **quality** on the labelled rows, against the config's hard guardrails.

Reports (HTML + JSON) are kept per interval and logged to the `<model>__monitoring` MLflow experiment;
each interval's result is also written to the lake (`monitoring/<model>/date=<day>/result.json`). An
event-triggered run also monitors every scored day newer than the newest monitored one, so events that
Airflow merged without listing them (apache/airflow#56749) are not lost.

- **emit_drift** emits the `<model>.drift` Asset event (which schedules `<model>__training`) only when
  drift passes the config's threshold; otherwise it is skipped and no event is emitted.
- **circuit_breaker** rolls `champion` back to the previous champion when a quality guardrail is
  breached (the same code path as `<model>__rollback`), only if the newest breached version (by number)
  is still the champion, checked under the model's alias lock; it is skipped otherwise.
- **registry_doctor** checks the registry's invariants beside them (see the README's "Registry safety").
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from mlops.core.config import ModelConfig
from mlops.orchestration.dagkit import (
    doctor_task,
    drift_asset,
    generate_dags,
    intervals_param,
    model_dag,
    predictions_asset,
    requested_intervals,
    run_each,
    run_step,
)


def _monitor(model: str, context: Any) -> dict[str, Any]:
    """Monitor every interval behind the run; the drift event's extra and the guardrail breaches."""
    from mlops.quality import monitoring

    intervals = requested_intervals(context, predictions_asset(model), lambda: monitoring.monitoring_backlog(model))
    if not intervals:
        raise AirflowSkipException("no predictions event behind this run: nothing to monitor")
    results = run_each(monitoring.monitor_interval, model, intervals)
    # Drift on the champion's own training days is in the reports but is not news: no event.
    drifted = [r for r in results if r.drift_detected and not r.in_training_window]
    return {
        "intervals": intervals,
        # A merged run emits one event: it names every drifted interval, the newest as "window".
        "drift": {**drifted[-1].event_extra(), "drifted_windows": [r.interval for r in drifted]} if drifted else None,
        "guardrail_breaches": [b for r in results for b in r.guardrail_breaches],
        "breached_versions": monitoring.breached_versions(results),  # by number: "9" before "10"
        "results": [r.to_dict() for r in results],
    }


def build_monitoring_dag(cfg: ModelConfig) -> DAG:
    model = cfg.name

    @dag(
        **model_dag(cfg, "monitoring", __doc__, describe=False),
        schedule=[predictions_asset(model)],
        params={"intervals": intervals_param()},
    )
    def monitoring_pipeline() -> None:
        @task
        def monitor(**context: Any) -> dict[str, Any]:
            return _monitor(model, context)

        @task(outlets=[drift_asset(model)])
        def emit_drift(monitored: dict[str, Any], **context: Any) -> dict[str, Any]:
            if not monitored["drift"]:
                raise AirflowSkipException(f"no drift in {monitored['intervals']}: no drift event emitted")
            context["outlet_events"][drift_asset(model)].extra = monitored["drift"]
            return dict(monitored["drift"])

        @task
        def circuit_breaker(monitored: dict[str, Any], **context: Any) -> dict[str, Any]:
            from mlops.quality import monitoring

            return run_step(
                monitoring.circuit_breaker,
                model,
                monitored["intervals"],
                monitored["guardrail_breaches"],
                monitored["breached_versions"],
                dag_id=context["dag"].dag_id,
                dag_run_id=context["run_id"],
                task_id=context["ti"].task_id,
            )

        doctor_task(model)
        monitored = monitor()
        emit_drift(monitored)
        circuit_breaker(monitored)

    return monitoring_pipeline()


generate_dags(globals(), "monitoring", build_monitoring_dag)
