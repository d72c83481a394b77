"""Training CLI and registry on a real (SQLite) MLflow store: metrics, holdout, aliases, history."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops.core import errors
from mlops.core.config import get_config
from mlops.core.tracking import ensure_experiment
from mlops.features import steps as feature_steps
from mlops.model import launch, registry, scoring, signing, train
from mlops_dev.datagen import GENERATORS

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


# ------------------------------------------------------------------- infrastructure failures, write-once


def _children(name: str) -> list[int]:
    """Pids of this process's children whose command line holds ``name``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and name in cmdline:
            found.append(int(stat.parent.name))
    return found


def _train_in_thread(
    model: str, training_set: dict[str, str], **kwargs: Any
) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = launch.train_local(model, training_set, run_name="d/r", **kwargs)
        except BaseException as exc:  # inspected by the test
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def _running_runs(model: str) -> list[Any]:
    import mlflow

    registry.client()
    experiment = mlflow.get_experiment_by_name(model)
    if experiment is None:
        return []
    runs: list[Any] = registry.client().search_runs(
        [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    return runs


def test_killed_training_is_a_retriable_infrastructure_error_and_its_run_ends_failed(
    state_dir: Path, tmp_path: Path
) -> None:
    model = "tumor_diagnosis"
    training_set = {"uri": _training_set(model, tmp_path, days=4), "holdout_uri": str(tmp_path / "h.parquet")}
    ensure_experiment(model)  # the SQLite store is created before the trainer and this test share it
    thread, outcome = _train_in_thread(model, training_set)
    deadline = time.monotonic() + 240
    while not _running_runs(model):  # kill it mid-run, with its MLflow run open (as the OOM killer would)
        assert thread.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.5)
    (child,) = _children("mlops.model.train")
    os.kill(child, signal.SIGKILL)
    thread.join(timeout=120)
    error = outcome["error"]
    assert isinstance(error, errors.InfrastructureError) and not isinstance(error, errors.GateFailed)
    assert "was killed by SIGKILL (exit -9)" in str(error) and "retrying" in str(error)
    assert "\n" not in str(error)
    assert _running_runs(model) == []
    (run,) = registry.client().search_runs(
        [registry.client().get_experiment_by_name(model).experiment_id], filter_string="attributes.status = 'FAILED'"
    )
    assert run.data.tags[launch.ATTEMPT_TAG] and run.data.tags["mlops.ended_by"].endswith("FAILED")


def test_training_past_its_timeout_is_killed_with_its_process_group(state_dir: Path, tmp_path: Path) -> None:
    model = "tumor_diagnosis"
    training_set = {"uri": _training_set(model, tmp_path, days=4), "holdout_uri": str(tmp_path / "h.parquet")}
    started = time.monotonic()
    thread, outcome = _train_in_thread(model, training_set, timeout_s=1.5)
    while not _children("mlops.model.train") and thread.is_alive():
        time.sleep(0.05)
    children = _children("mlops.model.train")
    thread.join(timeout=120)
    assert time.monotonic() - started < 60  # not the full training
    error = outcome["error"]
    assert isinstance(error, errors.InfrastructureError)
    assert f"training of {model} timed out after" in str(error) and "process group killed" in str(error)
    for pid in children:  # reaped: no process of the group is left
        assert not Path(f"/proc/{pid}").exists() or "mlops.model.train" not in Path(f"/proc/{pid}/cmdline").read_text()
    assert _running_runs(model) == []


def test_training_that_rejects_its_data_is_a_verdict(state_dir: Path, tmp_path: Path) -> None:
    model = "tumor_diagnosis"
    one_day = {"uri": _training_set(model, tmp_path, days=1), "holdout_uri": str(tmp_path / "h.parquet")}
    with pytest.raises(errors.GateFailed, match=r"exit 2.*time split needs data"):
        launch.train_local(model, one_day, run_name="d/r")


@pytest.mark.parametrize(
    ("code", "words"),
    [(-9, "killed by SIGKILL (exit -9) (out of memory?"), (137, "killed by SIGKILL (exit 137)"), (1, "crashed")],
)
def test_how_a_training_process_died_is_named(code: int, words: str) -> None:
    assert words in launch._death(code)


def test_training_set_is_written_once_keyed_by_its_content(tmp_path: Path) -> None:
    from mlops.core.storage import open_store

    lake = open_store(str(tmp_path / "lake"))
    first = pd.DataFrame({"a": [1, 2, 3]})
    key, digest = feature_steps.write_training_set(lake, "runs/m/r1", first)
    assert key == f"runs/m/r1/training_set-{digest[:16]}.parquet"
    path = tmp_path / "lake" / key
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    written = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert feature_steps.write_training_set(lake, "runs/m/r1", first) == (key, digest)
    assert path.stat().st_mtime_ns == written  # the same set is not written again
    other, other_digest = feature_steps.write_training_set(lake, "runs/m/r1", pd.DataFrame({"a": [9]}))
    assert other != key and other_digest != digest  # a cleared task's different set lands beside it
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # the registered one is untouched


def test_local_training_scores_a_holdout_of_its_own_per_attempt(state_dir: Path, tmp_path: Path) -> None:
    model = "tumor_diagnosis"
    base = tmp_path / "holdout.parquet"
    base.write_bytes(b"the holdout a registered version points at")
    training_set = {"uri": _training_set(model, tmp_path, days=4), "holdout_uri": str(base)}
    result = launch.train_local(model, training_set, run_name="d/r", tags={"airflow.dag_run_id": "r"})
    assert result["holdout_uri"] != str(base) and result["holdout_uri"].startswith(str(tmp_path / "holdout-"))
    assert len(pd.read_parquet(result["holdout_uri"])) == result["rows_holdout"]
    assert base.read_bytes() == b"the holdout a registered version points at"
    run = registry.client().get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags[launch.ATTEMPT_TAG]
