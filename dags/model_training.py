"""
### Training pipeline: `<model>__training`

One DAG per model config in `include/models/`. Runs on the config's retraining cron OR whenever
monitoring emits a `<model>.drift` Asset event (`AssetOrTimeSchedule`), OR, with
`retraining.on_new_labels`, when `<model>__landing` has validated newly landed labelled batches (the
`<model>.labels` Asset). It can be triggered from the UI with the Params below.

0. **plan_training**: picks the window (from the events behind the run, else the Params) and enforces
   the guard rails: one run at a time (`max_active_runs=1`), a cool-down after the last event-triggered
   retrain (a burst of events, merged or not, yields one retrain; a failed retrain counts too, so there
   is no retry storm).
1. **build_training_set**: point-in-time correct training set from Feast's offline store for the window.
2. **train**: the training CLI (`python -m mlops.model.train`), as a GPU pod through the house
   KubernetesPodOperator in production, as a local process otherwise. Logs everything to MLflow.
3. **gates** (each an HTML report, also logged to the MLflow run): `gate_drift` (Evidently data drift
   vs the newest validated batch), `gate_quality` (holdout metrics), `gate_fairness` (fairlearn group
   disparity), `gate_champion` (challenger vs champion on the same frozen holdout). A failed gate fails
   the run with one line and `champion` does not move.
4. **register**: a model version with lineage tags and the `challenger` alias.
5. **approval_route** picks **approve_promotion** (a person approves in the Airflow UI; a rejection
   skips promotion) when the config or the run's Params ask for it, else **auto_approve**; then
   **promote** points the `champion` alias at the version.
   Every alias move is recorded in the `<model>__alias_history` MLflow experiment; a retried
   `register` or `promote` finishes its first attempt's move and writes no second record.

**train** fails with a verdict (no retry) only when the CLI rejects the data (exit 2). A killed
(SIGKILL, OOM), timed-out (`training.timeout_minutes`) or evicted training is an infrastructure error:
it is retried, and its MLflow run is ended FAILED or KILLED. **registry_doctor** checks the registry's
invariants beside the run (see the README's "Registry safety").
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import (
    DAG,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    dag,
    task,
)

from mlops.core.config import ModelConfig
from mlops.model.approval import evidence_body
from mlops.model.estimators import params_json_schema
from mlops.orchestration import lineage
from mlops.orchestration.dagkit import (
    cron,
    doctor_task,
    drift_asset,
    generate_dags,
    labels_asset,
    model_dag,
    run_step,
    training_backend,
    triggering_extras,
)

TRAINING_SET = "build_training_set"


def _run_id(context: Any) -> tuple[str, str]:
    return context["dag"].dag_id, context["run_id"]


def _schedule(cfg: ModelConfig) -> Any:
    events = drift_asset(cfg.name) | labels_asset(cfg.name) if cfg.retraining.on_new_labels else drift_asset(cfg.name)
    if cfg.training.schedule:
        return AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(cron(cfg.training.schedule), timezone="UTC"),
            assets=events,
        )
    return events if cfg.retraining.on_new_labels else [events]


def _checked_estimator_params(cfg: ModelConfig, params: Any) -> dict[str, Any]:
    """The form's estimator overrides, checked by the config loader's own function; a bad one fails the run now."""
    from airflow.sdk.exceptions import AirflowFailException

    from mlops.core.config import ConfigError, check_estimator_overrides

    overrides = params["estimator_params"]
    try:
        check_estimator_overrides(cfg, overrides)
    except ConfigError as exc:
        raise AirflowFailException(str(exc)) from None
    return dict(overrides)


def _params(cfg: ModelConfig) -> dict[str, Param]:
    return {
        "window_end": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Training window end",
            description="Last day of data to train on (default: newest validated day).",
        ),
        "window_days": Param(
            cfg.training.window_days, type="integer", minimum=3, maximum=3650, title="Training window (days)"
        ),
        "estimator_params": Param(
            {},
            title="Estimator overrides",
            description=f"Merged over the config's `{cfg.training.estimator.family}` params; checked like the "
            "config's (names, types, ranges).",
            **params_json_schema(cfg.training.estimator.family),
        ),
        "require_approval": Param(
            cfg.promotion.require_approval, type="boolean", title="Require human approval before promotion"
        ),
        "force": Param(
            False,
            type="boolean",
            title="Force past the champion comparison",
            description="Promote even if worse than the champion (other gates still apply).",
        ),
    }


def _plan(cfg: ModelConfig, context: Any) -> dict[str, Any]:
    """The training window and trigger of this run; a retrain burst inside the cool-down is skipped."""
    from airflow.sdk.exceptions import AirflowSkipException

    from mlops.features import steps as feature_steps
    from mlops.quality import monitoring

    model, params = cfg.name, context["params"]
    _checked_estimator_params(cfg, params)  # before any work: a bad form value fails the run here
    events = triggering_extras(context, drift_asset(model))
    labels = triggering_extras(context, labels_asset(model))
    if not events and not labels:
        # The window is fixed here, so a cleared or retried run trains on the same days.
        first, last = run_step(feature_steps.training_window, model, params["window_end"], params["window_days"])
        return {
            "trigger": str(getattr(context["dag_run"], "run_type", "manual")),
            "window_end": last.isoformat(),
            "window_days": (last - first).days + 1,
            "drift_events": [],
        }
    trigger = "drift" if events else "labels"
    remaining = monitoring.cooldown_remaining(model, cfg.retraining.cooldown_minutes)
    if remaining > 0:
        raise AirflowSkipException(
            f"{trigger}-triggered retrain skipped: cool-down of {cfg.retraining.cooldown_minutes:g} min "
            f"after the last retrain ({remaining:.0f} s left); {len(events)} drift and {len(labels)} "
            "new-labels event(s) merged"
        )
    # The window ends at the newest validated day: it holds every drifted or newly landed batch.
    drifted_until, window_days = monitoring.retrain_window(events, params["window_days"])
    newest = run_step(feature_steps.training_window, model, None, window_days)[1].isoformat()
    return {
        "trigger": trigger,
        "window_end": max(drifted_until or newest, newest),
        "window_days": window_days,
        "drift_events": events,
        "label_events": labels,
    }


def _training_set_tasks(cfg: ModelConfig) -> Any:
    """plan_training >> build_training_set; returns the training set's XCom."""
    model = cfg.name

    @task
    def plan_training(**context: Any) -> dict[str, Any]:
        return _plan(cfg, context)

    @task(task_id=TRAINING_SET)
    def build_training_set(plan: dict[str, Any], **context: Any) -> dict[str, Any]:
        from mlops.features import steps as feature_steps

        _, run_id = _run_id(context)
        result = run_step(feature_steps.build_training_set, model, run_id, plan["window_end"], plan["window_days"])
        return {**result, "trigger": plan["trigger"]}

    return lineage.attach_lineage(build_training_set(plan_training()), lineage.training_set_lineage)


def _train_task(cfg: ModelConfig, training_set: Any) -> Any:
    """Training: the house GPU pod in production, the same CLI as a local process elsewhere."""
    if training_backend() == "kubernetes":
        from mlops.orchestration.pod import gpu_pod_operator, training_arguments

        pod = gpu_pod_operator(
            task_id="train",
            arguments=training_arguments(cfg.name, cfg.training.resources, training_set_task=TRAINING_SET),
            resources=cfg.training.resources,
            labels={"mlops/model": cfg.name.replace("_", "-")},
            # The same bound as the local process; a pod past it fails and the task retries it.
            active_deadline_seconds=cfg.training.timeout_minutes * 60,
        )
        training_set >> pod
        return lineage.attach_lineage(pod.output, partial(lineage.train_lineage, training_set_task=TRAINING_SET))

    @task(task_id="train")
    def train_locally(training_set: dict[str, Any], **context: Any) -> dict[str, Any]:
        from mlops.model import launch

        dag_id, run_id = _run_id(context)
        params = context["params"]
        return run_step(
            launch.train_local,
            cfg.name,
            training_set,
            run_name=launch.run_name(dag_id, run_id),
            estimator_params=_checked_estimator_params(cfg, params),
            tags=launch.train_tags(
                dag_id=dag_id, run_id=run_id, trigger=training_set["trigger"], image=launch.LOCAL_PROCESS_IMAGE
            ),
        )

    trained = train_locally(training_set)
    return lineage.attach_lineage(trained, partial(lineage.train_lineage, training_set_task=TRAINING_SET))


def _gate_tasks(cfg: ModelConfig, trained: Any) -> list[Any]:
    """The four gates over the trained model, side by side."""
    model = cfg.name

    @task
    def gate_drift(trained: dict[str, Any], **context: Any) -> dict[str, Any]:
        from mlops.quality import steps as gate_steps

        return run_step(gate_steps.gate_drift, model, trained, context["run_id"])

    @task
    def gate_quality(trained: dict[str, Any], **context: Any) -> dict[str, Any]:
        from mlops.quality import steps as gate_steps

        return run_step(gate_steps.gate_quality, model, trained, context["run_id"])

    @task
    def gate_fairness(trained: dict[str, Any], **context: Any) -> dict[str, Any]:
        from mlops.quality import steps as gate_steps

        return run_step(gate_steps.gate_fairness, model, trained, context["run_id"])

    @task
    def gate_champion(trained: dict[str, Any], **context: Any) -> dict[str, Any]:
        from mlops.quality import steps as gate_steps

        force = bool(context["params"]["force"])
        return run_step(gate_steps.gate_champion, model, trained, context["run_id"], force=force)

    return [gate_drift(trained), gate_quality(trained), gate_fairness(trained), gate_champion(trained)]


def _approval(context: Any) -> tuple[str, str]:
    """Who promotes and why: the approver of approve_promotion (never the run's own trigger), else airflow."""
    approval = context["ti"].xcom_pull(task_ids="approve_promotion")
    if not approval:
        return "airflow", "passed every gate"
    from airflow.sdk.exceptions import AirflowFailException

    from mlops.model.approval import SelfApprovalError, approver

    if "Approve" not in approval.get("chosen_options", []):
        raise ValueError(f"promotion was not approved: {approval}")
    try:
        actor = approver(approval, context["dag_run"].triggering_user_name)
    except SelfApprovalError as exc:
        raise AirflowFailException(str(exc)) from None
    return actor, "approved in Airflow"


def _promotion_tasks(cfg: ModelConfig, trained: Any, training_set: Any, gates: list[Any]) -> None:
    """gates >> register >> approval_route >> [approve_promotion | auto_approve] >> promote."""
    model = cfg.name

    @task
    def register(trained: dict[str, Any], training_set: dict[str, Any], **context: Any) -> dict[str, Any]:
        from mlops.model import steps as model_steps

        dag_id, run_id = _run_id(context)
        return run_step(
            model_steps.register, model, trained, training_set, dag_id=dag_id, run_id=run_id, task_id="register"
        )

    @task.branch
    def approval_route(**context: Any) -> str:
        from mlops.model import steps as model_steps

        requested = context["params"]["require_approval"]
        return "approve_promotion" if model_steps.needs_approval(cfg, requested) else "auto_approve"

    @task(trigger_rule="none_failed_min_one_success")
    def promote(registered: dict[str, Any], **context: Any) -> dict[str, Any]:
        from mlops.model import steps as model_steps

        actor, reason = _approval(context)
        dag_id, run_id = _run_id(context)
        return run_step(
            model_steps.promote,
            model,
            registered["version"],
            actor=actor,
            reason=reason,
            dag_id=dag_id,
            run_id=run_id,
            task_id="promote",
        )

    registered = lineage.attach_lineage(register(trained, training_set), partial(lineage.register_lineage, model=model))
    approve_promotion = ApprovalOperator(
        task_id="approve_promotion",
        # Unanswered for a day: reject, so retraining (one run at a time) is never blocked for good.
        response_timeout=timedelta(hours=24),
        defaults="Reject",
        subject=f"Promote {model} to champion?",
        body=evidence_body(model),
    )
    auto_approve = EmptyOperator(task_id="auto_approve")
    gates >> registered >> approval_route() >> [approve_promotion, auto_approve] >> promote(registered)


def build_training_dag(cfg: ModelConfig) -> DAG:
    @dag(**model_dag(cfg, "training", __doc__), schedule=_schedule(cfg), params=_params(cfg))
    def training_pipeline() -> None:
        doctor_task(cfg.name)
        training_set = _training_set_tasks(cfg)
        trained = _train_task(cfg, training_set)
        _promotion_tasks(cfg, trained, training_set, _gate_tasks(cfg, trained))

    return training_pipeline()


generate_dags(globals(), "training", build_training_dag)
