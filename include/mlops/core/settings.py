"""One switch picks the environment.

``MLOPS_ENV`` is ``local`` (default: everything embedded under one state folder) or ``production``
(Postgres, Redis, an MLflow server, S3). Every endpoint derives from it; a handful of variables can
override single values. Read at call time, never at import time, so a missing variable cannot break
DAG parsing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_TRAINING_IMAGE = "ghcr.io/mlops-platform/trainer:0.1.0"
DEFAULT_K8S_NAMESPACE = "mlops-training"

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
    # Model signing (mlops.model.signing): the private key that signs newly trained models (None: this
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


def training_image() -> str:
    """``MLOPS_TRAINING_IMAGE`` or the default; never raises, so the DAG may call it at parse time."""
    return os.environ.get("MLOPS_TRAINING_IMAGE") or DEFAULT_TRAINING_IMAGE


def kubernetes_namespace() -> str:
    """``MLOPS_K8S_NAMESPACE`` or the default; never raises, so the DAG may call it at parse time."""
    return os.environ.get("MLOPS_K8S_NAMESPACE") or DEFAULT_K8S_NAMESPACE


def get_settings() -> Settings:
    """Resolve settings from the environment (cheap; call it inside tasks, not at import time)."""
    env = os.environ.get("MLOPS_ENV", "local")
    if env not in ("local", "production"):
        raise SettingsError(f"MLOPS_ENV must be 'local' or 'production', got {env!r}")
    state_dir = Path(os.environ.get("MLOPS_STATE_DIR", REPO_ROOT / ".mlops")).resolve()
    models_dir = Path(os.environ.get("MLOPS_MODELS_DIR", REPO_ROOT / "include" / "models")).resolve()
    feature_repo = Path(os.environ.get("MLOPS_FEATURE_REPO", REPO_ROOT / "feature_repo")).resolve()
    image = training_image()
    namespace = kubernetes_namespace()
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


EXTRA_ESTIMATORS_VAR = "MLOPS_EXTRA_ESTIMATORS"


def extra_estimators() -> dict[str, str]:
    """Estimator families the platform adds to the allow-list: ``family=module.Class`` pairs, comma-separated.

    Only the environment of the platform's processes sets this (a model YAML cannot); the built-in
    families (``mlops.model.estimators.FAMILIES``) cannot be redefined.
    """
    from mlops.model.estimators import CLASS_PATH_PATTERN, FAMILIES, FAMILY_PATTERN

    raw = os.environ.get(EXTRA_ESTIMATORS_VAR, "").strip()
    extra: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        family, sep, path = (s.strip() for s in item.partition("="))
        if not sep or not re.fullmatch(FAMILY_PATTERN, family) or not re.fullmatch(CLASS_PATH_PATTERN, path):
            raise SettingsError(
                f"{EXTRA_ESTIMATORS_VAR}: {item!r} is not family=module.Class (e.g. lightgbm=lightgbm.LGBMClassifier)"
            )
        if family in FAMILIES or family in extra:
            raise SettingsError(f"{EXTRA_ESTIMATORS_VAR}: family {family!r} is already defined")
        extra[family] = path
    return extra


def _backend(value: str) -> TrainingBackend:
    if value not in ("local", "kubernetes"):
        raise SettingsError(f"MLOPS_TRAINING_BACKEND must be 'local' or 'kubernetes', got {value!r}")
    return value  # type: ignore[return-value]


LANDING_QUEUE_URL = "MLOPS_LANDING_QUEUE_URL"
LANDING_QUEUE_CONN_ID = "MLOPS_LANDING_QUEUE_CONN_ID"
DEFAULT_LANDING_QUEUE_CONN_ID = "aws_default"


@dataclass(frozen=True)
class LandingQueue:
    """The SQS queue that S3 event notifications of one model's landing prefix are sent to.

    One queue per model, so that each model's watcher consumes only its own events: a bucket notification
    filtered on ``<landing root>/<model>/`` feeds it (``python -m mlops.data.landing_events setup``). The watcher
    reads it through an Airflow connection: its region, its credentials (without any, boto's usual chain,
    e.g. an instance or pod role), and ``endpoint_url`` in its extra for an SQS-compatible server.
    """

    url: str
    conn_id: str

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def landing_queue(model: str) -> LandingQueue | None:
    """The model's landing queue from ``MLOPS_LANDING_QUEUE_URL`` (a URL template with ``{model}``), or None.

    Environment only (safe at parse time). None when the variable is unset: an ``s3://`` landing root then has
    no watcher, and the daily data DAG or a manual run picks the batches up.
    """
    template = os.environ.get(LANDING_QUEUE_URL, "").strip()
    if not template:
        return None
    rest = template.replace("{model}", "")
    if template.count("{model}") != 1 or "{" in rest or "}" in rest:
        raise SettingsError(
            f"{LANDING_QUEUE_URL} must contain {{model}} exactly once (one queue per model), e.g. "
            f"https://sqs.eu-west-1.amazonaws.com/123456789012/mlops-landing-{{model}}; got {template!r}"
        )
    if not template.startswith(("https://", "http://")) or "{model}" not in template.rsplit("/", 1)[-1]:
        raise SettingsError(
            f"{LANDING_QUEUE_URL} must be an SQS queue URL whose last segment (the queue name) holds {{model}}, "
            f"e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/mlops-landing-{{model}}; got {template!r}"
        )
    conn_id = os.environ.get(LANDING_QUEUE_CONN_ID, "").strip() or DEFAULT_LANDING_QUEUE_CONN_ID
    return LandingQueue(url=template.replace("{model}", model), conn_id=conn_id)


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
