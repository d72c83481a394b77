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
