"""One switch picks the environment.

``MLOPS_ENV`` is ``local`` (default: everything embedded under one state folder) or ``production``
(Postgres, Redis, an MLflow server, S3). Every endpoint derives from it; a handful of variables can
override single values. Read at call time, never at import time, so a missing variable cannot break
DAG parsing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

REPO_ROOT = Path(__file__).resolve().parents[2]

Env = Literal["local", "production"]
TrainingBackend = Literal["local", "kubernetes"]


class SettingsError(RuntimeError):
    """A required setting is missing or has an unknown value."""


@dataclass(frozen=True)
class Settings:
    env: Env
    state_dir: Path
    models_dir: Path
    tracking_uri: str
    registry_uri: str
    landing_uri: str
    lake_uri: str
    reports_dir: Path
    feature_repo: Path
    feature_store_yaml: Path
    training_backend: TrainingBackend
    training_image: str
    kubernetes_namespace: str
    # Model signing (mlops.signing): the private key that signs newly trained models (None: this
    # process cannot sign) and the public keys (PEM files or folders of them) a model must verify with.
    signing_key: Path | None = None
    trusted_keys: tuple[Path, ...] = ()

    @property
    def is_local(self) -> bool:
        return self.env == "local"


LOCAL_KEYS_DIR = "keys"
LOCAL_SIGNING_KEY = "signing-key.pem"
LOCAL_TRUSTED_DIR = "trusted"


def _key_settings(*, local: bool, state_dir: Path) -> tuple[Path | None, tuple[Path, ...]]:
    """``MLOPS_SIGNING_KEY_FILE`` (private key PEM) and ``MLOPS_TRUSTED_KEYS_PATH`` (public key PEM files
    or folders, ``os.pathsep``-separated); locally both default to a key pair under ``<state>/keys``."""
    key = os.environ.get("MLOPS_SIGNING_KEY_FILE", "").strip()
    listed = os.environ.get("MLOPS_TRUSTED_KEYS_PATH", "").split(os.pathsep)
    trusted = tuple(Path(p.strip()).expanduser() for p in listed if p.strip())
    if local:
        keys = state_dir / LOCAL_KEYS_DIR
        return (Path(key).expanduser() if key else keys / LOCAL_SIGNING_KEY), trusted or (keys / LOCAL_TRUSTED_DIR,)
    return (Path(key).expanduser() if key else None), trusted


def _require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SettingsError(f"MLOPS_ENV=production needs the environment variable {name}")
    return value


def get_settings() -> Settings:
    """Resolve settings from the environment (cheap; call it inside tasks, not at import time)."""
    env = os.environ.get("MLOPS_ENV", "local")
    if env not in ("local", "production"):
        raise SettingsError(f"MLOPS_ENV must be 'local' or 'production', got {env!r}")
    state_dir = Path(os.environ.get("MLOPS_STATE_DIR", REPO_ROOT / ".mlops")).resolve()
    models_dir = Path(os.environ.get("MLOPS_MODELS_DIR", REPO_ROOT / "include" / "models")).resolve()
    feature_repo = Path(os.environ.get("MLOPS_FEATURE_REPO", REPO_ROOT / "feature_repo")).resolve()
    image = os.environ.get("MLOPS_TRAINING_IMAGE", "ghcr.io/mlops-platform/trainer:0.1.0")
    namespace = os.environ.get("MLOPS_K8S_NAMESPACE", "mlops-training")
    signing_key, trusted_keys = _key_settings(local=env == "local", state_dir=state_dir)
    if env == "local":
        tracking = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}")
        backend = os.environ.get("MLOPS_TRAINING_BACKEND", "local")
        return Settings(
            env="local",
            state_dir=state_dir,
            models_dir=models_dir,
            tracking_uri=tracking,
            registry_uri=os.environ.get("MLFLOW_REGISTRY_URI", tracking),
            landing_uri=os.environ.get("MLOPS_LANDING_URI", str(state_dir / "landing")),
            lake_uri=os.environ.get("MLOPS_LAKE_URI", str(state_dir / "lake")),
            reports_dir=state_dir / "reports",
            feature_repo=feature_repo,
            feature_store_yaml=feature_repo / "feature_store.yaml",
            training_backend=_backend(backend),
            training_image=image,
            kubernetes_namespace=namespace,
            signing_key=signing_key,
            trusted_keys=trusted_keys,
        )
    tracking = _require("MLFLOW_TRACKING_URI")
    return Settings(
        env="production",
        state_dir=state_dir,
        models_dir=models_dir,
        tracking_uri=tracking,
        registry_uri=os.environ.get("MLFLOW_REGISTRY_URI", tracking),
        landing_uri=_require("MLOPS_LANDING_URI"),
        lake_uri=_require("MLOPS_LAKE_URI"),
        reports_dir=state_dir / "reports",
        feature_repo=feature_repo,
        feature_store_yaml=feature_repo / "feature_store.production.yaml",
        training_backend=_backend(os.environ.get("MLOPS_TRAINING_BACKEND", "kubernetes")),
        training_image=image,
        kubernetes_namespace=namespace,
        signing_key=signing_key,
        trusted_keys=trusted_keys,
    )


def _backend(value: str) -> TrainingBackend:
    if value not in ("local", "kubernetes"):
        raise SettingsError(f"MLOPS_TRAINING_BACKEND must be 'local' or 'kubernetes', got {value!r}")
    return value  # type: ignore[return-value]


def airflow_env(settings: Settings | None = None) -> dict[str, str]:
    """Environment for Airflow processes on the embedded default (SQLite metadata DB in the state dir)."""
    settings = settings or get_settings()
    home = settings.state_dir / "airflow"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "MLOPS_STATE_DIR": str(settings.state_dir),
        "GX_ANALYTICS_ENABLED": "False",
        "DO_NOT_TRACK": "1",
        "PYTHONPATH": str(REPO_ROOT / "include"),
    }
