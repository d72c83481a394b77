"""Live monitoring: drift and quality of scored intervals against a faked champion, retrain guard rails."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.core.config import get_config
from mlops.core.errors import NothingToDo
from mlops.model.train import PROBA_COLUMN, time_split
from mlops.quality.monitoring import (
    champion_reference,
    cooldown_remaining,
    monitor_interval,
    predictions_key,
    retrain_window,
)
from mlops_dev.datagen import GENERATORS

REPO = Path(__file__).resolve().parents[2]
MODEL = "credit_risk"
CFG = get_config(MODEL, REPO / "include" / "models").config
TRAIN_START = date(2026, 3, 1)
TRAIN_DAYS = 7
INTERVAL = date(2026, 3, 9)
generate = GENERATORS[MODEL]


def _scores(labels: np.ndarray, seed: int) -> np.ndarray:
    """Scores that rank defaults above non-defaults (ROC AUC around 0.85) like a decent model."""
    rng = np.random.default_rng(seed)
    logit = 2.0 * labels - 1.6 + rng.normal(0.0, 1.0, len(labels))
    return np.asarray(1.0 / (1.0 + np.exp(-logit)))


def _write(frame: pd.DataFrame, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return str(path)


def _fake_champion(state: Path, rows_per_day: int = 700) -> str:
    """A training run with its training set, a registered version with a scored holdout, as champion."""
    from mlops.core.tracking import client, ensure_experiment

    days = [TRAIN_START + timedelta(days=i) for i in range(TRAIN_DAYS)]
    frame = pd.concat([generate(d, rows_per_batch=rows_per_day) for d in days], ignore_index=True)
    run_dir = state / "lake" / "runs" / MODEL / "fake"
    training_uri = _write(frame, run_dir / "training_set.parquet")
    _, holdout = time_split(frame, CFG, CFG.training.holdout_days)
    holdout = holdout.assign(**{PROBA_COLUMN: _scores(holdout[CFG.label.column].to_numpy(), seed=1)})
    holdout_uri = _write(holdout, run_dir / "holdout.parquet")

    mlflow_client = client()
    run = mlflow_client.create_run(ensure_experiment(MODEL), run_name="fake training")
    mlflow_client.log_param(run.info.run_id, "training_set", training_uri)
    mlflow_client.set_terminated(run.info.run_id)
    mlflow_client.create_registered_model(MODEL)
    version = mlflow_client.create_model_version(
        MODEL,
        source=str(run_dir / "model"),
        run_id=run.info.run_id,
        tags={"holdout_uri": holdout_uri, "lineage.training_run_id": run.info.run_id},
    )
    mlflow_client.set_registered_model_alias(MODEL, "champion", version.version)
    return str(version.version)


def _predictions(
    state: Path,
    version: str,
    interval: date = INTERVAL,
    *,
    rows: int = 1000,
    covariate_drift: float = 0.0,
    scores: np.ndarray | None = None,
    labelled: int | None = None,
) -> pd.DataFrame:
    """The prediction module's output for one interval; ``labelled`` keeps only that many labels."""
    frame = generate(interval, rows_per_batch=rows, covariate_drift=covariate_drift)
    label = CFG.label.column
    score = _scores(frame[label].to_numpy(), seed=2) if scores is None else scores
    frame = frame.assign(
        score=score,
        prediction=(score >= 0.5).astype(int),
        model_version=version,
        model_run_id="fake-run",
        scored_at=datetime.now(UTC),
    )
    if labelled is not None:
        frame[label] = frame[label].astype("float64")
        frame.loc[frame.index[labelled:], label] = np.nan
    key = predictions_key(MODEL, interval.isoformat())
    _write(frame, state / "lake" / key)
    return frame


@pytest.fixture(scope="module")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty, migrated MLflow database: copying it saves every test the schema migrations."""
    from mlops.core.tracking import client

    state = tmp_path_factory.mktemp("mlflow-template")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_ENV", "local")
        mp.setenv("MLOPS_STATE_DIR", str(state))
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            mp.delenv(name, raising=False)
        client().search_experiments()
    yield state / "mlflow" / "mlflow.db"


@pytest.fixture
def mlflow_db(state_dir: Path, empty_mlflow_db: Path) -> Path:
    target = state_dir / "mlflow" / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_mlflow_db, target)
    return target


@pytest.fixture
def champion(state_dir: Path, mlflow_db: Path) -> str:
    return _fake_champion(state_dir)


# ------------------------------------------------------------------------------------------ reference


def test_champion_reference_is_training_part_and_holdout_scores(state_dir: Path, champion: str) -> None:
    reference, scores, source_rows = champion_reference(MODEL, champion)
    ts = reference[CFG.timestamp_column]
    assert len(reference) == source_rows == 5 * 700  # under the drift gate's sample size: every row
    assert ts.max() < pd.Timestamp(TRAIN_START + timedelta(days=5), tz="UTC")
    assert len(scores) == 2 * 700
    assert scores.min() > 0.0 and scores.max() < 1.0
    again = champion_reference(MODEL, champion)
    assert again[0] is reference and again[1] is scores  # cached in-process


# ----------------------------------------------------------------------------------------- monitoring


def test_same_distribution_no_drift_and_quality_within_guardrails(state_dir: Path, champion: str) -> None:
    _predictions(state_dir, champion)
    result = monitor_interval(MODEL, INTERVAL.isoformat())
    assert result.champion_version == champion
    assert not result.drift_detected
    assert result.drift_share <= CFG.monitoring.drift_share_threshold
    assert result.prediction_ks <= CFG.monitoring.prediction_drift_threshold
    assert result.quality is not None and result.quality["roc_auc"] > 0.75
    assert result.guardrail_breaches == []
    assert set(result.reports) == {"drift", "drift_json", "quality"}
    report_dir = state_dir / "reports" / MODEL / "monitoring" / INTERVAL.isoformat()
    for path in result.reports.values():
        assert Path(path).parent == report_dir and Path(path).stat().st_size > 500
    assert 'data-verdict="PASS"' in Path(result.reports["quality"]).read_text()
    json.dumps(result.to_dict())

    from mlops.core.tracking import client

    run = client().get_run(result.mlflow_run_id)
    assert run.data.tags["interval"] == INTERVAL.isoformat()
    assert run.data.tags["champion_version"] == champion
    assert run.data.tags["drift_detected"] == "false"
    assert {"drift_share", "prediction_ks", "quality_roc_auc"} <= set(run.data.metrics)
    artifacts = {a.path for a in client().list_artifacts(result.mlflow_run_id, "reports")}
    assert artifacts == {"reports/drift.html", "reports/drift.json", "reports/quality.html"}

    rerun = monitor_interval(MODEL, INTERVAL.isoformat())
    assert rerun.mlflow_run_id == result.mlflow_run_id  # one run per interval


def test_planted_covariate_drift_is_detected(state_dir: Path, champion: str) -> None:
    _predictions(state_dir, champion, covariate_drift=1.0)
    result = monitor_interval(MODEL, INTERVAL.isoformat())
    assert result.drift_detected and result.feature_drift
    assert result.drift_share > CFG.monitoring.drift_share_threshold
    assert {"annual_income", "credit_utilization", "debt_to_income"} <= set(result.drifted_features)
    extra = result.event_extra()
    json.dumps(extra)
    assert extra["window"] == INTERVAL.isoformat()
    assert extra["champion_version"] == champion
    assert extra["drifted_features"] == result.drifted_features
    assert set(extra["drift_scores"]) == set(result.drifted_features)
    assert all(isinstance(v, float) for v in extra["drift_scores"].values())
    assert extra["drift_share"] == result.drift_share
    assert extra["prediction_ks"] == result.prediction_ks


def test_prediction_drift_alone_triggers(state_dir: Path, champion: str) -> None:
    frame = generate(INTERVAL, rows_per_batch=1000)
    shifted = np.clip(_scores(frame[CFG.label.column].to_numpy(), seed=2) + 0.3, 0.0, 1.0)
    _predictions(state_dir, champion, scores=shifted)
    result = monitor_interval(MODEL, INTERVAL.isoformat())
    assert not result.feature_drift
    assert result.prediction_drift and result.drift_detected
    assert result.prediction_ks > CFG.monitoring.prediction_drift_threshold
    assert result.event_extra()["drifted_features"] == []


def test_quality_guardrail_breach_on_noise_scores(state_dir: Path, champion: str) -> None:
    frame = generate(INTERVAL, rows_per_batch=1000)
    # The same score distribution as a good model, but shuffled: no prediction drift, no signal.
    noise = np.random.default_rng(3).permutation(_scores(frame[CFG.label.column].to_numpy(), seed=2))
    _predictions(state_dir, champion, scores=noise)
    result = monitor_interval(MODEL, INTERVAL.isoformat())
    assert not result.drift_detected
    assert result.quality is not None and result.quality["roc_auc"] < 0.6
    assert len(result.guardrail_breaches) == 1
    assert result.guardrail_breaches[0].startswith("roc_auc 0.")
    assert result.guardrail_breaches[0].endswith(f"< {CFG.monitoring.min_quality['roc_auc']:g}")
    assert 'data-verdict="FAIL"' in Path(result.reports["quality"]).read_text()


def test_too_few_labels_are_not_judged(state_dir: Path, champion: str) -> None:
    frame = generate(INTERVAL, rows_per_batch=1000)
    noise = np.random.default_rng(3).permutation(_scores(frame[CFG.label.column].to_numpy(), seed=2))
    _predictions(state_dir, champion, scores=noise, labelled=CFG.monitoring.min_rows_for_quality - 1)
    result = monitor_interval(MODEL, INTERVAL.isoformat())
    assert result.quality is None
    assert result.guardrail_breaches == []
    assert result.labelled_rows == CFG.monitoring.min_rows_for_quality - 1
    assert "quality" not in result.reports


def test_no_predictions_is_nothing_to_do(state_dir: Path) -> None:
    with pytest.raises(NothingToDo, match="no champion predictions"):
        monitor_interval(MODEL, INTERVAL.isoformat())


# ----------------------------------------------------------------------------------------- retraining


def test_retrain_window_merges_events() -> None:
    assert retrain_window([], 30) == (None, 30)
    assert retrain_window([{"window": "2026-03-09", "drift_share": 0.5}], 30) == ("2026-03-09", 30)
    merged = [{"window": "2026-03-09"}, {"window": "2026-03-11"}, {"window": "2026-03-10"}]
    assert retrain_window(merged, 14) == ("2026-03-11", 14)
    assert retrain_window([{"note": "manual"}], 7) == (None, 7)


def test_cooldown_counts_from_the_latest_training_run(state_dir: Path, mlflow_db: Path) -> None:
    from mlops.core.tracking import client, ensure_experiment

    assert cooldown_remaining(MODEL, 30) == 0.0
    mlflow_client = client()
    for other in (f"{MODEL}__monitoring", f"{MODEL}__alias_history"):  # not training runs
        mlflow_client.create_run(ensure_experiment(other))
    assert cooldown_remaining(MODEL, 30) == 0.0
    manual = mlflow_client.create_run(ensure_experiment(MODEL), run_name="manual", tags={"airflow.trigger": "manual"})
    mlflow_client.set_terminated(manual.info.run_id)
    assert cooldown_remaining(MODEL, 30) == 0.0  # a manual training does not hold back a drift retrain
    run = mlflow_client.create_run(ensure_experiment(MODEL), run_name="retrain", tags={"airflow.trigger": "drift"})
    mlflow_client.set_terminated(run.info.run_id, status="FAILED")  # failed retrains count too
    remaining = cooldown_remaining(MODEL, 30)
    assert 29 * 60 < remaining <= 30 * 60
    ended_ms = mlflow_client.get_run(run.info.run_id).info.end_time
    ended = datetime.fromtimestamp(ended_ms / 1000, tz=UTC)  # counted from the end of the last retrain
    assert cooldown_remaining(MODEL, 30, now=ended + timedelta(minutes=10)) == pytest.approx(20 * 60)
    assert cooldown_remaining(MODEL, 30, now=ended + timedelta(minutes=31)) == 0.0
    # A retrain on newly landed labels is event-triggered too: the newer of the two counts.
    labels = mlflow_client.create_run(ensure_experiment(MODEL), run_name="labels", tags={"airflow.trigger": "labels"})
    mlflow_client.set_terminated(labels.info.run_id)
    labels_ended_ms = mlflow_client.get_run(labels.info.run_id).info.end_time
    assert labels_ended_ms >= ended_ms
    labels_ended = datetime.fromtimestamp(labels_ended_ms / 1000, tz=UTC)
    assert cooldown_remaining(MODEL, 30, now=labels_ended + timedelta(minutes=5)) == pytest.approx(25 * 60)
    assert cooldown_remaining(MODEL, 0) == 0.0
    assert cooldown_remaining("tumor_diagnosis", 30) == 0.0


def test_backlogs_catch_new_days_whose_events_airflow_merged_away(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops.quality import monitoring
    from mlops.quality.monitoring import monitoring_backlog, scoring_backlog

    lake = state_dir / "lake"

    def touch(key: str) -> None:
        (lake / key).parent.mkdir(parents=True, exist_ok=True)
        (lake / key).write_bytes(b"")

    window_end: list[str | None] = [None]
    monkeypatch.setattr(monitoring, "_champion_window_end", lambda model: window_end[0])
    for day in range(1, 8):
        touch(f"validated/{MODEL}/date=2026-03-0{day}/data.parquet")
    touch(f"predictions/{MODEL}/date=2026-03-01/champion.parquet")
    assert scoring_backlog(MODEL) == []  # no champion: nothing to score with
    window_end[0] = "2026-03-04"  # the champion trained on days up to 03-04
    # Days it trained on are never in the backlog, only the new ones after the newest scored day.
    assert scoring_backlog(MODEL) == ["2026-03-05", "2026-03-06", "2026-03-07"]
    touch(f"predictions/{MODEL}/date=2026-03-06/champion.parquet")
    touch(f"predictions/{MODEL}/date=2026-03-06/shadow.parquet")
    assert scoring_backlog(MODEL) == ["2026-03-07"]
    assert monitoring_backlog(MODEL) == []  # nothing monitored yet
    touch(f"monitoring/{MODEL}/date=2026-03-01/result.json")
    assert monitoring_backlog(MODEL) == ["2026-03-06"]
    touch(f"predictions/{MODEL}/date=2026-03-07/champion.parquet")
    touch(f"monitoring/{MODEL}/date=2026-03-06/result.json")
    assert monitoring_backlog(MODEL) == ["2026-03-07"]
    assert scoring_backlog(MODEL) == []
