"""Four eyes on a promotion (mlops.model.approval): the run's triggering user may not be its approver."""

from __future__ import annotations

from typing import Any

import pytest

from mlops.model.approval import SelfApprovalError, approver

APPROVED: dict[str, Any] = {"chosen_options": ["Approve"], "responded_by_user": {"id": "7", "name": "bob"}}


@pytest.mark.parametrize("triggered_by", ["alice", None, ""])
def test_someone_else_or_a_scheduled_run_may_be_approved(triggered_by: str | None) -> None:
    assert approver(APPROVED, triggered_by) == "bob"


def test_the_triggering_user_may_not_approve() -> None:
    with pytest.raises(SelfApprovalError, match="bob triggered this run"):
        approver(APPROVED, "bob")


@pytest.mark.parametrize("user", [{}, None, {"name": "", "id": ""}])
def test_an_approval_naming_no_one_is_refused(user: Any) -> None:
    with pytest.raises(SelfApprovalError, match="names no approver"):
        approver({"chosen_options": ["Approve"], "responded_by_user": user}, "alice")


def test_an_id_stands_in_for_a_missing_name() -> None:
    assert approver({"responded_by_user": {"id": "42"}}, "alice") == "42"
    with pytest.raises(SelfApprovalError):
        approver({"responded_by_user": {"id": "42"}}, "42")


def test_the_approval_form_carries_the_evidence() -> None:
    """The form's body, rendered as Airflow renders templates, shows each gate's verdict and the reports."""
    from jinja2.sandbox import SandboxedEnvironment

    from mlops.model.approval import GATE_TASKS, evidence_body

    xcoms: dict[str, Any] = {task: {"summary": f"{task} passed: value 0.81 >= 0.6"} for task in GATE_TASKS}
    xcoms["gate_champion"] = {"summary": "champion gate passed: roc_auc 0.812 >= 0.802 (champion v3 0.812 - 0.01)"}
    xcoms["register"] = {"version": "4"}

    class TaskInstance:
        def xcom_pull(self, task_ids: str) -> Any:
            return xcoms[task_ids]

    body = (
        SandboxedEnvironment()
        .from_string(evidence_body("credit_risk"))
        .render(ti=TaskInstance(), dag={"dag_id": "credit_risk__training"}, run_id="manual__2026-03-05T10:00:00+00:00")
    )
    assert "Version **4** of `credit_risk`" in body
    assert "**Champion comparison:** champion gate passed: roc_auc 0.812 >= 0.802 (champion v3" in body
    for task in GATE_TASKS:
        assert f"| {task.removeprefix('gate_')} | {task} passed: value 0.81 >= 0.6 |" in body or task == "gate_champion"
        assert f"run_id=manual__2026-03-05T10%3A00%3A00%2B00%3A00&task_id={task})" in body
    assert "/cockpit/gates?dag_id=credit_risk__training&run_id=manual__2026-03-05T10%3A00%3A00%2B00%3A00" in body
