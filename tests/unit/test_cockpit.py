"""The cockpit's pure parts: report banners, gate task names, the monitoring chart."""

from __future__ import annotations

import re

import pytest

from mlops.quality import cockpit
from mlops.quality.cockpit import AliasRow, ModelView, MonitoringPoint, Thresholds
from mlops.quality.cockpit_html import model_page, monitoring_chart
from mlops.quality.reports import render_page


@pytest.mark.parametrize("verdict", ["PASS", "FAIL", "SKIPPED", "FORCED"])
def test_the_verdict_line_is_read_back_from_the_report_banner(verdict: str) -> None:
    page = render_page("Quality gate", "<p>x</p>", verdict=verdict, summary="roc_auc 0.61 < 0.7 & more")  # type: ignore[arg-type]
    assert cockpit.parse_banner(page) == (verdict, "roc_auc 0.61 < 0.7 & more")
    assert cockpit.parse_banner("<html>no banner</html>")[0] == "UNKNOWN"


def test_only_gate_tasks_have_a_gate() -> None:
    assert [cockpit.gate_of(t) for t in ("gate_drift", "group.gate_champion", "gate_other", "register")] == [
        "drift",
        "champion",
        None,
        None,
    ]
    with pytest.raises(cockpit.UnknownModel):
        cockpit.model_of("no_such_model__training")
    assert cockpit.model_of("credit_risk__training") == "credit_risk"


def _view(points: list[MonitoringPoint], history: list[AliasRow]) -> ModelView:
    return ModelView(
        model="credit_risk",
        aliases={"champion": "2"},
        versions=[],
        history=history,
        monitoring=points,
        thresholds=Thresholds(drift_share=0.3, prediction_ks=0.2, min_quality={"roc_auc": 0.6}),
        training_dag="credit_risk__training",
        rollback_dag="credit_risk__rollback",
    )


def test_the_chart_draws_thresholds_breaches_gaps_and_alias_moves() -> None:
    points = [
        MonitoringPoint("2026-03-01", "1", 0.1, 0.05, {"roc_auc": 0.8}, 300),
        MonitoringPoint("2026-03-02", "1", 0.5, 0.05, {"roc_auc": 0.55}, 300),  # drift and quality breach
        MonitoringPoint("2026-03-03", "2", None, 0.3, {}, 300),  # no drift value: a gap; KS breach
        MonitoringPoint("2026-03-04", "2", 0.1, 0.05, {"roc_auc": 0.8}, 300),
    ]
    history = [
        AliasRow("champion", "1", "2", "ann", "approved in Airflow", "2026-03-02T08:00:00+00:00", "r1"),
        AliasRow("champion", "2", "1", "bob", "rollback: bad", "2026-03-03T09:00:00+00:00", "r2"),
        AliasRow("champion", None, "1", "cy", "first", "2025-01-01T00:00:00+00:00", "r0"),  # before the chart
    ]
    svg = monitoring_chart(_view(points, history))
    assert svg.count('class="threshold"') == 3
    assert svg.count('class="breach"') == 3
    drift = re.findall(r'data-series="drift share" points="([^"]+)"', svg)
    assert [len(p.split()) for p in drift] == [2]  # the gap splits the line; the lone last day is a dot
    kinds = re.findall(r'class="alias-mark" data-kind="(\w+)" data-version="(\d+)"', svg)
    assert kinds == [("champion", "2"), ("rollback", "1")]
    assert "No monitored interval yet" in monitoring_chart(_view([], history))
    assert "<script>" in model_page(_view(points, history), svg)  # the page carries its buttons' script
    assert "&lt;b&gt;" in model_page(
        _view(points, [*history[:1], history[0].__class__("champion", "1", "2", "<b>x</b>", "r", "2026-03-02", "r")]),
        svg,
    )  # values are escaped
