"""Progress you can see in a task's log: collapsible groups for long steps, progress lines in long loops.

Airflow's log view folds the lines between ``::group::<title>`` and ``::endgroup::`` into one line that
opens on a click, so a long step (a Feast materialization, a fit) reads as a few titled lines. Progress
lines say how far a loop is, at a bounded rate: ``materialize credit_risk: 3/12 chunks (25%), 4.1 s,
~12 s left``. Plain logging: no Airflow import, so the training CLI uses it too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

GROUP_START = "::group::"
GROUP_END = "::endgroup::"

_log = logging.getLogger(__name__)


@contextmanager
def log_group(title: str, logger: logging.Logger | None = None) -> Iterator[None]:
    """Fold what the block logs under ``title`` in Airflow's log view; the end line says how long it took.

    The group is closed even when the block raises, so the error stays visible below it.
    """
    out = logger or _log
    out.info("%s%s", GROUP_START, " ".join(title.split()))  # one line: a newline would end the marker
    started = time.monotonic()
    try:
        yield
    finally:
        out.info("%s: %.1f s", title, time.monotonic() - started)
        out.info(GROUP_END)


def progress_line(label: str, done: int, total: int | None, elapsed: float, unit: str = "items") -> str:
    """``label: done/total unit (pct%), elapsed s, ~left s left`` (no total: ``label: done unit, elapsed s``)."""
    if not total:
        return f"{label}: {done} {unit}, {elapsed:.1f} s"
    share = done / total
    left = f", ~{elapsed / share - elapsed:.0f} s left" if 0 < share < 1 else ""
    return f"{label}: {done}/{total} {unit} ({share:.0%}), {elapsed:.1f} s{left}"


def progress(
    items: Iterable[T],
    label: str,
    *,
    total: int | None = None,
    unit: str = "items",
    every_seconds: float = 10.0,
    logger: logging.Logger | None = None,
) -> Iterator[T]:
    """Yield ``items`` and log a progress line after the first, every ``every_seconds`` and after the last.

    ``total`` defaults to ``len(items)`` where it has one. A loop of thousands of quick items logs a
    handful of lines, a loop of a few slow ones a line per item.
    """
    out = logger or _log
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    started = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if done in (1, total) or now - last >= every_seconds:
            out.info(progress_line(label, done, total, now - started, unit))
            last = now
    if done != total:  # an iterable without a length, or one shorter than announced: say where it ended
        out.info(progress_line(label, done, total, time.monotonic() - started, unit))
