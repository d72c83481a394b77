"""MLflow connection helpers shared by training, gates and the registry."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from mlops.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def configure(settings: Settings | None = None) -> Settings:
    """Point the mlflow module at this environment's tracking server/registry."""
    import mlflow

    settings = settings or get_settings()
    if settings.is_local:
        (settings.state_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri)
    return settings


def client(settings: Settings | None = None) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    settings = configure(settings)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)


def ensure_experiment(name: str, settings: Settings | None = None) -> str:
    """Get or create an experiment; locally its artifacts go under the state folder, not the CWD."""
    import mlflow

    settings = configure(settings)
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    location = None
    if settings.is_local:
        location = (settings.state_dir / "mlflow" / "artifacts" / name).as_uri()
    elif os.environ.get("MLOPS_ARTIFACT_ROOT"):
        location = f"{os.environ['MLOPS_ARTIFACT_ROOT'].rstrip('/')}/{name}"
    try:
        return str(mlflow.create_experiment(name, artifact_location=location))
    except Exception:  # created concurrently by another task: read it back
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def directory_checksum(path: Path) -> str:
    """sha256 over every file (relative path + bytes) of a model directory, in sorted order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
