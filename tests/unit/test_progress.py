"""Log groups and progress lines (mlops.core.progress): what a person sees in a task's log."""

from __future__ import annotations

import logging

import pytest

from mlops.core import progress


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_a_group_folds_its_lines_and_closes_when_the_step_fails(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.progress")
    caplog.set_level(logging.INFO)
    with progress.log_group("Feast  materialize\ncredit_risk", log):
        log.info("inside")
    with pytest.raises(RuntimeError), progress.log_group("fit", log):
        raise RuntimeError("boom")
    lines = _lines(caplog)
    assert lines[0] == "::group::Feast materialize credit_risk"  # one line: a newline would end the marker
    assert lines[1] == "inside"
    assert lines[2].startswith("Feast  materialize\ncredit_risk: ") and lines[2].endswith(" s")
    assert lines[3] == "::endgroup::"
    assert lines[4] == "::group::fit" and lines[-1] == "::endgroup::"  # closed although the block raised


def test_progress_lines_count_every_item_and_say_how_far(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    items = list(progress.progress(range(5), "materialize m", unit="chunks", every_seconds=3600))
    assert items == [0, 1, 2, 3, 4]
    lines = _lines(caplog)
    # The first and the last item, nothing between (rate-limited).
    assert [line.split(",")[0] for line in lines] == [
        "materialize m: 1/5 chunks (20%)",
        "materialize m: 5/5 chunks (100%)",
    ]
    assert "s left" in lines[0] and "left" not in lines[1]


def test_progress_without_a_length_and_a_line_for_every_slow_item(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert list(progress.progress(iter("abc"), "rows", every_seconds=0)) == ["a", "b", "c"]
    # A line per item (every_seconds=0), then where it ended: no length, so no share and no estimate.
    firsts = [line.split(",")[0] for line in _lines(caplog)]
    assert firsts == ["rows: 1 items", "rows: 2 items", "rows: 3 items", "rows: 3 items"]


@pytest.mark.parametrize(
    ("done", "total", "elapsed", "expected"),
    [
        (1, 4, 2.0, "x: 1/4 items (25%), 2.0 s, ~6 s left"),
        (4, 4, 8.0, "x: 4/4 items (100%), 8.0 s"),
        (7, None, 1.25, "x: 7 items, 1.2 s"),
        (0, 0, 0.0, "x: 0 items, 0.0 s"),
    ],
)
def test_progress_line(done: int, total: int | None, elapsed: float, expected: str) -> None:
    assert progress.progress_line("x", done, total, elapsed) == expected
