"""
### Rollback: `<model>__rollback`

Trigger from the UI. Points `champion` back at the previous champion (or the version you name) in one
step and records who and why in the alias history (`<model>__alias_history` in MLflow). The next scoring
run loads the restored version; nothing is redeployed. The circuit breaker uses the same code path.
The target is computed once and kept in the move's record: a retry finishes that move, never another.
`registry_doctor` checks the registry's invariants beside it (see the README's "Registry safety").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from mlops.orchestration.dagkit import default_args, doctor_task, generate_dags

START = datetime(2026, 1, 1)


def build_rollback_dag(model: str, owner: str) -> Any:
    @dag(
        dag_id=f"{model}__rollback",
        schedule=None,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args={**default_args(owner), "retries": 1},
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
        tags=["mlops", f"model:{model}", "rollback"],
        doc_md=f"{__doc__}\n\n**Model `{model}`**",
    )
    def rollback_pipeline() -> None:
        @task
        def rollback() -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowFailException

            from mlops.core.errors import GateFailed
            from mlops.model import registry

            context = get_current_context()
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


generate_dags(globals(), "rollback", lambda cfg: build_rollback_dag(cfg.name, cfg.owner))
