"""The one report system: every report page shares the page, banner and table helpers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mlops.core.util import finite_or_none, jsonable, quote_identifier
from mlops.quality.reports import CSS, fmt_vs, num_cell, render_page, table, tag, write_html


def test_fmt_vs_never_prints_different_numbers_the_same() -> None:
    assert fmt_vs(0.7999, 0.8) == ("0.7999", "0.8000")
    assert fmt_vs(0.7999, 0.8, trim_bound=True) == ("0.7999", "0.8")
    assert fmt_vs(0.5, 0.5) == ("0.500", "0.500")
    assert fmt_vs(0.123, 0.45, digits=2) == ("0.12", "0.45")


def test_table_escapes_headers_and_marks_rows() -> None:
    html = table(["a<b", "c"], [["1", tag(False)], ["2", tag(True, passed="OK")]], ["bad"])
    assert "<th>a&lt;b</th>" in html
    assert '<tr class="bad"><td>1</td><td><span class="tag fail">FAIL</span></td></tr>' in html
    assert '<tr><td>2</td><td><span class="tag pass">OK</span></td></tr>' in html
    assert num_cell(None) == num_cell(math.nan) == "n/a" and num_cell(0.12345, 2) == "0.12"


def test_page_is_standalone_with_the_verdict_first(tmp_path: Path) -> None:
    page = render_page("t", "<p>body</p>", verdict="FAIL", summary="why")
    assert page.startswith("<!DOCTYPE html>") and f"<style>{CSS}</style>" in page
    assert page.index('data-verdict="FAIL"') < page.index("<p>body</p>")
    path = write_html(tmp_path / "deep" / "r.html", "t", "<p>x</p>")
    assert path.read_text(encoding="utf-8").count("data-verdict") == 0 and not list(tmp_path.rglob("*.tmp"))


def test_validation_report_renders_through_the_shared_page() -> None:
    from mlops.data.validate import ExpectationRow, ValidationOutcome, render_report

    outcome = ValidationOutcome(
        success=False,
        failures=["age: values between 18 and 100"],
        statistics={"evaluated_expectations": 1, "successful_expectations": 0, "unsuccessful_expectations": 1},
        result={},
        data_docs_url=None,
        report_html=Path("r.html"),
        model="credit_risk",
        batch_id="b<1>",
        interval_start="2026-01-01",
        interval_end="2026-01-02",
        rows=(
            ExpectationRow(
                column="age",
                expectation="expect_column_values_to_be_between",
                description="values between 18 and 100",
                success=False,
                observed="3 outside",
                unexpected_count=3,
                element_count=200,
                unexpected_percent=1.5,
                samples=["250"],
                detail="",
                error=None,
            ),
        ),
    )
    page = render_report(outcome)
    assert f"<style>{CSS}</style>" in page and 'data-verdict="FAIL"' in page
    assert "FAIL: credit_risk batch b&lt;1&gt;" in page and '<tr class="bad">' in page
    assert "3 of 200 (1.5%)" in page


def test_jsonable_and_finite() -> None:
    value = {1: [np.float64(0.5), math.nan, np.int64(3)], "p": Path("/x"), "t": (math.inf,)}
    assert jsonable(value) == {"1": [0.5, None, 3], "p": "/x", "t": [None]}
    assert type(jsonable(np.float64(0.5))) is float
    assert finite_or_none(-math.inf) is None and finite_or_none(2.0) == 2.0
    assert quote_identifier('a"b') == '"a""b"'
