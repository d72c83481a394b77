"""The exceptions every step raises: a verdict a person acts on, no work, or a failure outside the work."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


log = logging.getLogger(__name__)


class GateFailed(RuntimeError):
    """A blocking check failed; the message is the one line shown to people."""


class NothingToDo(RuntimeError):
    """No input for this interval: the task skips rather than fails."""


class InfrastructureError(RuntimeError):
    """The work did not finish for a reason outside it (killed, out of memory, timed out, evicted).

    Not a verdict on the data or the model: the task fails with this one line and Airflow retries it.
    """
