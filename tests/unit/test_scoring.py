"""Batch scoring: champion predictions, shadow challenger, the verified model cache, tamper detection.

Every loader (scoring and shadow, the champion gate, rollback) refuses a model that is unsigned,
signed by an untrusted key, changed in any file, or stored as a pickle, even with its tags rewritten.

Two small tumor_diagnosis models are trained once per module into a template state folder (validated
partitions, Feast registry + online store, MLflow registry); each test copies it into its own
``state_dir`` so alias and tag changes never leak between tests.
"""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import mlflow
from mlops.core.config import get_config
from mlops.core.errors import NothingToDo
from mlops.core.settings import get_settings
from mlops.core.tracking import directory_checksum
from mlops.features import store as features
from mlops.model import registry, scoring, signing, train
from mlops.quality import steps as gate_steps
from mlops_dev.datagen import GENERATORS

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
        versions, results = [], []
        for i, params in enumerate([{}, {"C": 0.001}]):  # a much weaker challenger: scores differ
            result = train.train(
                cfg,
                str(training_set),
                holdout_uri=str(state / f"holdout{i}.parquet"),
                estimator_params=params,
            )
            tags = {"model_sha256": result["model_sha256"]}
            results.append(result)
            versions.append(registry.register_version(MODEL, result["run_id"], tags))
        registry.set_alias(MODEL, registry.CHAMPION, versions[0], actor="test", reason="setup")
    yield {"state": state, "versions": versions, "results": results, "validated": frames[-1]}


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
    assert train.classification_metrics(y.to_numpy(), out["score"].to_numpy(), cfg)["roc_auc"] > 0.9
    assert (out["prediction"] == (out["score"] >= cfg.label.decision_threshold)).all()
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
    import skops.io

    calls = {"download": 0, "load": 0}
    download, load = mlflow.artifacts.download_artifacts, skops.io.load
    loaded_with: list[Any] = []

    def counted_download(*args: Any, **kwargs: Any) -> Any:
        calls["download"] += 1
        return download(*args, **kwargs)

    def counted_load(*args: Any, **kwargs: Any) -> Any:
        calls["load"] += 1
        loaded_with.append(kwargs.get("trusted"))
        return load(*args, **kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", counted_download)
    monkeypatch.setattr(skops.io, "load", counted_load)
    version = env["versions"][0]
    first = scoring.load_verified(MODEL, version)
    assert calls == {"download": 1, "load": 1}
    folder = env["state"] / "model_cache" / MODEL / version
    assert (folder / "MLmodel").is_file() and (folder / signing.SIGNATURE_FILE).is_file()
    # skops trusted exactly the types training recorded in the signed MLmodel.
    flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["sklearn"]
    assert flavor["serialization_format"] == "skops"
    assert loaded_with == [flavor["skops_trusted_types"]] and loaded_with[0] == ["numpy.dtype"]
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
    with pytest.raises(
        scoring.ModelIntegrityError,
        match=rf"^refusing to load {MODEL} v{version}: its files differ from what was signed \(changed model.skops\)$",
    ):
        scoring.load_verified(MODEL, version)
    with pytest.raises(scoring.ModelIntegrityError, match="files differ from what was signed"):
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


# ----------------------------------------------------------------------------------------- signed models


def _store(version: str) -> Path:
    """The folder the registry serves ``version`` from (the logged model's artifacts)."""
    from urllib.parse import urlparse

    source = str(registry.client().get_model_version(MODEL, version).source)
    location = registry.client().get_logged_model(source.removeprefix("models:/")).artifact_location
    path = Path(urlparse(location).path)
    assert (path / "MLmodel").is_file(), path
    return path


@pytest.fixture
def store(env: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Each version's stored folder, restored after the test (the registry's rows point at the template)."""
    folders = {version: _store(version) for version in env["versions"]}
    backups = {}
    for version, folder in folders.items():
        backups[version] = tmp_path / f"backup-{version}"
        shutil.copytree(folder, backups[version])
    yield folders
    for version, folder in folders.items():
        shutil.rmtree(folder)
        shutil.copytree(backups[version], folder)


def _attacker_key(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "attacker.key"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


class _WritesMarker:
    """Unpickling this creates the marker file: stands for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _to_pickle(folder: Path, marker: Path) -> None:
    """The model file swapped for a pickle that runs code, and MLmodel rewritten to the pickle flavor."""
    (folder / "model.skops").unlink()
    (folder / "model.pkl").write_bytes(pickle.dumps(_WritesMarker(marker)))
    document = yaml.safe_load((folder / "MLmodel").read_text())
    document["flavors"]["sklearn"].update(serialization_format="pickle", pickled_model="model.pkl")
    document["flavors"]["sklearn"].pop("skops_trusted_types", None)
    document["flavors"]["python_function"]["model_path"] = "model.pkl"
    (folder / "MLmodel").write_text(yaml.safe_dump(document))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _resign(folder: Path, key: Path, tmp_path: Path) -> None:
    """Sign the stored files as loaders download them (MLflow adds a file to ``models:/`` downloads)."""
    version = next(v for v in registry.client().search_model_versions(f"name='{MODEL}'") if _store(v.version) == folder)
    staging = tmp_path / "resign"
    local = Path(mlflow.artifacts.download_artifacts(str(version.source), dst_path=str(staging)))
    signing.sign_model(local, key)
    shutil.copy(local / signing.SIGNATURE_FILE, folder / signing.SIGNATURE_FILE)
    shutil.rmtree(staging)


def _tamper(case: str, folder: Path, other: Path, tmp_path: Path, marker: Path) -> None:
    sig = folder / signing.SIGNATURE_FILE
    if case == "changed_byte":
        _flip_byte(folder / "model.skops")
    elif case == "added_file":
        (folder / "extra.txt").write_text("x")
    elif case == "removed_file":
        (folder / "requirements.txt").unlink()
    elif case == "no_signature":
        sig.unlink()
    elif case == "swapped_signature":
        shutil.copy(other / signing.SIGNATURE_FILE, sig)
    elif case == "attacker_resigned":
        _flip_byte(folder / "model.skops")
        _resign(folder, _attacker_key(tmp_path), tmp_path)
    elif case == "pickle_unsigned":
        _to_pickle(folder, marker)
        sig.unlink()
    elif case == "pickle_attacker_signed":
        _to_pickle(folder, marker)
        _resign(folder, _attacker_key(tmp_path), tmp_path)
    elif case == "pickle_signed_by_trusted_key":
        _to_pickle(folder, marker)
        _resign(folder, signing.signing_key(get_settings()), tmp_path)
    else:
        raise AssertionError(case)


TAMPERED = {
    "changed_byte": r"its files differ from what was signed \(changed model.skops\)",
    "added_file": r"its files differ from what was signed \(added extra.txt\)",
    "removed_file": r"its files differ from what was signed \(removed requirements.txt\)",
    "no_signature": r"it has no signature \(model.sig\)",
    "swapped_signature": r"its files differ from what was signed \(changed",
    "attacker_resigned": r"it is signed by key [0-9a-f]{16}, which is not trusted",
    "pickle_unsigned": r"it has no signature",
    "pickle_attacker_signed": r"it is signed by key [0-9a-f]{16}, which is not trusted",
    "pickle_signed_by_trusted_key": r"it is serialized as 'pickle', which runs code when loaded",
}


def _load_with(loader: str, env: dict[str, Any]) -> None:
    champion, challenger = env["versions"]
    if loader == "scoring":
        scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="r")
    elif loader == "shadow":
        registry.set_alias(MODEL, registry.CHALLENGER, champion, actor="test", reason="tampered one in shadow")
        registry.set_alias(MODEL, registry.CHAMPION, challenger, actor="test", reason="intact champion")
        scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="r")
    elif loader == "champion_gate":  # force skips the comparison, never the integrity check
        gate_steps.gate_champion(MODEL, env["results"][1], run_id="r", force=True)
    elif loader == "rollback":
        registry.set_alias(MODEL, registry.CHAMPION, challenger, actor="test", reason="newer")
        registry.rollback(MODEL, champion, actor="test", reason="back to the tampered one")
    else:
        raise AssertionError(loader)


@pytest.mark.parametrize("loader", ["scoring", "shadow", "champion_gate", "rollback"])
@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_every_loader_refuses_a_tampered_version(
    env: dict[str, Any], store: dict[str, Path], tmp_path: Path, case: str, loader: str
) -> None:
    champion, challenger = env["versions"]
    marker = tmp_path / "code-ran"
    _tamper(case, store[champion], store[challenger], tmp_path, marker)
    # Whoever swapped the files can write to the registry too: every tag now matches the new files.
    registry.client().set_model_version_tag(MODEL, champion, "model_sha256", directory_checksum(store[champion]))
    with pytest.raises(scoring.ModelIntegrityError, match=rf"^refusing to load {MODEL} v{champion}: {TAMPERED[case]}"):
        _load_with(loader, env)
    assert not marker.exists(), "a pickle was deserialized"
    assert not _prediction_path(env["state"]).exists() and not _prediction_path(env["state"], "shadow").exists()
    if loader == "rollback":
        assert registry.get_alias_version(MODEL, registry.CHAMPION) == challenger  # champion did not move
        assert [c.to_version for c in registry.alias_history(MODEL, registry.CHAMPION)][-1] == challenger


def test_intact_signed_versions_pass_every_loader(env: dict[str, Any], store: dict[str, Path]) -> None:
    """The control for the test above: the same loaders accept the versions as training signed them."""
    champion, challenger = env["versions"]
    metric = get_config(MODEL).config.gates.champion.metric
    gate = gate_steps.gate_champion(MODEL, env["results"][0], run_id="r", force=True)
    assert gate["metrics"]["champion"] == pytest.approx(env["results"][0]["metrics"][metric])
    assert scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="r")["champion_version"] == champion
    registry.set_alias(MODEL, registry.CHAMPION, challenger, actor="test", reason="newer")
    change = registry.rollback(MODEL, champion, actor="test", reason="back")
    assert change is not None and registry.get_alias_version(MODEL, registry.CHAMPION) == champion
    signed_by = registry.client().get_run(env["results"][0]["run_id"]).data.tags["model_signed_by"]
    assert signed_by == env["results"][0]["model_signed_by"]
    assert signed_by in signing.trusted_keys(get_settings())


def test_key_rotation_at_load(env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Old and new keys trusted: the old key's models load. The old key removed: they are refused."""
    from cryptography.hazmat.primitives import serialization

    from mlops.model.signing import signer_fingerprint

    champion = env["versions"][0]
    new_key = _attacker_key(tmp_path)  # a fresh key pair, here the "new" key
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    public = serialization.load_pem_private_key(new_key.read_bytes(), None).public_key()
    (trusted / "new.pem").write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    old = env["state"] / "keys" / "trusted" / "local.pem"
    monkeypatch.setenv("MLOPS_TRUSTED_KEYS_PATH", f"{trusted}:{old}")
    assert set(signing.trusted_keys(get_settings())) == {
        signer_fingerprint(new_key),
        signing.public_key_fingerprint(old),
    }
    assert scoring.load_verified(MODEL, champion).version == champion
    scoring.clear_cache()
    monkeypatch.setenv("MLOPS_TRUSTED_KEYS_PATH", str(trusted))
    with pytest.raises(scoring.ModelIntegrityError, match="which is not trusted"):
        scoring.load_verified(MODEL, champion)


# ---------------------------------------------------------------------------------------- canary rollout


def _start_canary(env: dict[str, Any], share: float = 50.0) -> Any:
    from mlops.model import rollout

    champion, canary = env["versions"]
    return rollout.start(
        MODEL, canary, champion_version=champion, steps=[share, 100.0], actor="test", reason="gates passed"
    )


def test_canary_serves_its_arm_and_manual_actions_are_recorded(env: dict[str, Any]) -> None:
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext

    from mlops.model import rollout, rollout_analysis
    from mlops.model.rollout_flags import RolloutFlagProvider

    cfg = get_config(MODEL).config
    champion, canary = env["versions"]
    state = _start_canary(env)
    result = scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="manual__split")
    served = pd.read_parquet(_prediction_path(env["state"]))
    arm = pd.read_parquet(_prediction_path(env["state"], "canary"))
    assert result["rows"] == ROWS == len(served) + len(arm) and 0 < len(arm) < ROWS
    assert set(served["model_version"]) == {champion} and set(arm["model_version"]) == {canary}
    key = cfg.entity.join_key
    expected = rollout.in_canary(MODEL, env["validated"][key].astype(str).astype(object), state.share)
    assert set(arm[key]) == set(env["validated"][key][expected])
    assert result["rollout"]["rollout_id"] == state.rollout_id and result["rollout"]["share"] == 50.0
    for version in (champion, canary):  # throughput and per-row latency per version
        latency = result["latency"][version]
        assert latency["rows_per_s"] > 0 and 0 < latency["p50_ms"] <= latency["p99_ms"]

    # An application asks OpenFeature and gets the arm batch scoring used, entity by entity.
    api.set_provider(RolloutFlagProvider(ttl_s=0))
    client = api.get_client()
    for frame, name in ((served, "champion"), (arm, "canary")):
        for entity in frame[key].head(10):
            details = client.get_string_details(
                f"model.{MODEL}.variant", "none", EvaluationContext(targeting_key=str(entity))
            )
            assert (details.value, details.flag_metadata["version"]) == (name, frame["model_version"].iloc[0])
    assert client.get_string_value(f"model.{MODEL}.variant", "none", EvaluationContext()) == "none"  # no key
    assert client.get_boolean_value(f"model.{MODEL}.kill_switch", True) is False

    # Too little evidence (80 rows, the tumour config wants 100 canary rows): hold, with a report.
    held = rollout_analysis.run_rollout(MODEL, actor="airflow", dag_id="d", dag_run_id="r1")
    assert held["decision"] == "hold" and "canary rows" in held["reason"] and held["share"] == 50.0
    assert 'data-verdict="SKIPPED"' in Path(held["report"]).read_text()
    paused = rollout_analysis.run_rollout(MODEL, "pause", actor="ops", reason="look at it", dag_run_id="r2")
    assert paused["status"] == "paused" and paused["share"] == 50.0  # pausing stops the ramp, not traffic
    assert rollout_analysis.run_rollout(MODEL, actor="airflow", dag_run_id="r3")["reason"].startswith("paused")
    assert rollout_analysis.run_rollout(MODEL, "resume", actor="ops", dag_run_id="r4")["status"] == "running"
    aborted = rollout_analysis.run_rollout(MODEL, "abort", actor="ops", reason="bad smell", dag_run_id="r5")
    assert (aborted["status"], aborted["share"]) == ("aborted", 0.0)
    final = rollout.load_state(MODEL)
    assert final is not None
    assert [(e.action, e.actor) for e in final.events] == [
        ("start", "test"),
        ("hold", "airflow"),
        ("pause", "ops"),
        ("hold", "airflow"),
        ("resume", "ops"),
        ("abort", "ops"),
    ]
    assert final.events[-1].reason == "bad smell" and final.max_share == 50.0
    # The abort is seen at once: the next scoring run serves the champion to everyone, the flag too.
    scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="manual__after-abort")
    assert set(pd.read_parquet(_prediction_path(env["state"]))["model_version"]) == {champion}
    assert not _prediction_path(env["state"], "canary").exists()
    assert client.get_boolean_value(f"model.{MODEL}.kill_switch", False) is True
    assert client.get_string_value(f"model.{MODEL}.variant", "none", EvaluationContext(targeting_key="x")) == "champion"


def test_promote_now_moves_champion_but_never_undoes_a_rollback(env: dict[str, Any]) -> None:
    from mlops.model import rollout_analysis

    champion, canary = env["versions"]
    _start_canary(env)
    promoted = rollout_analysis.run_rollout(MODEL, "promote_now", actor="ops", reason="urgent fix", dag_run_id="p1")
    assert promoted["status"] == "promoted"
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == canary
    change = registry.alias_history(MODEL, registry.CHAMPION)[-1]
    assert (change.actor, change.from_version, change.to_version) == ("ops", champion, canary)
    assert "canary" in change.reason and "urgent fix" in change.reason

    # A canary whose champion moved under it (a rollback) never serves and is aborted, never promoted.
    registry.rollback(MODEL, champion, actor="ops", reason="back")
    state = _start_canary(env)
    registry.rollback(MODEL, canary, actor="ops", reason="forward by hand")
    scoring.score_interval(MODEL, SCORED_DAY.isoformat(), run_id="manual__moved")
    assert not _prediction_path(env["state"], "canary").exists()
    moved = rollout_analysis.run_rollout(MODEL, actor="airflow", dag_run_id="p2")
    assert (moved["decision"], moved["status"]) == ("abort", "aborted") and "rolled back" in moved["reason"]
    # The registry's guard itself: a move that expects another current version moves nothing.
    with pytest.raises(registry.AliasMoved):
        registry.set_alias(
            MODEL, registry.CHAMPION, champion, actor="t", reason="r", expect_current=state.champion_version
        )
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == canary
