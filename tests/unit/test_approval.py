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
