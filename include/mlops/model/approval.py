"""Four eyes on a promotion: whoever triggered a run may not approve its promotion.

Airflow's roles cannot express this (a HITL answer is checked against the responder's role, never
against the run's triggering user), so the platform checks it where the answer is read: ``promote``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SelfApprovalError(ValueError):
    """The promotion was approved by the user who triggered the run."""


def approver(approval: Mapping[str, Any], triggered_by: str | None) -> str:
    """The name of who approved ``approval`` (the ApprovalOperator's result).

    Refuses when it is ``triggered_by``, the run's triggering user (None for scheduled and
    asset-triggered runs, which anyone with the approver role may approve).
    """
    user = approval.get("responded_by_user") or {}
    name = str(user.get("name") or user.get("id") or "") if isinstance(user, Mapping) else str(user)
    if not name:
        raise SelfApprovalError(f"the approval names no approver, so four eyes cannot be checked: {dict(approval)}")
    if triggered_by and name == triggered_by:
        raise SelfApprovalError(
            f"{name} triggered this run and approved its promotion; another approver must answer "
            "(clear approve_promotion and ask someone else)"
        )
    return name


GATE_TASKS = ("gate_drift", "gate_quality", "gate_fairness", "gate_champion")
COCKPIT = "/cockpit"  # where the Airflow plugin serves the gate reports (plugins/mlops_cockpit.py)


def evidence_body(model: str) -> str:
    """The approval form's body (a Jinja template Airflow renders for the run): the evidence to decide on.

    The version, each gate's one-line verdict with its numbers and thresholds, the champion comparison,
    and links to the run's Gates view and to each gate's report in the Airflow UI.
    """
    run = "dag_id={{ dag.dag_id | urlencode }}&run_id={{ run_id | urlencode }}"
    rows = "\n".join(
        f"| {task.removeprefix('gate_')} | {{{{ ti.xcom_pull(task_ids='{task}')['summary'] }}}} "
        f"| [report]({COCKPIT}/report?{run}&task_id={task}) |"
        for task in GATE_TASKS
    )
    return (
        f"Version **{{{{ ti.xcom_pull(task_ids='register')['version'] }}}}** of `{model}` passed every gate.\n\n"
        "**Champion comparison:** {{ ti.xcom_pull(task_ids='gate_champion')['summary'] }}\n\n"
        f"| gate | verdict, numbers and threshold | |\n|---|---|---|\n{rows}\n\n"
        f"[All gates of this run]({COCKPIT}/gates?{run}) · [{model} on the Models page]({COCKPIT}/models?model={model})"
        " · the reports are also attached to the version's MLflow run."
    )
