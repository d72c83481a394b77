"""
### Canary rollout: `<model>__rollout`

Runs on every `<model>.predictions` event (a batch was scored with the split) and every
`<model>.labels` event (labels arrived), and from the UI. With `action = analyze` (what events run) it
gathers the current step's evidence (the intervals scored while the step served), compares the canary's
arm with the champion's arm and decides: **advance** to the next step, **hold** (not enough evidence, or
paused), **abort** (share to zero at once: a guardrail breach on failures, latency or live quality,
or a threshold failure against the champion), or **promote** after the last step (moves `champion`,
recorded in the alias history). Each decision writes an HTML report under
`.mlops/reports/<model>/rollout/<rollout>/`. From the form a person can **pause**, **resume**,
**abort** or **promote_now**, each recorded with who and why. Without a running rollout it skips.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, dag, task

from mlops.core.config import ModelConfig
from mlops.orchestration.dagkit import generate_dags, labels_asset, model_dag, predictions_asset, run_step


def build_rollout_dag(cfg: ModelConfig) -> DAG:
    model = cfg.name

    @dag(
        **model_dag(cfg, "rollout", __doc__, describe=False),
        schedule=predictions_asset(model) | labels_asset(model),
        params={
            "action": Param(
                "analyze",
                enum=["analyze", "pause", "resume", "abort", "promote_now"],
                title="Action",
                description="analyze: judge the current step (what events run); the others act at once.",
            ),
            "reason": Param("", type="string", title="Reason", description="Recorded with the action."),
        },
    )
    def rollout_pipeline() -> None:
        @task
        def decide(**context: Any) -> dict[str, Any]:
            from mlops.model import rollout_analysis

            params = context["params"]
            actor = getattr(context["dag_run"], "triggering_user_name", None) or "airflow"
            return run_step(
                rollout_analysis.run_rollout,
                model,
                params["action"],
                actor=str(actor),
                reason=params["reason"],
                dag_id=context["dag"].dag_id,
                dag_run_id=context["run_id"],
            )

        decide()

    return rollout_pipeline()


generate_dags(globals(), "rollout", build_rollout_dag)
