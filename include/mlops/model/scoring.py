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
in ``<model>__shadow``. During a canary rollout (:mod:`mlops.model.rollout`) the canary serves its
arm of the entities (``canary.parquet``) and ``champion.parquet`` holds the champion's arm; every row
names the version that served it, and ``serving.json`` records the split and each version's latency.
Re-scoring an interval overwrites the same files and reuses the same run.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
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


def task_outputs(cfg: ModelConfig, outputs: np.ndarray) -> dict[str, Any]:
    """The prediction file's output columns for the model's task.

    binary: ``score`` (probability of the positive class) and ``prediction`` (0/1 at the decision
    threshold); multiclass: ``proba_<class>`` per class, ``prediction`` (the most probable class's label
    value) and ``score`` (its probability); regression: ``prediction`` and ``score``, both the value.
    """
    import numpy as np

    from mlops.core.config import class_column

    if cfg.task == "binary":
        return {
            SCORE_COLUMN: outputs,
            PREDICTION_COLUMN: predicted_positive(outputs, cfg.label.decision_threshold).astype("int64"),
        }
    if cfg.task == "regression":
        return {SCORE_COLUMN: outputs, PREDICTION_COLUMN: outputs}
    classes = list(cfg.label.classes or [])
    columns: dict[str, Any] = {class_column(c): outputs[:, i] for i, c in enumerate(classes)}
    best = outputs.argmax(axis=1)
    labels = np.asarray(classes, dtype=object)[best]
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        labels = labels.astype("int64")
    columns[PREDICTION_COLUMN] = labels
    columns[SCORE_COLUMN] = outputs.max(axis=1)
    return columns


def prediction_outputs(cfg: ModelConfig, frame: pd.DataFrame) -> np.ndarray:
    """The model outputs back from a prediction file (the inverse of :func:`task_outputs`)."""
    import numpy as np

    from mlops.core.config import class_column

    if cfg.task == "multiclass":
        return frame[[class_column(c) for c in cfg.label.classes or []]].to_numpy(dtype="float64")
    return np.asarray(frame[SCORE_COLUMN].to_numpy(dtype="float64"))


def _predictions(cfg: ModelConfig, inputs: pd.DataFrame, loaded: LoadedModel, scored_at: pd.Timestamp) -> pd.DataFrame:
    from mlops.model.train import model_outputs

    out = inputs.copy()
    if cfg.task == "binary":
        outputs = _positive_proba(loaded, inputs, cfg)
    else:
        outputs = model_outputs(cfg, loaded.pipeline, inputs[cfg.feature_columns])
    for column, values in task_outputs(cfg, outputs).items():
        out[column] = values
    out[VERSION_COLUMN] = loaded.version
    out[RUN_ID_COLUMN] = loaded.run_id
    out[SCORED_AT_COLUMN] = scored_at
    return out


def timed_predictions(
    cfg: ModelConfig, inputs: pd.DataFrame, loaded: LoadedModel, scored_at: pd.Timestamp
) -> tuple[pd.DataFrame, dict[str, float | int]]:
    """Predictions plus the version's throughput (rows/s of the batch call) and per-row predict latency.

    The per-row p50/p99 time ``promotion.canary.latency_sample_rows`` single-row predict calls (the
    first rows of the batch): what an online request pays, which a batch call hides.
    """
    import numpy as np

    if inputs.empty:  # an arm without rows (a small batch at a small share): nothing to predict
        empty = inputs.assign(
            **{SCORE_COLUMN: 0.0, PREDICTION_COLUMN: 0, VERSION_COLUMN: loaded.version, RUN_ID_COLUMN: loaded.run_id}
        )
        return empty.assign(**{SCORED_AT_COLUMN: scored_at}), {"rows": 0, "failed_rows": 0}
    started = time.perf_counter()
    out = _predictions(cfg, inputs, loaded, scored_at)
    elapsed = time.perf_counter() - started
    sample = inputs.head(cfg.promotion.canary.latency_sample_rows)
    timings = []
    for index in range(len(sample)):
        tick = time.perf_counter()
        _positive_proba(loaded, sample.iloc[index : index + 1], cfg)
        timings.append((time.perf_counter() - tick) * 1000)
    latency: dict[str, float | int] = {"rows": len(out), "seconds": round(elapsed, 4), "failed_rows": 0}
    if len(out):
        latency["rows_per_s"] = round(len(out) / max(elapsed, 1e-9), 1)
    if timings:
        latency["p50_ms"] = round(float(np.percentile(timings, 50)), 3)
        latency["p99_ms"] = round(float(np.percentile(timings, 99)), 3)
    return out, latency


@dataclass(frozen=True)
class Served:
    """One interval's served predictions: the champion's arm, the canary's arm, latency per version."""

    champion: pd.DataFrame
    canary: pd.DataFrame | None
    latency: dict[str, dict[str, float | int]]
    split: dict[str, Any] | None


def serve_split(
    model: str, cfg: ModelConfig, inputs: pd.DataFrame, champion: LoadedModel, scored_at: pd.Timestamp
) -> Served:
    """Serve the rollout's split: the canary scores its arm (stable by entity), the champion the rest.

    The canary is loaded through :func:`load_verified` (signature, format, checksum) like the champion.
    A canary whose predict fails serves nothing: the champion scores its rows and the failures are
    recorded (the rollout's failure-rate guardrail aborts it). The state is read again after
    predicting: an abort that landed meanwhile is honoured by this run (its rows go to the champion).
    """
    from mlops.model import rollout

    split = rollout.serving(model, champion.version)
    if split.canary_version is None or split.share <= 0:
        predictions, alone = timed_predictions(cfg, inputs, champion, scored_at)
        return Served(predictions, None, {champion.version: alone}, None)
    canary = load_verified(model, split.canary_version)
    served, canary_frame, latency, failed = split_predictions(
        model, cfg, inputs, champion, canary, split.share, scored_at, still_serving=lambda: _still(model, champion)
    )
    meta = {
        "rollout_id": split.rollout_id,
        "step": split.step,
        "share": split.share,
        "canary_version": canary.version,
        "champion_version": champion.version,
        "canary_rows": 0 if canary_frame is None else len(canary_frame),
        "failed_rows": failed,
    }
    return Served(served, canary_frame, latency, meta)


def _still(model: str, champion: LoadedModel) -> str | None:
    from mlops.model import rollout

    return rollout.serving(model, champion.version).canary_version


def split_predictions(
    model: str,
    cfg: ModelConfig,
    inputs: pd.DataFrame,
    champion: LoadedModel,
    canary: LoadedModel,
    share: float,
    scored_at: pd.Timestamp,
    *,
    still_serving: Callable[[], str | None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[str, dict[str, float | int]], int]:
    """The champion's arm, the canary's arm (None when it served nothing), latency per version, failed rows.

    ``still_serving`` returns the canary version serving now (read again after predicting).
    """
    import pandas as pd

    from mlops.model import rollout

    mask = rollout.in_canary(model, inputs[cfg.entity.join_key], share)
    served, latency = timed_predictions(cfg, inputs[~mask], champion, scored_at)
    failed = 0
    canary_frame: pd.DataFrame | None
    try:
        canary_frame, canary_latency = timed_predictions(cfg, inputs[mask], canary, scored_at)
    except Exception as exc:  # the canary must never break serving: the champion takes its rows
        log.error("%s canary v%s failed to score %d rows: %s", model, canary.version, int(mask.sum()), exc)
        canary_frame, canary_latency, failed = None, {"rows": 0, "failed_rows": int(mask.sum())}, int(mask.sum())
    if canary_frame is not None and still_serving is not None and still_serving() != canary.version:
        log.warning("%s: the rollout ended while scoring; the champion serves the canary's rows", model)
        canary_frame, failed = None, 0
    if canary_frame is None:
        rescued, _ = timed_predictions(cfg, inputs[mask], champion, scored_at)
        served = pd.concat([served, rescued]).loc[inputs.index]
    return served, canary_frame, {champion.version: latency, canary.version: canary_latency}, failed


def _compare(cfg: ModelConfig, champion: pd.DataFrame, shadow: pd.DataFrame) -> dict[str, float | None]:
    """Agreement and score gap; with labels, each model's two headline metrics and challenger - champion."""
    import numpy as np

    from mlops.model.train import evaluate

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
    y_true = champion.loc[labelled, label]
    champ = evaluate(cfg, y_true, prediction_outputs(cfg, champion.loc[labelled]))
    chall = evaluate(cfg, y_true, prediction_outputs(cfg, shadow.loc[labelled]))
    out["labelled_rows"] = float(labelled.sum())
    headline = {
        "binary": ("roc_auc", "accuracy"),
        "multiclass": ("macro_f1", "accuracy"),
        "regression": ("rmse", "mae"),
    }
    for name in headline[cfg.task]:
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


def _canary_version(model: str) -> str | None:
    from mlops.model import rollout

    state = rollout.load_state(model)
    return state.canary_version if state is not None and state.active else None


def _write_serving(lake: ObjectStore, folder: str, interval: str, served: Served, scored_at: pd.Timestamp) -> None:
    """``canary.parquet`` (the canary's arm, when one served) and ``serving.json`` beside the predictions."""
    import json

    if served.canary is not None:
        write_parquet(lake, f"{folder}/canary.parquet", served.canary)
    else:
        _drop_stale(lake, f"{folder}/canary.parquet")
    record = {
        "interval": interval,
        "scored_at": scored_at.isoformat(),
        "rollout": served.split,
        "latency": served.latency,
    }
    lake.put(f"{folder}/serving.json", json.dumps(record, indent=1).encode())


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
    if challenger_version == champion_version or challenger_version == _canary_version(model):
        challenger_version = None  # a canary serves: it is not scored again in shadow
    # Verify every model before anything is written: a failed check leaves no output behind.
    champion = load_verified(model, champion_version)
    challenger = load_verified(model, challenger_version) if challenger_version else None

    rows = read_validated(model, [day], settings)
    inputs, without_features = _inputs(cfg, rows)
    scored_at = pd.Timestamp.now(tz="UTC")
    lake = open_lake(settings)
    folder = f"predictions/{model}/date={interval}"
    served = serve_split(model, cfg, inputs, champion, scored_at)
    predictions = served.champion
    write_parquet(lake, f"{folder}/champion.parquet", predictions)
    predictions_uri = f"{lake.uri.rstrip('/')}/{folder}/champion.parquet"
    _write_serving(lake, folder, interval, served, scored_at)

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
        "rows": len(predictions) + (0 if served.canary is None else len(served.canary)),
        "rollout": served.split,
        "latency": served.latency,
        "rows_without_features": without_features,
        "champion_version": champion.version,
        "champion_run_id": champion.run_id,
        "predictions_uri": predictions_uri,
        "shadow": shadow,
        "seconds": seconds,
    }
