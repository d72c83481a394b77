"""Signed models: every model is signed when it is logged, and verified before anything loads it.

A checksum tag in the registry protects nothing against someone who can write to the registry: they
can swap the files and rewrite the tag. A signature can only be made with the private key, which
lives with the training job (a Kubernetes Secret in production, ``<state>/keys`` on the embedded
default), so the registry never holds anything that could forge it.

* Signing (OpenSSF ``model-signing``, an EC key): every file of the MLflow model folder is hashed
  (sha256 per file, symlinks refused, git files *not* exempt) into a manifest that is signed into
  ``model.sig`` beside the files. ``model.sig`` is the one file left out of the signed set.
* Verifying: the signature must name a trusted public key (``MLOPS_TRUSTED_KEYS_PATH``: several for
  rotation), verify with it, and the folder must hold exactly the signed files with the signed bytes:
  a changed, added or removed file fails.
* Format: only scikit-learn pipelines stored with skops load, with the skops types the signed
  ``MLmodel`` lists, each from a library the platform allows. A pickle or cloudpickle flavor (which
  runs code when read) is refused from the verified ``MLmodel`` before a byte of it is deserialized.

Every refusal is a :class:`ModelIntegrityError`: one line naming the model and what to do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.core.errors import GateFailed
from mlops.core.settings import LOCAL_KEYS_DIR, LOCAL_SIGNING_KEY, LOCAL_TRUSTED_DIR, Settings, SettingsError

log = logging.getLogger(__name__)

SIGNATURE_FILE = "model.sig"
LOCAL_PUBLIC_KEY = "local.pem"
SAFE_SERIALIZATION = "skops"
# Libraries whose types a skops model may ask to be trusted: the platform's own estimators and their
# array types. Anything else (builtins, os, functools, ...) is refused even in a signed model.
TRUSTED_TYPE_MODULES = ("sklearn.", "numpy.", "scipy.", "xgboost.")


class ModelIntegrityError(GateFailed):
    """The model is unsigned, signed by an untrusted key, changed since signing, or in an unsafe format.

    A :class:`GateFailed` (so a RuntimeError): the Airflow task fails at once, since retrying cannot
    make tampered bytes right.
    """


@dataclass(frozen=True)
class SkopsModel:
    """Where a verified model's skops file is and the types its signed MLmodel trusts."""

    path: Path
    trusted_types: tuple[str, ...]


# -------------------------------------------------------------------------------------------------- keys


def _public_pem(key: Any) -> bytes:
    """PEM SubjectPublicKeyInfo of a public key, or of a private key's public half."""
    from cryptography.hazmat.primitives import serialization

    if hasattr(key, "private_bytes"):
        key = key.public_key()
    return bytes(
        key.public_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )


def public_key_fingerprint(path: Path) -> str:
    """sha256 of the key's PEM public form: the id ``model-signing`` records in every signature."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise SettingsError(f"trusted key {path} is not a readable PEM public key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SettingsError(f"trusted key {path} is not an elliptic-curve public key")
    return hashlib.sha256(_public_pem(key)).hexdigest()


def signer_fingerprint(private_key: Path) -> str:
    """The fingerprint a signature made with this private key carries (see :func:`public_key_fingerprint`)."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(Path(private_key).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SettingsError(f"model signing key {private_key} is not a readable PEM private key ({exc})") from exc
    return hashlib.sha256(_public_pem(key)).hexdigest()


def ensure_local_key(keys_dir: Path) -> Path:
    """Create the embedded default's EC P-256 key pair once; return the private key's path.

    Race-safe: each process writes a whole key to a private temporary file (mode 0600) and links it
    into place, which never replaces an existing file, so the first process wins and every process
    ends up with the same key. The public half goes to ``trusted/local.pem``, derived from whichever
    private key won.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = keys_dir / LOCAL_SIGNING_KEY
    if not private.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )
        fd, tmp = tempfile.mkstemp(prefix=".signing-key-", dir=keys_dir)  # mode 0600
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, private)
            log.info("created the local model signing key %s", private)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    mode = stat.S_IMODE(private.stat().st_mode)
    if mode & 0o077:
        raise SettingsError(f"signing key {private} is readable by others (mode {mode:o}): chmod 600 it")
    trusted = keys_dir / LOCAL_TRUSTED_DIR
    trusted.mkdir(exist_ok=True)
    public = trusted / LOCAL_PUBLIC_KEY
    if not public.exists():
        loaded = serialization.load_pem_private_key(private.read_bytes(), password=None)
        fd, tmp = tempfile.mkstemp(prefix=".local-", suffix=".tmp", dir=trusted)
        with os.fdopen(fd, "wb") as out:
            out.write(_public_pem(loaded))
        os.chmod(tmp, 0o644)
        os.replace(tmp, public)  # the same bytes from every process: replacing is harmless
    return private


def _is_local_default(settings: Settings) -> bool:
    return settings.is_local and settings.signing_key == settings.state_dir / LOCAL_KEYS_DIR / LOCAL_SIGNING_KEY


def signing_key(settings: Settings) -> Path:
    """The private key that signs new models (generated on the embedded default, never in production)."""
    if settings.signing_key is None:
        raise SettingsError(
            "no model signing key: set MLOPS_SIGNING_KEY_FILE to the private key PEM mounted from the "
            "mlops-signing-key Secret"
        )
    if _is_local_default(settings):
        return ensure_local_key(settings.signing_key.parent)
    if not settings.signing_key.is_file():
        raise SettingsError(f"model signing key {settings.signing_key} (MLOPS_SIGNING_KEY_FILE) does not exist")
    return settings.signing_key


def trusted_keys(settings: Settings) -> dict[str, Path]:
    """Trusted public keys by fingerprint: every ``*.pem`` of each folder, and each listed file."""
    if _is_local_default(settings) and settings.signing_key is not None:
        ensure_local_key(settings.signing_key.parent)
    found: dict[str, Path] = {}
    for entry in settings.trusted_keys:
        if entry.is_dir():
            files = sorted(p for p in entry.glob("*.pem") if p.is_file())
        elif entry.is_file():
            files = [entry]
        else:
            raise SettingsError(f"trusted key path {entry} (MLOPS_TRUSTED_KEYS_PATH) does not exist")
        for file in files:
            found.setdefault(public_key_fingerprint(file), file)
    if not found:
        where = os.pathsep.join(map(str, settings.trusted_keys)) or "nothing"
        raise SettingsError(
            f"no trusted model signing keys in {where}: set MLOPS_TRUSTED_KEYS_PATH to the public key PEM "
            "files (or folders of them) whose signatures models may carry"
        )
    return found


# ---------------------------------------------------------------------------------------- sign / verify


def _hashing_config() -> Any:
    """Every file but the signature itself; git files count too (an added .gitignore is a change)."""
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)


def sign_model(directory: Path, private_key: Path) -> Path:
    """Sign every file of ``directory`` into ``directory/model.sig``; return the signature's path."""
    from model_signing import signing

    signature = Path(directory) / SIGNATURE_FILE
    signature.unlink(missing_ok=True)
    signing.Config().set_hashing_config(_hashing_config()).use_elliptic_key_signer(private_key=private_key).sign(
        Path(directory), signature
    )
    return signature


def _envelope(signature: Path) -> tuple[str, dict[str, Any]]:
    """The signing key's id and the signed statement, as the bundle states them (not yet verified)."""
    bundle = json.loads(signature.read_text())
    hint = str(bundle["verificationMaterial"]["publicKey"]["hint"] or "")
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"], validate=True))
    if not isinstance(statement, dict):
        raise ValueError("the signed payload is not a statement")
    return hint, statement


def _diff(directory: Path, statement: dict[str, Any]) -> str:
    """Which files changed, were added or were removed, against the (authentic) signed statement."""
    resources = statement.get("predicate", {}).get("resources", [])
    signed = {str(r.get("name")): str(r.get("digest")) for r in resources if isinstance(r, dict)}
    actual = {
        path.relative_to(directory).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in directory.rglob("*")
        if path.is_file() and path.relative_to(directory).as_posix() != SIGNATURE_FILE
    }
    changed = sorted(name for name in signed.keys() & actual.keys() if signed[name] != actual[name])
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (
            ("changed", changed),
            ("added", sorted(actual.keys() - signed.keys())),
            ("removed", sorted(signed.keys() - actual.keys())),
        )
        if names
    ]
    return "; ".join(parts) or "the manifest differs"


def verify_model(directory: Path, keys: Mapping[str, Path], *, name: str) -> str:
    """Refuse ``directory`` unless a trusted key signed exactly its files; return that key's fingerprint."""
    from cryptography.exceptions import InvalidSignature
    from model_signing import verifying

    directory = Path(directory)
    prefix = f"refusing to load {name}"
    signature = directory / SIGNATURE_FILE
    if not signature.is_file():
        raise ModelIntegrityError(
            f"{prefix}: it has no signature ({SIGNATURE_FILE}); only models signed when training logged "
            "them load: retrain it"
        )
    try:
        hint, statement = _envelope(signature)
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ModelIntegrityError(f"{prefix}: its signature {SIGNATURE_FILE} is unreadable ({exc})") from exc
    key = keys.get(hint)
    if key is None:
        trusted = ", ".join(f[:16] for f in keys) or "none"
        raise ModelIntegrityError(
            f"{prefix}: it is signed by key {hint[:16] or '(unnamed)'}, which is not trusted (trusted: "
            f"{trusted}); add a public key to MLOPS_TRUSTED_KEYS_PATH only if you trust who signed with it"
        )
    config = verifying.Config().set_hashing_config(_hashing_config()).use_elliptic_key_verifier(public_key=key)
    try:
        config.verify(directory, signature)
    except InvalidSignature as exc:
        raise ModelIntegrityError(
            f"{prefix}: its signature does not verify with the trusted key {hint[:16]} (forged or corrupted)"
        ) from exc
    except ValueError as exc:
        detail = str(exc).replace("\n", " ")
        if detail.startswith("Signature mismatch"):
            diff = _diff(directory, statement)
            raise ModelIntegrityError(f"{prefix}: its files differ from what was signed ({diff})") from exc
        raise ModelIntegrityError(f"{prefix}: signature check failed ({detail})") from exc
    except Exception as exc:  # a malformed bundle fails in protobuf/JSON parsing with other types
        raise ModelIntegrityError(f"{prefix}: its signature {SIGNATURE_FILE} is unreadable ({exc})") from exc
    # Verified: the statement is authentic. It must not have exempted any file but the signature.
    serialization = statement.get("predicate", {}).get("serialization", {})
    ignored = set(serialization.get("ignore_paths", [])) - {SIGNATURE_FILE}
    if ignored or serialization.get("allow_symlinks"):
        raise ModelIntegrityError(
            f"{prefix}: its signature leaves files unchecked ({sorted(ignored) or 'symlinks'}); re-sign it "
            "with mlops.model.signing.sign_model"
        )
    return hint


def skops_model(directory: Path, *, name: str) -> SkopsModel:
    """Read the (verified) MLmodel: refuse any flavor that runs code when loaded, before loading it."""
    import yaml

    prefix = f"refusing to load {name}"
    try:
        document = yaml.safe_load((Path(directory) / "MLmodel").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModelIntegrityError(f"{prefix}: its MLmodel file is unreadable ({exc})") from exc
    flavors = document.get("flavors") if isinstance(document, dict) else None
    flavor = flavors.get("sklearn") if isinstance(flavors, dict) else None
    if not isinstance(flavor, dict):
        raise ModelIntegrityError(f"{prefix}: it is not a scikit-learn model (no sklearn flavor in MLmodel)")
    serialization = flavor.get("serialization_format", "pickle")
    if serialization != SAFE_SERIALIZATION:
        raise ModelIntegrityError(
            f"{prefix}: it is serialized as {serialization!r}, which runs code when loaded; only "
            f"{SAFE_SERIALIZATION!r} models load: retrain it"
        )
    if flavor.get("code"):
        raise ModelIntegrityError(f"{prefix}: it ships code ({flavor['code']!r}) that loading would import")
    root = Path(directory).resolve()
    path = (root / str(flavor.get("pickled_model", ""))).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise ModelIntegrityError(f"{prefix}: its model file {flavor.get('pickled_model')!r} is not in the model")
    types = flavor.get("skops_trusted_types") or []
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise ModelIntegrityError(f"{prefix}: its skops_trusted_types is not a list of type names")
    unsafe = sorted(t for t in types if not t.startswith(TRUSTED_TYPE_MODULES))
    if unsafe:
        raise ModelIntegrityError(
            f"{prefix}: it asks to trust types outside {', '.join(TRUSTED_TYPE_MODULES)}: {', '.join(unsafe)}"
        )
    return SkopsModel(path=path, trusted_types=tuple(types))


def verify_model_dir(directory: Path, settings: Settings, *, name: str) -> SkopsModel:
    """Signature by a trusted key, then a format that does not run code: everything a load needs."""
    verify_model(directory, trusted_keys(settings), name=name)
    return skops_model(directory, name=name)


def load_pipeline(model: SkopsModel, *, name: str) -> Any:
    """Deserialize a verified skops model, trusting exactly the types its signed MLmodel lists."""
    import skops.io

    extra = sorted(set(skops.io.get_untrusted_types(file=model.path)) - set(model.trusted_types))
    if extra:
        raise ModelIntegrityError(f"refusing to load {name}: its skops file holds untrusted types {extra}")
    return skops.io.load(model.path, trusted=list(model.trusted_types))
