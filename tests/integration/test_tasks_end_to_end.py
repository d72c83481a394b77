"""A multiclass and a regression model from landed files to a scored champion through real Airflow (dag.test).

Small on purpose (every DAG run costs start-up time, not data time): three days of 200 rows go through the
landing DAG in one run and one training run trains, gates and promotes; the multiclass champion then scores
a day (its per-class output is the one with most to get wrong). The gates' ability to fail and every
task's scoring outputs are proven in tests/unit/test_tasks.py.
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

START = date(2026, 3, 1)
DAYS = 3
ROWS = 200

# model -> (holdout metrics the training run must log, output columns of the scored file)
CASES: dict[str, tuple[set[str], list[str]]] = {
    "support_ticket": (
        {"macro_f1", "accuracy", "log_loss", "roc_auc_ovr"},
        ["proba_low", "proba_medium", "proba_high", "prediction", "score"],
    ),
    "delivery_time": ({"rmse", "mae", "r2"}, []),
}

TASKS = {"support_ticket": "multiclass", "delivery_time": "regression"}
EXAMPLES = Path(__file__).resolve().parents[2] / "include" / "models" / "examples"


@pytest.fixture
def examples(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The DAGs of the two examples only (requested before run_dag, which parses the DAG folder)."""
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(EXAMPLES))
    return EXAMPLES


@pytest.mark.parametrize("model", sorted(CASES))
def test_task_model_trains_gates_promotes_and_scores(
    model: str, examples: Path, state_dir: Path, run_dag: Callable[..., Any]
) -> None:
    metrics, outputs = CASES[model]
    write_batches(model, state_dir / "landing" / model, START, DAYS, rows_per_batch=ROWS)
    assert run_dag(f"{model}__landing") == "success"
    last = START + timedelta(days=DAYS - 1)
    conf = {"window_end": str(last), "window_days": DAYS}
    assert run_dag(f"{model}__training", conf=conf) == "success"

    champion = registry.get_alias_version(model, registry.CHAMPION)
    assert champion is not None
    run = registry.client().get_run(registry.version_tags(model, champion)["lineage.training_run_id"])
    assert run.data.tags["task"] == TASKS[model]
    for gate in ("drift", "quality", "fairness"):
        assert run.data.tags[f"gate.{gate}"] == "passed", (gate, run.data.tags)
    logged = {k.removeprefix("holdout_") for k in run.data.metrics if k.startswith("holdout_")}
    assert metrics <= logged, logged
    figures = {k: round(v, 4) for k, v in sorted(run.data.metrics.items()) if k.startswith(("holdout_", "gate_f"))}
    print(f"{model} v{champion}: {json.dumps(figures)}")
    if model != "support_ticket":
        return

    assert run_dag(f"{model}__scoring", conf={"intervals": [str(last)]}) == "success"
    scored = pd.read_parquet(state_dir / "lake" / "predictions" / model / f"date={last}" / "champion.parquet")
    assert len(scored) == ROWS and set(outputs) <= set(scored.columns)
    assert scored["score"].notna().all() and set(scored["prediction"]) <= {"low", "medium", "high"}
    sums = scored[["proba_low", "proba_medium", "proba_high"]].sum(axis=1)
    assert sums.between(0.999, 1.001).all()
    assert (scored["score"] == scored[["proba_low", "proba_medium", "proba_high"]].max(axis=1)).all()
