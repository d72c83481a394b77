"""Training CLI and registry on a real (SQLite) MLflow store: metrics, holdout, aliases, history."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from mlops import registry, scoring, signing, train
from mlops.config import get_config
from mlops.datagen import GENERATORS

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / "include" / "models"


def _training_set(model: str, tmp: Path, days: int = 6) -> str:
    frames = [GENERATORS[model](date(2026, 3, 1) + timedelta(days=i), rows_per_batch=300) for i in range(days)]
    path = tmp / f"{model}_training_set.parquet"
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)
    return str(path)


@pytest.mark.parametrize("model", ["credit_risk", "tumor_diagnosis"])
def test_training_cli_logs_model_and_writes_result(state_dir: Path, tmp_path: Path, model: str) -> None:
    cfg = get_config(model, MODELS_DIR).config
    uri = _training_set(model, tmp_path)
    holdout = str(tmp_path / "holdout.parquet")
    out = tmp_path / "result.json"
    code = train.main(
        [
            "--model",
            model,
            "--training-set",
            uri,
            "--holdout-output",
            holdout,
            "--tags",
            json.dumps({"airflow.dag_run_id": "t1"}),
            "--output",
            str(out),
            "--estimator-params",
            "{}",
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu"  # no GPU on this machine
    assert result["rows_holdout"] > 0 and result["rows_train"] > result["rows_holdout"]
    assert result["metrics"]["roc_auc"] > cfg.gates.quality.min_metrics["roc_auc"]
    scored = pd.read_parquet(holdout)
    assert len(scored) == result["rows_holdout"] and train.PROBA_COLUMN in scored
    # The holdout is the most recent days, strictly after every training row.
    assert scored[cfg.timestamp_column].min() > pd.Timestamp(result["train_end"])
    run = registry.client().get_run(result["run_id"])
    assert run.data.tags["airflow.dag_run_id"] == "t1"
    assert run.data.tags["model_sha256"] == result["model_sha256"]
    assert run.data.metrics["holdout_roc_auc"] == pytest.approx(result["metrics"]["roc_auc"])
    # Lineage of the data: both frames as dataset inputs, with every column typed and counted rows.
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training_set", "holdout"}
    assert {t.key: t.value for t in inputs["training_set"].tags}["mlflow.data.context"] == "training"
    assert json.loads(inputs["training_set"].dataset.profile)["num_rows"] == result["rows_train"]
    assert json.loads(inputs["holdout"].dataset.profile)["num_rows"] == result["rows_holdout"]
    columns = [c["name"] for c in json.loads(inputs["training_set"].dataset.schema)["mlflow_colspec"]]
    assert set(columns) == set(pd.read_parquet(uri).columns)
    assert inputs["training_set"].dataset.digest != inputs["holdout"].dataset.digest
    assert inputs["holdout"].dataset.source == json.dumps({"uri": holdout})
    # Signed with the local key; the registered version loads through the verified (skops) loader
    # and scores the holdout exactly as training did, XGBoost inside the pipeline included.
    local_key = state_dir / "keys" / "signing-key.pem"
    assert result["model_signed_by"] == signing.signer_fingerprint(local_key)
    assert run.data.tags["model_signed_by"] == result["model_signed_by"]
    version = registry.register_version(model, result["run_id"], {"model_sha256": result["model_sha256"]})
    loaded = scoring.load_verified(model, version)
    folder = state_dir / "model_cache" / model / version
    assert (folder / signing.SIGNATURE_FILE).is_file()
    assert signing.skops_model(folder, name=model).trusted_types == tuple(train.trusted_types(loaded.pipeline))
    proba = loaded.pipeline.predict_proba(scored[cfg.feature_columns])[:, 1]
    assert proba == pytest.approx(scored[train.PROBA_COLUMN].to_numpy(), abs=1e-6)
    scoring.clear_cache()


def test_training_cli_rejects_bad_estimator_params(state_dir: Path, tmp_path: Path) -> None:
    uri = _training_set("tumor_diagnosis", tmp_path, days=4)
    code = train.main(
        [
            "--model",
            "tumor_diagnosis",
            "--training-set",
            uri,
            "--holdout-output",
            str(tmp_path / "h.parquet"),
            "--estimator-params",
            "{not json",
        ]
    )
    assert code == 2


def test_xgboost_goes_to_cuda_only_when_a_gpu_is_visible() -> None:
    _, cpu = train.build_estimator("xgboost", {"n_estimators": 2}, use_gpu=False)
    est, gpu = train.build_estimator("xgboost", {"n_estimators": 2}, use_gpu=True)
    assert (cpu, gpu) == ("cpu", "cuda")
    assert est.get_params()["device"] == "cuda"
    _, sk = train.build_estimator("logistic_regression", {}, use_gpu=True)
    assert sk == "cpu"
    # Only allow-listed families are built; an import path is not a family.
    with pytest.raises(ValueError, match=r"unknown estimator family 'os\.system'"):
        train.build_estimator("os.system", {}, use_gpu=False)
    with pytest.raises(ValueError, match="unknown parameter 'command'"):
        train.build_estimator("xgboost", {"command": "id"}, use_gpu=False)


def test_time_split_needs_both_sides() -> None:
    cfg = get_config("credit_risk", MODELS_DIR).config
    one_day = GENERATORS["credit_risk"](date(2026, 3, 1), rows_per_batch=50)
    with pytest.raises(ValueError, match="time split needs data before and after"):
        train.time_split(one_day, cfg, 2)


def test_register_aliases_and_history(state_dir: Path, tmp_path: Path) -> None:
    uri = _training_set("tumor_diagnosis", tmp_path, days=4)
    runs = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        assert (
            train.main(
                [
                    "--model",
                    "tumor_diagnosis",
                    "--training-set",
                    uri,
                    "--holdout-output",
                    str(tmp_path / f"h{i}.parquet"),
                    "--output",
                    str(out),
                ]
            )
            == 0
        )
        runs.append(json.loads(out.read_text()))
    # As the pipeline's register step does: the checksum recorded with the version.
    tags = [{"model_sha256": r["model_sha256"]} for r in runs]
    v1 = registry.register_version("tumor_diagnosis", runs[0]["run_id"], {"lineage.git_commit": "abc", **tags[0]})
    assert registry.register_version("tumor_diagnosis", runs[0]["run_id"], {}) == v1  # idempotent per run
    v2 = registry.register_version("tumor_diagnosis", runs[1]["run_id"], tags[1])
    assert v2 != v1
    assert registry.get_alias_version("tumor_diagnosis", registry.CHAMPION) is None
    registry.set_alias("tumor_diagnosis", registry.CHAMPION, v1, actor="test", reason="first")
    change = registry.set_alias(
        "tumor_diagnosis", registry.CHAMPION, v2, actor="test", reason="better", dag_id="d", dag_run_id="r"
    )
    assert (change.from_version, change.to_version) == (v1, v2)
    assert registry.get_alias_version("tumor_diagnosis", registry.CHAMPION) == v2
    history = registry.alias_history("tumor_diagnosis", registry.CHAMPION)
    assert [(h.from_version, h.to_version, h.reason) for h in history] == [
        (None, v1, "first"),
        (v1, v2, "better"),
    ]
    assert registry.version_tags("tumor_diagnosis", v1)["lineage.git_commit"] == "abc"
    with pytest.raises(Exception, match=r"(?i)not found|does not exist|RESOURCE_DOES_NOT_EXIST"):
        registry.set_alias("tumor_diagnosis", registry.CHAMPION, "99", actor="test", reason="nope")
    assert registry.get_alias_version("tumor_diagnosis", registry.CHAMPION) == v2  # unchanged
    # Rollback: one step back to the previous champion, recorded with who and why.
    back = registry.rollback("tumor_diagnosis", actor="alice", reason="bad release")
    assert back is not None
    assert (back.from_version, back.to_version, back.actor) == (v2, v1, "alice")
    assert back.reason == "rollback: bad release"
    assert registry.get_alias_version("tumor_diagnosis", registry.CHAMPION) == v1
    # v2 was rolled back away from, so there is no earlier champion to fall back to.
    with pytest.raises(registry.RollbackError, match="no earlier champion"):
        registry.rollback("tumor_diagnosis", actor="breaker", reason="again")
    with pytest.raises(registry.RollbackError, match="already the champion"):
        registry.rollback("tumor_diagnosis", v1, actor="bob", reason="noop")
    # The breaker only undoes the version that breached: v2 is no longer champion, so nothing moves.
    assert registry.rollback("tumor_diagnosis", actor="breaker", reason="late", only_if_champion=v2) is None
    assert registry.get_alias_version("tumor_diagnosis", registry.CHAMPION) == v1
    # Re-setting the alias it already has records nothing.
    before = len(registry.alias_history("tumor_diagnosis"))
    registry.set_alias("tumor_diagnosis", registry.CHAMPION, v1, actor="rerun", reason="same")
    assert len(registry.alias_history("tumor_diagnosis")) == before
    forward = registry.rollback("tumor_diagnosis", v2, actor="bob", reason="fixed upstream")
    assert forward is not None
    assert (forward.from_version, forward.to_version) == (v1, v2)
    assert len(registry.alias_history("tumor_diagnosis", registry.CHAMPION)) == 4
    # Rollback verifies its target first: a changed byte in v1's verified copy and champion stays v2.
    skops_file = state_dir / "model_cache" / "tumor_diagnosis" / v1 / "model.skops"
    data = bytearray(skops_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    skops_file.write_bytes(bytes(data))
    with pytest.raises(scoring.ModelIntegrityError, match=rf"v{v1}: its files differ .*changed model.skops"):
        registry.rollback("tumor_diagnosis", v1, actor="bob", reason="to a tampered version")
    assert registry.get_alias_version("tumor_diagnosis", registry.CHAMPION) == v2
    assert len(registry.alias_history("tumor_diagnosis", registry.CHAMPION)) == 4


def test_training_without_its_signing_key_fails_before_fitting(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLOPS_SIGNING_KEY_FILE", str(tmp_path / "absent.pem"))
    holdout = tmp_path / "h.parquet"
    code = train.main(
        [
            "--model",
            "tumor_diagnosis",
            "--training-set",
            _training_set("tumor_diagnosis", tmp_path, days=4),
            "--holdout-output",
            str(holdout),
        ]
    )
    assert code == 2
    assert "training failed: model signing key " in capsys.readouterr().err
    assert not holdout.exists()  # written right after the fit: the fit never ran


def test_dataset_input_digest_covers_every_row_and_schema_every_column() -> None:
    frame = pd.DataFrame({"a": range(30_000), "b": ["x"] * 30_000, "t": pd.Timestamp("2026-03-01", tz="UTC")})
    first = train.dataset_input(frame, source="/lake/ts.parquet", name="training_set")
    again = train.dataset_input(frame.copy(), source="/lake/ts.parquet", name="training_set")
    late_change = frame.copy()
    late_change.loc[29_999, "b"] = "y"  # beyond MLflow's own 10,000-row digest
    changed = train.dataset_input(late_change, source="/lake/ts.parquet", name="training_set")
    assert first.digest == again.digest != changed.digest
    assert first.schema is not None and first.schema.input_names() == ["a", "b", "t"]
    assert first.profile == {"num_rows": 30_000, "num_elements": 90_000}
