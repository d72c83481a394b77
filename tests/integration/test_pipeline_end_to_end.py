"""The whole chain on small data through real Airflow (dag.test) for both example models."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest

from mlops.core.config import get_config
from mlops.data import steps as data_steps
from mlops.model import registry
from mlops_dev.datagen import write_batches
from openlineage_events import assert_training_lineage

pytestmark = pytest.mark.integration

START = date(2026, 3, 1)
DAYS = 6


def _land_and_ingest(model: str, state_dir: Path, run_dag: Callable[..., str], rows: int) -> None:
    write_batches(model, state_dir / "landing" / model, START, DAYS, rows_per_batch=rows)
    for offset in range(DAYS):
        assert run_dag(f"{model}__data", START + timedelta(days=offset)) == "success"


@pytest.mark.parametrize(("model", "rows"), [("credit_risk", 300), ("tumor_diagnosis", 80)])
def test_raw_data_to_promoted_champion(model: str, rows: int, state_dir: Path, run_dag: Callable[..., str]) -> None:
    _land_and_ingest(model, state_dir, run_dag, rows)
    assert len(data_steps.validated_days(model)) == DAYS
    conf = {"window_end": (START + timedelta(days=DAYS - 1)).isoformat(), "window_days": DAYS}
    assert run_dag(f"{model}__training", conf=conf) == "success"

    champion = registry.get_alias_version(model, registry.CHAMPION)
    assert champion is not None
    assert registry.get_alias_version(model, registry.CHALLENGER) == champion
    tags = registry.version_tags(model, champion)
    for key in [
        "lineage.git_commit",
        "lineage.raw_batches",
        "lineage.training_window",
        "lineage.feature_service",
        "lineage.gx_suite",
        "lineage.config_hash",
        "lineage.training_image",
        "lineage.dag_id",
        "lineage.dag_run_id",
        "lineage.libraries",
    ]:
        assert tags.get(key), key
    assert len(json.loads(tags["lineage.raw_batches"])) == DAYS
    assert tags["lineage.training_window"] == f"{START}..{START + timedelta(days=DAYS - 1)}"
    reports = sorted((state_dir / "reports" / model).rglob("*.html"))
    names = {p.name for p in reports}
    assert {"drift.html", "quality.html", "fairness.html", "champion.html"} <= names
    assert len(list((state_dir / "reports" / model / "data_quality").glob("*.html"))) == DAYS
    run = registry.client().get_run(tags["lineage.training_run_id"])
    logged = {a.path for a in registry.client().list_artifacts(run.info.run_id, "reports")}
    assert {"reports/drift.html", "reports/quality.html", "reports/fairness.html"} <= logged
    assert run.data.tags["gate.champion"] == "skipped"  # first model: nothing to compare with
    history = registry.alias_history(model)
    assert [(h.alias, h.to_version) for h in history] == [("challenger", champion), ("champion", champion)]
    _assert_training_lineage(model, champion, tags, state_dir)

    # A second run compares against the champion on the same frozen holdout and promotes again: at once
    # (strategy immediate), or as a canary at the first step while champion stays (strategy canary).
    assert run_dag(f"{model}__training", conf=conf) == "success"
    if get_config(model).config.promotion.strategy == "canary":
        from mlops.model import rollout

        state = rollout.load_state(model)
        assert state is not None and state.status == "running" and state.champion_version == champion
        assert registry.get_alias_version(model, registry.CHAMPION) == champion
        assert state.share == get_config(model).config.promotion.canary.steps[0]
        second = state.canary_version
    else:
        second = str(registry.get_alias_version(model, registry.CHAMPION))
    assert second != champion
    run2 = registry.client().get_run(registry.version_tags(model, second)["lineage.training_run_id"])
    assert run2.data.tags["gate.champion"] == "passed"


def _assert_training_lineage(model: str, version: str, tags: dict[str, str], state_dir: Path) -> None:
    """The OpenLineage events of the training run name its inputs (day partitions) and output (the version)."""
    # tests/conftest.py points the provider's file transport at the session's event log
    assert_training_lineage(
        Path(json.loads(os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"])["log_file_path"]),
        model=model,
        version=version,
        dag_run_id=tags["lineage.dag_run_id"],
        training_set_uri=tags["lineage.training_set_uri"],
        lake_uri=(state_dir / "lake").as_posix(),
        window=[START + timedelta(days=offset) for offset in range(DAYS)],
        registry_namespace=f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}",
    )


def test_bad_batch_is_quarantined_and_stops_the_run(state_dir: Path, run_dag: Callable[..., str]) -> None:
    model = "credit_risk"
    write_batches(model, state_dir / "landing" / model, START, 1, rows_per_batch=200, bad_rows=20)
    assert run_dag(f"{model}__data", START) == "failed"
    quarantine = state_dir / "lake" / "quarantine" / model / START.isoformat()
    reason = next(quarantine.rglob("reason.txt")).read_text()
    assert reason.startswith("GX gate failed for credit_risk") and reason.count("\n") == 1
    assert list(quarantine.rglob("*.csv")) and list(quarantine.rglob("result.json"))
    assert list(quarantine.rglob("report.html"))
    assert list((state_dir / "lake" / "raw" / model / "objects").rglob("*.csv"))  # raw kept
    assert not (state_dir / "lake" / "validated" / model).exists()
    assert not (state_dir / "feast" / "online_rows.db").exists()  # materialize never ran


def test_failed_gate_leaves_champion_untouched(
    state_dir: Path, run_dag: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = "tumor_diagnosis"
    _land_and_ingest(model, state_dir, run_dag, 80)
    conf = {"window_end": (START + timedelta(days=DAYS - 1)).isoformat(), "window_days": DAYS}
    assert run_dag(f"{model}__training", conf=conf) == "success"
    champion = registry.get_alias_version(model, registry.CHAMPION)
    history = len(registry.alias_history(model))

    # Same model, but a quality bar no model can meet: the quality gate must block promotion.
    models = tmp_path / "models"
    models.mkdir()
    repo_models = Path(__file__).resolve().parents[2] / "include" / "models"
    text = (repo_models / f"{model}.yaml").read_text()
    text = text.replace("min_metrics: {roc_auc: 0.85, f1: 0.7}", "min_metrics: {roc_auc: 1.0, f1: 1.0, accuracy: 1.0}")
    (models / f"{model}.yaml").write_text(text)
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    assert run_dag(f"{model}__training", conf=conf) == "failed"
    assert registry.get_alias_version(model, registry.CHAMPION) == champion
    assert len(registry.alias_history(model)) == history
