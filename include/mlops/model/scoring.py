"""Batch scoring with the champion, shadow scoring with the challenger, and a verified model loader.

A model is only ever loaded from a local copy that a trusted key signed (:mod:`mlops.model.signing`: every
file, exactly as signed) and that is stored with skops, never pickle; its checksum must also equal the
``model_sha256`` tag recorded at registration. An artifact swapped or changed in the registry's store
(or in the local cache) fails loudly instead of scoring, even when its tags were rewritten to match.
Verified models are cached per version: on disk under
``<state_dir>/model_cache/<model>/<version>/`` (re-verified by every new process) and in memory for
the rest of the process, so a task downloads and deserializes each version once.

Predictions of an interval go to ``<lake>/predictions/<model>/date=<interval>/champion.parquet``; the
challenger's go beside them as ``shadow.parquet`` (never served) and the comparison is an MLflow run
in ``<model>__shadow``. Re-scoring an interval overwrites the same files and reuses the same run.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.core.config import ModelConfig, get_config
from mlops.core.errors import GateFailed, NothingToDo
from mlops.core.lake import open_lake, write_parquet
from mlops.core.settings import Settings
from mlops.core.util import finite_or_none
from mlops.data.steps import read_validated
from mlops.model.signing import ModelIntegrityError, SkopsModel, load_pipeline, verify_model_dir
from mlops.quality.metrics import predicted_positive

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlops.core.storage import ObjectStore

log = logging.getLogger(__name__)

SHA_TAG = "model_sha256"
SHADOW_SUFFIX = "__shadow"
SCORE_COLUMN = "score"
PREDICTION_COLUMN = "prediction"
VERSION_COLUMN = "model_version"
RUN_ID_COLUMN = "model_run_id"
SCORED_AT_COLUMN = "scored_at"


__all__ = ["LoadedModel", "ModelIntegrityError", "load_verified", "score_interval", "verify_version"]


@dataclass(frozen=True)
class LoadedModel:
    model: str
    version: str
    run_id: str
    sha256: str
    pipeline: Any


_CACHE: dict[tuple[str, str, str], LoadedModel] = {}
_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every loaded model (the on-disk copies stay and are re-verified on the next load)."""
    with _LOCK:
        _CACHE.clear()


def _cache_dir(settings: Settings, model: str, version: str) -> Path:
    return settings.state_dir / "model_cache" / model / version


def _download(model: str, version: str, source: str, target: Path) -> None:
    """Download the version's files into ``target`` atomically (a crash leaves no half copy).

    ``source`` is what ``models:/<model>/<version>`` resolves to in the registry (the logged model,
    ``models:/m-<id>``). It is downloaded by that URI because training checksummed exactly that
    download: MLflow writes a ``registered_model_meta`` file into every ``models:/`` download, holding
    the registered name and version for ``models:/<model>/<version>`` but nulls for the logged model,
    so the name/version URI would never match the recorded checksum.

    The files land in a staging folder beside ``target`` and are renamed into place; when another
    process got there first its copy is kept (it is verified like ours would be).
    """
    import mlflow

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-download-", dir=target.parent))
    try:
        out = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(staging)))
        try:
            os.rename(out, target)
        except OSError:
            if not target.is_dir():
                raise
            log.info("%s v%s was cached concurrently at %s; using that copy", model, version, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _short(digest: str) -> str:
    return f"{digest[:12]}…" if digest else "nothing"


def _verified_copy(model: str, version: str, settings: Settings) -> tuple[Any, Path, SkopsModel, str]:
    """Download (once) and verify a version: trusted signature, safe format, registered checksum.

    Returns the registry's model version, the verified folder, its skops file and its checksum.
    Nothing in the folder has been deserialized yet.
    """
    from mlops.core.tracking import client, directory_checksum

    model_version = client(settings).get_model_version(model, version)
    expected = str(model_version.tags.get(SHA_TAG, "")).strip()
    if not expected:
        raise ModelIntegrityError(
            f"refusing to load {model} v{version}: the version has no {SHA_TAG} tag to verify against"
        )
    directory = _cache_dir(settings, model, version)
    if not directory.is_dir():
        started = time.monotonic()
        source = str(model_version.source or f"models:/{model}/{version}")
        _download(model, version, source, directory)
        log.info("downloaded %s v%s in %.2fs", model, version, time.monotonic() - started)
    skops_model = verify_model_dir(directory, settings, name=f"{model} v{version}")
    found = directory_checksum(directory)
    if found != expected:
        raise ModelIntegrityError(
            f"refusing to load {model} v{version}: checksum mismatch (registered {_short(expected)}, "
            f"found {_short(found)}) in {directory}; delete that folder to download it again"
        )
    return model_version, directory, skops_model, found


def verify_version(model: str, version: str) -> Path:
    """Verify a version as :func:`load_verified` would, without deserializing it (rollback's check)."""
    from mlops.core.tracking import configure

    settings = configure()
    with _LOCK:
        _, directory, _, _ = _verified_copy(model, str(version), settings)
    return directory


def load_verified(model: str, version: str) -> LoadedModel:
    """The version's sklearn pipeline, deserialized with skops only after its signature verified."""
    from mlops.core.tracking import configure

    version = str(version)
    settings = configure()
    key = (settings.registry_uri, model, version)
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        model_version, directory, skops_model, found = _verified_copy(model, version, settings)
        pipeline = load_pipeline(skops_model, name=f"{model} v{version}")
        loaded = LoadedModel(
            model=model,
            version=version,
            run_id=str(model_version.run_id or ""),
            sha256=found,
            pipeline=pipeline,
        )
        _CACHE[key] = loaded
        log.info("loaded %s v%s (sha256 %s) from %s", model, version, _short(found), directory)
        return loaded


# ---------------------------------------------------------------------------------------------- scoring


def _keys(cfg: ModelConfig, values: pd.Series) -> pd.Series:
    """Join keys in the entity's declared type, so validated rows and Feast rows compare equal."""
    if values.isna().any():
        raise GateFailed(f"{cfg.name}: {int(values.isna().sum())} rows have no '{cfg.entity.join_key}'")
    return values.astype("int64") if cfg.entity.dtype == "int64" else values.astype(str).astype(object)


def _inputs(cfg: ModelConfig, rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Validated rows' key, timestamp and label joined with the online features (by join key).

    Feature values are taken from the online store only, the same place live serving reads them, so
    batch scores are what an online request would have got. Returns (frame, rows without features).
    """
    import pandas as pd

    from mlops.features import store as features

    key, ts, label = cfg.entity.join_key, cfg.timestamp_column, cfg.label.column
    base = pd.DataFrame({key: _keys(cfg, rows[key]), ts: pd.to_datetime(rows[ts], utc=True)})
    if label in rows.columns and rows[label].notna().any():
        base[label] = rows[label].to_numpy()
    online = features.online_features(cfg, list(pd.unique(base[key])))
    online[key] = _keys(cfg, online[key])
    merged = base.merge(online, on=key, how="left", validate="many_to_one")
    if len(merged) != len(base):
        raise GateFailed(f"{cfg.name}: joining online features changed {len(base)} rows into {len(merged)}")
    missing = int(merged[cfg.stored_columns].isna().all(axis=1).sum())
    if missing == len(merged):
        raise GateFailed(
            f"{cfg.name}: none of the {len(merged)} entities has online features; "
            "materialize the interval before scoring it"
        )
    if missing:
        log.warning("%s: %d of %d entities have no online features", cfg.name, missing, len(merged))
    ordered = [key, ts, *cfg.stored_columns, *([label] if label in merged.columns else [])]
    return merged[ordered], missing


def _positive_proba(loaded: LoadedModel, frame: pd.DataFrame, cfg: ModelConfig) -> np.ndarray:
    """Probability of the positive class (training's binary target is 1 for it)."""
    import numpy as np

    proba = loaded.pipeline.predict_proba(frame[cfg.feature_columns])
    classes = list(getattr(loaded.pipeline, "classes_", [0, 1]))
    column = classes.index(1) if 1 in classes else proba.shape[1] - 1
    return np.asarray(proba[:, column], dtype="float64")


def _predictions(cfg: ModelConfig, inputs: pd.DataFrame, loaded: LoadedModel, scored_at: pd.Timestamp) -> pd.DataFrame:
    out = inputs.copy()
    score = _positive_proba(loaded, inputs, cfg)
    out[SCORE_COLUMN] = score
    out[PREDICTION_COLUMN] = predicted_positive(score, cfg.label.decision_threshold).astype("int64")
    out[VERSION_COLUMN] = loaded.version
    out[RUN_ID_COLUMN] = loaded.run_id
    out[SCORED_AT_COLUMN] = scored_at
    return out


def _compare(cfg: ModelConfig, champion: pd.DataFrame, shadow: pd.DataFrame) -> dict[str, float | None]:
    """Agreement and score gap; with labels, each model's ROC AUC/accuracy and challenger - champion."""
    import numpy as np

    from mlops.model.train import binary_target, classification_metrics

    champion_pred = champion[PREDICTION_COLUMN].to_numpy()
    shadow_pred = shadow[PREDICTION_COLUMN].to_numpy()
    out: dict[str, float | None] = {
        "agreement": float((champion_pred == shadow_pred).mean()),
        "mean_abs_score_diff": float(
            np.abs(champion[SCORE_COLUMN].to_numpy() - shadow[SCORE_COLUMN].to_numpy()).mean()
        ),
        "labelled_rows": 0.0,
    }
    label = cfg.label.column
    if label not in champion.columns:
        return out
    labelled = champion[label].notna().to_numpy()
    if not labelled.any():
        return out
    y_true = binary_target(champion.loc[labelled, label], cfg).to_numpy()
    champ = classification_metrics(y_true, champion.loc[labelled, SCORE_COLUMN].to_numpy(), cfg)
    chall = classification_metrics(y_true, shadow.loc[labelled, SCORE_COLUMN].to_numpy(), cfg)
    out["labelled_rows"] = float(labelled.sum())
    for name in ("roc_auc", "accuracy"):
        out[f"champion_{name}"] = finite_or_none(champ[name])
        out[f"challenger_{name}"] = finite_or_none(chall[name])
        out[f"delta_{name}"] = finite_or_none(chall[name] - champ[name])
    return out


def _log_shadow(
    model: str,
    interval: str,
    *,
    champion_version: str,
    challenger_version: str,
    metrics: dict[str, float | None],
    tags: dict[str, str],
) -> str:
    """One MLflow run per (interval, champion, challenger): a re-score logs into the same run."""
    from mlflow.entities import Metric, RunTag

    from mlops.core.tracking import client, ensure_experiment

    mlflow_client = client()
    experiment_id = ensure_experiment(f"{model}{SHADOW_SUFFIX}")
    existing = mlflow_client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.interval = '{interval}' and tags.champion_version = '{champion_version}' "
            f"and tags.challenger_version = '{challenger_version}'"
        ),
        max_results=1,
    )
    identity = {
        "interval": interval,
        "champion_version": champion_version,
        "challenger_version": challenger_version,
    }
    if existing:
        run_id = existing[0].info.run_id
    else:
        run = mlflow_client.create_run(
            experiment_id,
            run_name=f"{interval}: v{champion_version} vs v{challenger_version}",
            tags=identity,
        )
        run_id = run.info.run_id
    now = int(time.time() * 1000)
    mlflow_client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None],
        tags=[RunTag(k, str(v)) for k, v in {**tags, **identity}.items()],
    )
    mlflow_client.set_terminated(run_id, status="FINISHED")
    return run_id


def _drop_stale(lake: ObjectStore, key: str) -> None:
    """A shadow file from an earlier scoring whose challenger is gone must not look current."""
    if not lake.exists(key):
        return
    local = lake.local_path(key)
    if local is not None:
        local.unlink(missing_ok=True)
        log.info("removed stale shadow predictions %s", key)
    else:
        log.warning("stale shadow predictions remain at %s (no challenger now)", key)


def score_interval(model: str, interval: str, *, run_id: str) -> dict[str, Any]:
    """Score one validated day with the champion (and the challenger in shadow); idempotent per day."""
    import pandas as pd

    from mlops.core.tracking import configure
    from mlops.model.registry import CHALLENGER, CHAMPION, get_alias_version

    started = time.monotonic()
    settings = configure()
    cfg = get_config(model).config
    day = date.fromisoformat(interval)
    champion_version = get_alias_version(model, CHAMPION)
    if champion_version is None:
        raise NothingToDo(f"no champion to score with: {model} has no '{CHAMPION}' alias yet")
    challenger_version = get_alias_version(model, CHALLENGER)
    if challenger_version == champion_version:
        challenger_version = None
    # Verify every model before anything is written: a failed check leaves no output behind.
    champion = load_verified(model, champion_version)
    challenger = load_verified(model, challenger_version) if challenger_version else None

    rows = read_validated(model, [day], settings)
    inputs, without_features = _inputs(cfg, rows)
    scored_at = pd.Timestamp.now(tz="UTC")
    lake = open_lake(settings)
    folder = f"predictions/{model}/date={interval}"
    predictions = _predictions(cfg, inputs, champion, scored_at)
    write_parquet(lake, f"{folder}/champion.parquet", predictions)
    predictions_uri = f"{lake.uri.rstrip('/')}/{folder}/champion.parquet"

    shadow: dict[str, Any] | None = None
    if challenger is None:
        _drop_stale(lake, f"{folder}/shadow.parquet")
    else:
        shadow_frame = _predictions(cfg, inputs, challenger, scored_at)
        write_parquet(lake, f"{folder}/shadow.parquet", shadow_frame)
        shadow_uri = f"{lake.uri.rstrip('/')}/{folder}/shadow.parquet"
        comparison = _compare(cfg, predictions, shadow_frame)
        mlflow_run_id = _log_shadow(
            model,
            interval,
            champion_version=champion.version,
            challenger_version=challenger.version,
            metrics={**comparison, "rows": float(len(predictions))},
            tags={
                "model": model,
                "airflow_run_id": run_id,
                "champion_run_id": champion.run_id,
                "challenger_run_id": challenger.run_id,
                "predictions_uri": predictions_uri,
                "shadow_uri": shadow_uri,
            },
        )
        shadow = {
            "challenger_version": challenger.version,
            "predictions_uri": shadow_uri,
            "mlflow_run_id": mlflow_run_id,
            "metrics": comparison,
        }

    seconds = round(time.monotonic() - started, 3)
    log.info(
        "scored %d rows of %s %s with champion v%s%s in %.2fs -> %s",
        len(predictions),
        model,
        interval,
        champion.version,
        f" (shadow v{challenger.version})" if challenger else "",
        seconds,
        predictions_uri,
    )
    return {
        "interval": interval,
        "rows": len(predictions),
        "rows_without_features": without_features,
        "champion_version": champion.version,
        "champion_run_id": champion.run_id,
        "predictions_uri": predictions_uri,
        "shadow": shadow,
        "seconds": seconds,
    }
