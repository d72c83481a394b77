"""
### Rollback: `<model>__rollback`

Trigger from the UI. Points `champion` back at the previous champion (or the version you name) in one
step and records who and why in the alias history (`<model>__alias_history` in MLflow). The next scoring
run loads the restored version; nothing is redeployed. The circuit breaker uses the same code path.
The target is computed once and kept in the move's record: a retry finishes that move, never another.
`registry_doctor` checks the registry's invariants beside it (see the README's "Registry safety").
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, dag, task

from mlops.core.config import ModelConfig
from mlops.orchestration.dagkit import default_args, doctor_task, generate_dags, model_dag


def build_rollback_dag(cfg: ModelConfig) -> DAG:
    model = cfg.name

    @dag(
        **model_dag(cfg, "rollback", __doc__, describe=False, default_args={**default_args(cfg.owner), "retries": 1}),
        schedule=None,
        params={
            "target_version": Param(
                None,
                type=["null", "string"],
                pattern=r"^[0-9]+$",
                title="Target version",
                description="Leave empty for the previous champion.",
            ),
            "reason": Param(
                "", type="string", minLength=3, title="Reason", description="Recorded in the alias history."
            ),
        },
    )
    def rollback_pipeline() -> None:
        @task
        def rollback(**context: Any) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowFailException

            from mlops.core.errors import GateFailed
            from mlops.model import registry

            params = context["params"]
            actor = getattr(context["dag_run"], "triggering_user_name", None) or "airflow"
            try:
                change = registry.rollback(
                    model,
                    params["target_version"],
                    actor=str(actor),
                    reason=params["reason"],
                    dag_id=context["dag"].dag_id,
                    dag_run_id=context["run_id"],
                    task_id=context["ti"].task_id,
                )
            except (registry.RollbackError, GateFailed) as exc:  # GateFailed: the target's signature is refused
                raise AirflowFailException(str(exc)) from None
            assert change is not None  # only the breaker's conditional rollback returns None
            return {"from": change.from_version, "to": change.to_version, "actor": change.actor}

        doctor_task(model)
        rollback()

    return rollback_pipeline()


generate_dags(globals(), "rollback", build_rollback_dag)
