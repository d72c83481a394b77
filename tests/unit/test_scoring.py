"""Batch scoring: champion predictions, shadow challenger, the verified model cache, tamper detection.

Two small tumor_diagnosis models are trained once per module into a template state folder (validated
partitions, Feast registry + online store, MLflow registry); each test copies it into its own
``state_dir`` so alias and tag changes never leak between tests.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest

from mlops import features, registry, scoring, train
from mlops.config import get_config
from mlops.datagen import GENERATORS
from mlops.pipeline import NothingToDo

MODEL = "tumor_diagnosis"
DAYS = [date(2026, 3, 1) + timedelta(days=i) for i in range(3)]
SCORED_DAY = DAYS[-1]
ROWS = 80


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("scoring") / "state"
    state.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_ENV", "local")
        mp.setenv("MLOPS_STATE_DIR", str(state))
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_LANDING_URI", "MLOPS_LAKE_URI"):
            mp.delenv(name, raising=False)
        cfg = get_config(MODEL).config
        frames = []
        for day in DAYS:
            frame = GENERATORS[MODEL](day, rows_per_batch=ROWS)
            folder = state / "lake" / "validated" / MODEL / f"date={day.isoformat()}"
            folder.mkdir(parents=True)
            frame.to_parquet(folder / "data.parquet", index=False)
            frames.append(frame)
        features.apply(cfg)
        start = datetime.combine(DAYS[0], datetime.min.time(), tzinfo=UTC)
        features.materialize_interval(cfg, start, start + timedelta(days=len(DAYS)))
        training_set = state / "training_set.parquet"
        pd.concat(frames, ignore_index=True).to_parquet(training_set, index=False)
        versions = []
        for i, params in enumerate([{}, {"C": 0.001}]):  # a much weaker challenger: scores differ
            result = train.train(
                cfg,
                str(training_set),
                holdout_uri=str(state / f"holdout{i}.parquet"),
                estimator_params=params,
            )
            tags = {"model_sha256": result["model_sha256"]}
            versions.append(registry.register_version(MODEL, result["run_id"], tags))
        registry.set_alias(MODEL, registry.CHAMPION, versions[0], actor="test", reason="setup")
    yield {"state": state, "versions": versions, "validated": frames[-1]}


@pytest.fixture
def env(state_dir: Path, template: dict[str, Any]) -> Iterator[dict[str, Any]]:
    shutil.copytree(template["state"], state_dir, dirs_exist_ok=True)
    scoring.clear_cache()
    yield {**template, "state": state_dir}
    scoring.clear_cache()


def _prediction_path(state: Path, name: str = "champion") -> Path:
    return state / "lake" / "predictions" / MODEL / f"date={SCORED_DAY.isoformat()}" / f"{name}.parquet"


def test_champion_scores_every_validated_row(env: dict[str, Any]) -> None:
    cfg = get_config(MODEL).config
    champion = env["versions"][0]
    result = scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="manual__1")
    assert result["rows"] == ROWS and result["champion_version"] == champion
    assert result["shadow"] is None and result["rows_without_features"] == 0
    out = pd.read_parquet(_prediction_path(env["state"]))
    assert result["predictions_uri"].endswith(f"predictions/{MODEL}/date={SCORED_DAY}/champion.parquet")
    assert len(out) == len(env["validated"])
    expected = {cfg.entity.join_key, cfg.timestamp_column, cfg.label.column, *cfg.feature_columns}
    assert expected | {"score", "prediction", "model_version", "model_run_id", "scored_at"} <= set(out)
    assert (out["model_version"] == champion).all()
    assert out["model_run_id"].nunique() == 1 and out["model_run_id"].iloc[0]
    assert out["score"].between(0, 1).all()
    assert (out["prediction"] == (out["score"] >= 0.5).astype(int)).all()
    assert str(out["scored_at"].dt.tz) == "UTC"
    # Features came from the online store and match the validated rows they were materialized from.
    validated = env["validated"].set_index(cfg.entity.join_key)
    joined = out.set_index(cfg.entity.join_key).loc[validated.index]
    pd.testing.assert_series_equal(
        joined["mean_radius"], validated["mean_radius"], check_names=False, check_exact=False
    )
    assert (joined[cfg.label.column] == validated[cfg.label.column]).all()
    # The champion separates the classes it was trained on.
    y = train.binary_target(out[cfg.label.column], cfg)
    assert train.classification_metrics(y.to_numpy(), out["score"].to_numpy())["roc_auc"] > 0.9
    # Idempotent: re-scoring overwrites the same file with the same scores.
    again = scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="manual__2")
    assert again["predictions_uri"] == result["predictions_uri"]
    rescored = pd.read_parquet(_prediction_path(env["state"]))
    assert len(rescored) == ROWS and rescored["score"].tolist() == out["score"].tolist()


def test_shadow_scores_only_a_distinct_challenger(env: dict[str, Any]) -> None:
    champion, challenger = env["versions"]
    registry.set_alias(MODEL, registry.CHALLENGER, champion, actor="test", reason="same as champion")
    same = scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="r0")
    assert same["shadow"] is None and not _prediction_path(env["state"], "shadow").exists()

    registry.set_alias(MODEL, registry.CHALLENGER, challenger, actor="test", reason="shadow")
    result = scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="r1")
    shadow = result["shadow"]
    assert shadow is not None and shadow["challenger_version"] == challenger
    champ = pd.read_parquet(_prediction_path(env["state"]))
    chall = pd.read_parquet(_prediction_path(env["state"], "shadow"))
    assert (champ["model_version"] == champion).all() and (chall["model_version"] == challenger).all()
    assert len(chall) == len(champ) == ROWS
    metrics = shadow["metrics"]
    assert metrics["agreement"] == pytest.approx((champ["prediction"] == chall["prediction"]).mean())
    assert metrics["mean_abs_score_diff"] == pytest.approx((champ["score"] - chall["score"]).abs().mean())
    assert metrics["mean_abs_score_diff"] > 0
    assert metrics["labelled_rows"] == ROWS
    assert metrics["delta_roc_auc"] == pytest.approx(metrics["challenger_roc_auc"] - metrics["champion_roc_auc"])
    assert metrics["delta_accuracy"] == pytest.approx(metrics["challenger_accuracy"] - metrics["champion_accuracy"])
    run = registry.client().get_run(shadow["mlflow_run_id"])
    assert run.data.tags["champion_version"] == champion
    assert run.data.tags["challenger_version"] == challenger
    assert run.data.tags["interval"] == SCORED_DAY.isoformat()
    assert run.data.metrics["agreement"] == pytest.approx(metrics["agreement"])
    experiment = mlflow.get_experiment_by_name(f"{MODEL}__shadow")
    assert experiment is not None and run.info.experiment_id == experiment.experiment_id
    # Re-scoring logs into the same run and overwrites the same shadow file.
    again = scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="r2")
    assert again["shadow"]["mlflow_run_id"] == shadow["mlflow_run_id"]
    # Once the challenger is gone, its old shadow file does not linger as if current.
    registry.client().delete_registered_model_alias(MODEL, registry.CHALLENGER)
    assert scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="r3")["shadow"] is None
    assert not _prediction_path(env["state"], "shadow").exists()


def test_each_version_is_downloaded_and_loaded_once(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"download": 0, "load": 0}
    download, load = mlflow.artifacts.download_artifacts, mlflow.sklearn.load_model

    def counted_download(*args: Any, **kwargs: Any) -> Any:
        calls["download"] += 1
        return download(*args, **kwargs)

    def counted_load(*args: Any, **kwargs: Any) -> Any:
        calls["load"] += 1
        return load(*args, **kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", counted_download)
    monkeypatch.setattr(mlflow.sklearn, "load_model", counted_load)
    version = env["versions"][0]
    first = scoring.load_verified(MODEL, version)
    assert calls == {"download": 1, "load": 1}
    assert (env["state"] / "model_cache" / MODEL / version / "MLmodel").is_file()
    assert first.sha256 == registry.version_tags(MODEL, version)["model_sha256"]
    assert scoring.load_verified(MODEL, version) is first
    scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="r")
    scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="r")
    assert calls == {"download": 1, "load": 1}
    # A new process (empty memory cache) reuses the on-disk copy after verifying it again.
    scoring.clear_cache()
    second = scoring.load_verified(MODEL, version)
    assert calls == {"download": 1, "load": 2} and second is not first and second.sha256 == first.sha256


def test_tampered_cache_is_refused_and_nothing_is_written(env: dict[str, Any]) -> None:
    version = env["versions"][0]
    scoring.load_verified(MODEL, version)
    scoring.clear_cache()  # as in a new process: the on-disk copy must be verified again
    skops = env["state"] / "model_cache" / MODEL / version / "model.skops"
    data = bytearray(skops.read_bytes())
    data[len(data) // 2] ^= 0xFF
    skops.write_bytes(bytes(data))
    with pytest.raises(scoring.ModelIntegrityError, match=rf"refusing to load {MODEL} v{version}: checksum"):
        scoring.load_verified(MODEL, version)
    with pytest.raises(scoring.ModelIntegrityError, match="checksum mismatch"):
        scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="r")
    assert not _prediction_path(env["state"]).exists()


def test_changed_or_missing_registered_checksum_is_refused(env: dict[str, Any]) -> None:
    version = env["versions"][0]
    mlflow_client = registry.client()
    mlflow_client.set_model_version_tag(MODEL, version, "model_sha256", "ab12" * 16)
    with pytest.raises(scoring.ModelIntegrityError, match=r"registered ab12ab12ab12…, found "):
        scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="r")
    assert not _prediction_path(env["state"]).exists()
    mlflow_client.delete_model_version_tag(MODEL, version, "model_sha256")
    with pytest.raises(scoring.ModelIntegrityError, match="no model_sha256 tag"):
        scoring.load_verified(MODEL, version)


def test_no_champion_is_nothing_to_do(env: dict[str, Any]) -> None:
    registry.client().delete_registered_model_alias(MODEL, registry.CHAMPION)
    with pytest.raises(NothingToDo, match="no champion to score with"):
        scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="r")
    assert not _prediction_path(env["state"]).exists()
