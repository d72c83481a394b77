"""Lineage tags of a model version: data window, code commit, library versions, image."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from typing import TYPE_CHECKING, Any

from mlops.core.config import LoadedConfig
from mlops.core.settings import REPO_ROOT

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def _git_commit() -> str:
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = [
        "apache-airflow",
        "mlflow",
        "scikit-learn",
        "xgboost-cpu",
        "xgboost",
        "pandas",
        "feast",
        "great-expectations",
        "evidently",
        "fairlearn",
    ]
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def lineage_tags(
    loaded: LoadedConfig,
    trained: dict[str, Any],
    training_set: dict[str, Any],
    *,
    dag_id: str,
    run_id: str,
    training_image: str,
) -> dict[str, str]:
    cfg = loaded.config
    return {
        "lineage.git_commit": _git_commit(),
        "lineage.raw_batches": json.dumps([h[:16] for h in training_set["raw_batches"]]),
        "lineage.training_window": f"{training_set['window_start']}..{training_set['window_end']}",
        "lineage.feature_service": cfg.feature_service,
        "lineage.gx_suite": cfg.gx_suite,
        "lineage.config_hash": loaded.config_hash,
        "lineage.config_file": loaded.path.name,
        "lineage.training_image": training_image,
        "lineage.dag_id": dag_id,
        "lineage.dag_run_id": run_id,
        "lineage.training_run_id": trained["run_id"],
        "lineage.libraries": json.dumps(_library_versions(), sort_keys=True),
        "model_sha256": trained.get("model_sha256", ""),
        "holdout_uri": trained["holdout_uri"],
        "lineage.training_set_uri": training_set["uri"],
        "lineage.training_set_sha256": training_set.get("sha256", ""),
        **{f"metric.{k}": f"{v:.6f}" for k, v in trained["metrics"].items()},
    }
