"""Model signing: keys, sign/verify round trip, every way a model folder can be tampered with, formats.

The folders here are real MLflow sklearn models (``mlflow.sklearn.save_model`` with skops), so the
format checks and the skops load run on what training produces. Loader-level refusals (scoring, the
champion gate, rollback) are in tests/unit/test_scoring.py.
"""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops.core.settings import SettingsError, get_settings
from mlops.model import signing

SIG = signing.SIGNATURE_FILE


def _key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.key", folder / f"{name}.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


@pytest.fixture(scope="module")
def sklearn_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The platform's tumor_diagnosis pipeline, fitted and saved by MLflow with skops as training logs it."""
    from datetime import date

    import mlflow.sklearn

    from mlops.core.config import get_config
    from mlops.model.train import binary_target, build_estimator, build_pipeline, trusted_types
    from mlops_dev.datagen import GENERATORS

    cfg = get_config("tumor_diagnosis").config
    frame = GENERATORS[cfg.name](date(2026, 3, 1), rows_per_batch=120)
    estimator, _ = build_estimator(cfg.training.estimator.family, cfg.training.estimator.params, use_gpu=False)
    target = binary_target(frame[cfg.label.column], cfg)
    pipeline = build_pipeline(cfg, estimator).fit(frame[cfg.feature_columns], target)
    path = tmp_path_factory.mktemp("model") / "model"
    mlflow.sklearn.save_model(
        pipeline,
        str(path),
        serialization_format="skops",
        skops_trusted_types=trusted_types(pipeline),
        pip_requirements=["scikit-learn", "skops"],  # no inference: it imports the model in a subprocess
    )
    (path / "features.json").write_text(frame[cfg.feature_columns].head(5).to_json(orient="records"))
    return path


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    trusted_private, trusted_public = _key_pair(tmp_path / "keys", "trusted")
    attacker_private, attacker_public = _key_pair(tmp_path / "keys", "attacker")
    return {
        "private": trusted_private,
        "public": trusted_public,
        "attacker_private": attacker_private,
        "attacker_public": attacker_public,
    }


@pytest.fixture
def signed(tmp_path: Path, sklearn_model: Path, keys: dict[str, Path]) -> Path:
    folder = tmp_path / "signed"
    shutil.copytree(sklearn_model, folder)
    signing.sign_model(folder, keys["private"])
    return folder


def _trusted(*public: Path) -> dict[str, Path]:
    return {signing.public_key_fingerprint(p): p for p in public}


def test_sign_and_verify_round_trip(signed: Path, keys: dict[str, Path]) -> None:
    fingerprint = signing.verify_model(signed, _trusted(keys["public"]), name="m v1")
    assert fingerprint == signing.public_key_fingerprint(keys["public"]) == signing.signer_fingerprint(keys["private"])
    assert (signed / SIG).is_file() and (signed / "model.skops").is_file()
    model = signing.skops_model(signed, name="m v1")
    assert model.path == (signed / "model.skops").resolve() and "numpy.dtype" in model.trusted_types
    pipeline = signing.load_pipeline(model, name="m v1")
    import pandas as pd

    proba = pipeline.predict_proba(pd.read_json(signed / "features.json", orient="records"))[:, 1]
    assert len(proba) == 5 and ((proba >= 0) & (proba <= 1)).all()


def _flip_byte(folder: Path, name: str = "model.skops") -> None:
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / name).write_bytes(bytes(data))


def _tamper(case: str, folder: Path, keys: dict[str, Path], other: Path) -> None:
    if case == "changed_byte":
        _flip_byte(folder)
    elif case == "changed_mlmodel":
        text = (folder / "MLmodel").read_text()
        (folder / "MLmodel").write_text(text.replace("serialization_format: skops", "serialization_format: pickle"))
    elif case == "added_file":
        (folder / "extra.py").write_text("print('hi')\n")
    elif case == "added_git_file":
        (folder / ".gitattributes").write_text("* binary\n")
    elif case == "added_symlink":
        os.symlink(folder / "MLmodel", folder / "alias")
    elif case == "removed_file":
        (folder / "requirements.txt").unlink()
    elif case == "no_signature":
        (folder / SIG).unlink()
    elif case == "garbage_signature":
        (folder / SIG).write_text("not a bundle")
    elif case == "swapped_signature":
        shutil.copy(other / SIG, folder / SIG)
    elif case == "attacker_resigned":
        _flip_byte(folder)
        signing.sign_model(folder, keys["attacker_private"])
    elif case == "forged_key_id":
        # The attacker's signature relabelled with the trusted key's id: the cryptographic check fails.
        _flip_byte(folder)
        signing.sign_model(folder, keys["attacker_private"])
        text = (folder / SIG).read_text()
        theirs, ours = signing.signer_fingerprint(keys["attacker_private"]), signing.signer_fingerprint(keys["private"])
        (folder / SIG).write_text(text.replace(theirs, ours))
    else:
        raise AssertionError(case)


TAMPER_CASES = {
    "changed_byte": r"its files differ from what was signed \(changed model.skops\)$",
    "changed_mlmodel": r"its files differ from what was signed \(changed MLmodel\)$",
    "added_file": r"its files differ from what was signed \(added extra.py\)$",
    "added_git_file": r"its files differ from what was signed \(added .gitattributes\)$",
    "added_symlink": r"signature check failed \(Cannot use '.*alias' because it is a symlink",
    "removed_file": r"its files differ from what was signed \(removed requirements.txt\)$",
    "no_signature": r"it has no signature \(model.sig\)",
    "garbage_signature": r"its signature model.sig is unreadable",
    "swapped_signature": r"its files differ from what was signed \(.*removed input_example.json\)$",
    "attacker_resigned": r"it is signed by key [0-9a-f]{16}, which is not trusted \(trusted: [0-9a-f]{16}\)",
    "forged_key_id": r"its signature does not verify with the trusted key [0-9a-f]{16} \(forged or corrupted\)$",
}


@pytest.mark.parametrize("case", sorted(TAMPER_CASES))
def test_every_tampering_is_refused(
    case: str, signed: Path, keys: dict[str, Path], sklearn_model: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(sklearn_model, other)
    (other / "input_example.json").write_text("{}")  # another model: different files, its own signature
    signing.sign_model(other, keys["private"])
    trusted = _trusted(keys["public"])
    signing.verify_model(signed, trusted, name="m v1")  # intact before
    _tamper(case, signed, keys, other)
    with pytest.raises(signing.ModelIntegrityError, match=rf"^refusing to load m v1: {TAMPER_CASES[case]}"):
        signing.verify_model(signed, trusted, name="m v1")


def test_untrusted_key_is_refused_even_on_intact_files(signed: Path, keys: dict[str, Path]) -> None:
    with pytest.raises(signing.ModelIntegrityError, match="which is not trusted"):
        signing.verify_model(signed, _trusted(keys["attacker_public"]), name="m v1")
    assert signing.verify_model(signed, _trusted(keys["attacker_public"], keys["public"]), name="m v1")


def test_a_signature_that_exempts_files_is_refused(signed: Path, keys: dict[str, Path]) -> None:
    """Even with a trusted key: a manifest that skips a file would let that file change unseen."""
    from model_signing import hashing
    from model_signing import signing as ms_signing

    (signed / "notes.txt").write_text("unchecked")
    config = hashing.Config().set_ignored_paths(paths=[SIG, "notes.txt"], ignore_git_paths=False)
    ms_signing.Config().set_hashing_config(config).use_elliptic_key_signer(private_key=keys["private"]).sign(
        signed, signed / SIG
    )
    with pytest.raises(signing.ModelIntegrityError, match=r"leaves files unchecked \(\['notes.txt'\]\)"):
        signing.verify_model(signed, _trusted(keys["public"]), name="m v1")


# --------------------------------------------------------------------------------------------- formats


class _WritesMarker:
    """Unpickling this opens (creates) the marker file: stands for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def make_pickle_model(folder: Path, marker: Path) -> None:
    """Turn an MLflow skops model folder into a pickle one whose model file runs code when loaded."""
    (folder / "model.skops").unlink()
    (folder / "model.pkl").write_bytes(pickle.dumps(_WritesMarker(marker)))
    document = yaml.safe_load((folder / "MLmodel").read_text())
    flavor = document["flavors"]["sklearn"]
    flavor.update(serialization_format="pickle", pickled_model="model.pkl")
    flavor.pop("skops_trusted_types", None)
    document["flavors"]["python_function"]["model_path"] = "model.pkl"
    (folder / "MLmodel").write_text(yaml.safe_dump(document))


def test_the_pickle_payload_is_live(tmp_path: Path, sklearn_model: Path) -> None:
    """Control for the tests below: unpickling the payload does create the marker."""
    folder, marker = tmp_path / "m", tmp_path / "control-marker"
    shutil.copytree(sklearn_model, folder)
    make_pickle_model(folder, marker)
    pickle.loads((folder / "model.pkl").read_bytes())
    assert marker.exists()


def test_a_pickle_signed_by_a_trusted_key_is_still_refused_unread(
    tmp_path: Path, sklearn_model: Path, keys: dict[str, Path]
) -> None:
    folder, marker = tmp_path / "m", tmp_path / "marker"
    shutil.copytree(sklearn_model, folder)
    make_pickle_model(folder, marker)
    signing.sign_model(folder, keys["private"])
    with pytest.raises(signing.ModelIntegrityError, match=r"serialized as 'pickle', which runs code when loaded"):
        signing.verify_model_dir(folder, _settings_trusting(tmp_path, keys["public"]), name="m v1")
    assert not marker.exists()


def _settings_trusting(tmp_path: Path, *public: Path) -> Any:
    from dataclasses import replace

    return replace(get_settings(), env="production", trusted_keys=tuple(public), signing_key=None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.update(serialization_format="cloudpickle"), "serialized as 'cloudpickle'"),
        (lambda f: f.pop("serialization_format"), "serialized as 'pickle'"),
        (lambda f: f.update(code="code"), "it ships code"),
        (lambda f: f.update(pickled_model="../model.skops"), "is not in the model"),
        (lambda f: f.update(pickled_model="missing.skops"), "is not in the model"),
        (lambda f: f["skops_trusted_types"].append("builtins.eval"), "outside sklearn.*: builtins.eval"),
        (lambda f: f.update(skops_trusted_types="numpy.dtype"), "not a list of type names"),
    ],
    ids=["cloudpickle", "no_format_means_pickle", "code", "outside", "missing", "builtins", "not_a_list"],
)
def test_unsafe_flavors_are_refused(
    tmp_path: Path, sklearn_model: Path, change: Any, message: str, keys: dict[str, Path]
) -> None:
    folder = tmp_path / "m"
    shutil.copytree(sklearn_model, folder)
    document = yaml.safe_load((folder / "MLmodel").read_text())
    change(document["flavors"]["sklearn"])
    (folder / "MLmodel").write_text(yaml.safe_dump(document))
    signing.sign_model(folder, keys["private"])
    signing.verify_model(folder, _trusted(keys["public"]), name="m v1")  # the signature is fine
    with pytest.raises(signing.ModelIntegrityError, match=message):
        signing.skops_model(folder, name="m v1")


def test_no_sklearn_flavor_is_refused(tmp_path: Path, sklearn_model: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(sklearn_model, folder)
    document = yaml.safe_load((folder / "MLmodel").read_text())
    del document["flavors"]["sklearn"]
    (folder / "MLmodel").write_text(yaml.safe_dump(document))
    with pytest.raises(signing.ModelIntegrityError, match="not a scikit-learn model"):
        signing.skops_model(folder, name="m v1")


def test_skops_types_beyond_the_signed_list_are_refused(tmp_path: Path, sklearn_model: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(sklearn_model, folder)
    model = signing.skops_model(folder, name="m v1")
    fewer = signing.SkopsModel(path=model.path, trusted_types=())
    with pytest.raises(signing.ModelIntegrityError, match=r"untrusted types \['numpy.dtype'\]"):
        signing.load_pipeline(fewer, name="m v1")


# ------------------------------------------------------------------------------------------------ keys


def test_local_key_is_created_once_with_mode_0600(state_dir: Path) -> None:
    settings = get_settings()
    assert settings.signing_key == state_dir / "keys" / "signing-key.pem"
    assert settings.trusted_keys == (state_dir / "keys" / "trusted",)
    assert not settings.signing_key.exists()
    private = signing.signing_key(settings)
    assert private == settings.signing_key
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((state_dir / "keys").stat().st_mode) == 0o700
    content = private.read_bytes()
    assert signing.signing_key(settings).read_bytes() == content  # never regenerated
    trusted = signing.trusted_keys(settings)
    assert list(trusted) == [signing.signer_fingerprint(private)]
    assert trusted[signing.signer_fingerprint(private)] == state_dir / "keys" / "trusted" / "local.pem"
    assert sorted(p.name for p in (state_dir / "keys").iterdir()) == ["signing-key.pem", "trusted"]


_CREATE = """
import sys, time
from pathlib import Path
from mlops.model import signing
go = Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
print(signing.signer_fingerprint(signing.ensure_local_key(Path(sys.argv[1]))))
"""


def test_concurrent_creation_ends_with_one_key(tmp_path: Path) -> None:
    """Twelve fresh processes (never forks of this threaded one, which can inherit a held lock) create the
    key at once: each waits, its imports done, for the same start signal."""
    keys_dir, go = tmp_path / "keys", tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", _CREATE, str(keys_dir), str(go)], stdout=subprocess.PIPE, text=True)
        for _ in range(12)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    go.touch()
    fingerprints = [proc.communicate(timeout=120)[0].strip() for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 12
    assert len(set(fingerprints)) == 1 and fingerprints[0]
    assert signing.public_key_fingerprint(keys_dir / "trusted" / "local.pem") == fingerprints[0]
    assert sorted(p.name for p in keys_dir.iterdir()) == ["signing-key.pem", "trusted"]  # no temporary left


def test_a_readable_local_key_is_refused(tmp_path: Path) -> None:
    private = signing.ensure_local_key(tmp_path / "keys")
    private.chmod(0o644)
    with pytest.raises(SettingsError, match=r"readable by others .*chmod 600"):
        signing.ensure_local_key(tmp_path / "keys")


def test_key_rotation(
    state_dir: Path, tmp_path: Path, signed: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two trusted keys: a model signed by the old one still loads; once the old key is removed it does not."""
    _, new_public = _key_pair(tmp_path / "rotation", "new")
    folder = tmp_path / "trusted"
    folder.mkdir()
    shutil.copy(keys["public"], folder / "old.pem")
    monkeypatch.setenv("MLOPS_TRUSTED_KEYS_PATH", os.pathsep.join([str(folder), str(new_public)]))
    settings = get_settings()
    assert settings.trusted_keys == (folder, new_public)
    assert len(signing.trusted_keys(settings)) == 2
    assert signing.verify_model_dir(signed, settings, name="m v1").path.name == "model.skops"
    (folder / "old.pem").unlink()
    with pytest.raises(signing.ModelIntegrityError, match="which is not trusted"):
        signing.verify_model_dir(signed, get_settings(), name="m v1")


def test_production_needs_keys_from_the_environment(
    state_dir: Path, tmp_path: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_ENV", "production")
    for name, value in {
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MLOPS_LANDING_URI": "s3://landing",
        "MLOPS_LAKE_URI": "s3://lake",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLOPS_SIGNING_KEY_FILE", raising=False)
    monkeypatch.delenv("MLOPS_TRUSTED_KEYS_PATH", raising=False)
    settings = get_settings()
    with pytest.raises(SettingsError, match="no model signing key: set MLOPS_SIGNING_KEY_FILE"):
        signing.signing_key(settings)
    with pytest.raises(SettingsError, match="no trusted model signing keys in nothing: set MLOPS_TRUSTED_KEYS_PATH"):
        signing.trusted_keys(settings)
    assert not (state_dir / "keys").exists()  # production never generates a key
    monkeypatch.setenv("MLOPS_SIGNING_KEY_FILE", str(tmp_path / "missing.key"))
    with pytest.raises(SettingsError, match=r"missing.key \(MLOPS_SIGNING_KEY_FILE\) does not exist"):
        signing.signing_key(get_settings())
    monkeypatch.setenv("MLOPS_SIGNING_KEY_FILE", str(keys["private"]))
    monkeypatch.setenv("MLOPS_TRUSTED_KEYS_PATH", str(keys["private"]))  # a private key is no public key
    assert signing.signing_key(get_settings()) == keys["private"]
    with pytest.raises(SettingsError, match="is not a readable PEM public key"):
        signing.trusted_keys(get_settings())
    monkeypatch.setenv("MLOPS_TRUSTED_KEYS_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(SettingsError, match=r"nowhere .*does not exist"):
        signing.trusted_keys(get_settings())
