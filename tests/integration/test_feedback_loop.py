"""The loop's pieces through real Airflow (dag.test): scoring, shadow, drift event, circuit breaker, rollback.

Asset events are not delivered by dag.test, so scoring and monitoring runs name their interval through
the `intervals` Param (the same code path an asset-triggered run takes after reading its events).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops.model import registry
from mlops_dev.datagen import write_batches

pytestmark = pytest.mark.integration

MODEL = "credit_risk"
START = date(2026, 3, 1)
DAYS = 6
REPO = Path(__file__).resolve().parents[2]


def _states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def _asset_events(asset: str, run_id: str) -> list[dict[str, Any]]:
    """Extras of the asset events a run emitted, read from Airflow's metadata DB."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == asset, AssetEvent.source_run_id == run_id)
        ).all()
        return [dict(r.extra or {}) for r in rows]


def _predictions(state_dir: Path, day: date, role: str = "champion") -> pd.DataFrame:
    return pd.read_parquet(state_dir / "lake" / "predictions" / MODEL / f"date={day}" / f"{role}.parquet")


def test_score_monitor_drift_breaker_and_rollback(
    state_dir: Path, run_dag: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing = state_dir / "landing" / MODEL
    write_batches(MODEL, landing, START, DAYS, rows_per_batch=300)
    for offset in range(DAYS):
        assert run_dag(f"{MODEL}__data", START + timedelta(days=offset)) == "success"
    conf = {"window_end": str(START + timedelta(days=DAYS - 1)), "window_days": DAYS}
    assert run_dag(f"{MODEL}__training", conf=conf) == "success"
    v1 = registry.get_alias_version(MODEL, registry.CHAMPION)

    # Score the newest batch with the champion: the version sits beside every row.
    last = START + timedelta(days=DAYS - 1)
    assert run_dag(f"{MODEL}__scoring", conf={"intervals": [str(last)]}) == "success"
    scored = _predictions(state_dir, last)
    assert len(scored) == 300 and set(scored["model_version"]) == {v1}

    # Same distribution: monitoring emits no drift event and the breaker stays quiet.
    run = run_dag(f"{MODEL}__monitoring", conf={"intervals": [str(last)]}, full=True)
    assert _states(run) == {
        "registry_doctor": "success",
        "monitor": "success",
        "emit_drift": "skipped",
        "circuit_breaker": "skipped",
    }
    assert _asset_events(f"{MODEL}.drift", run.run_id) == []  # no drift, no event

    # A drifted batch lands: scored, and monitoring emits the drift event naming the features.
    drifted = last + timedelta(days=1)
    write_batches(MODEL, landing, drifted, 1, rows_per_batch=300, covariate_drift=1.0)
    assert run_dag(f"{MODEL}__data", drifted) == "success"
    assert run_dag(f"{MODEL}__scoring", conf={"intervals": [str(drifted)]}) == "success"
    run = run_dag(f"{MODEL}__monitoring", conf={"intervals": [str(drifted)]}, full=True)
    states = _states(run)
    assert states["emit_drift"] == "success", states
    events = _asset_events(f"{MODEL}.drift", run.run_id)
    assert len(events) == 1
    extra = events[0]
    assert extra["window"] == str(drifted) and extra["champion_version"] == v1
    assert extra["drifted_windows"] == [str(drifted)]
    marker = state_dir / "lake" / "monitoring" / MODEL / f"date={drifted}" / "result.json"
    assert json.loads(marker.read_text())["drift_detected"] is True  # what the monitoring backlog reads
    assert extra["drifted_features"] and set(extra["drift_scores"]) == set(extra["drifted_features"])

    # A second champion (forced, the gates still run), then a quality guardrail no model meets:
    # the circuit breaker rolls back to v1 and the next scoring run uses v1.
    # credit_risk rolls out as a canary: a person promotes it at once from the rollout DAG's form.
    assert run_dag(f"{MODEL}__training", conf={**conf, "force": True}) == "success"
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == v1
    assert run_dag(f"{MODEL}__rollout", conf={"action": "promote_now", "reason": "ship it"}) == "success"
    v2 = registry.get_alias_version(MODEL, registry.CHAMPION)
    assert v2 != v1 and "ship it" in registry.alias_history(MODEL, registry.CHAMPION)[-1].reason
    models = tmp_path / "models"
    models.mkdir()
    text = (REPO / "include" / "models" / f"{MODEL}.yaml").read_text()
    (models / f"{MODEL}.yaml").write_text(text.replace("min_quality: {roc_auc: 0.62}", "min_quality: {roc_auc: 0.999}"))
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    assert run_dag(f"{MODEL}__scoring", conf={"intervals": [str(last)]}) == "success"
    assert set(_predictions(state_dir, last)["model_version"]) == {v2}
    run = run_dag(f"{MODEL}__monitoring", conf={"intervals": [str(last)]}, full=True)
    assert _states(run)["circuit_breaker"] == "success"
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == v1
    change = registry.alias_history(MODEL, registry.CHAMPION)[-1]
    assert (change.actor, change.from_version, change.to_version) == ("circuit-breaker", v2, v1)
    assert "quality guardrail breached" in change.reason
    assert run_dag(f"{MODEL}__scoring", conf={"intervals": [str(last)]}) == "success"
    assert set(_predictions(state_dir, last)["model_version"]) == {v1}

    # The UI's rollback DAG: forward to a named version, then back, each recorded with the reason.
    assert run_dag(f"{MODEL}__rollback", conf={"target_version": v2, "reason": "fixed upstream"}) == "success"
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == v2
    assert registry.alias_history(MODEL, registry.CHAMPION)[-1].reason == "rollback: fixed upstream"
    assert run_dag(f"{MODEL}__rollback", conf={"target_version": v2, "reason": "again"}) == "failed"
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == v2
