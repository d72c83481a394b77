"""Gate steps the training DAG calls: drift, quality, fairness and champion gates, logged to MLflow."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.core.config import ModelConfig, get_config
from mlops.core.settings import Settings, get_settings
from mlops.core.storage import ObjectStore, open_store

if TYPE_CHECKING:
    import pandas as pd

    from mlops.quality.gates import DriftBaseline
from mlops.core.errors import GateFailed
from mlops.core.lake import read_parquet, run_key
from mlops.data.steps import read_validated, validated_days

log = logging.getLogger(__name__)

GATE_SUMMARY_TAG = "gate_summary."  # not "gate.": those tags are the verdicts the registry checks


def _report_path(settings: Settings, model: str, run_id: str, gate: str) -> Path:
    path = settings.reports_dir / model / run_key(run_id) / f"{gate}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _log_gate(result: Any, mlflow_run_id: str) -> None:
    """Log the gate's HTML (and JSON twin) and numbers to the training run in MLflow."""
    from mlops.core.tracking import client

    mlflow_client = client()
    mlflow_client.log_artifact(mlflow_run_id, str(result.report_html), artifact_path="reports")
    twin = Path(result.report_html).with_suffix(".json")
    if twin.exists():
        mlflow_client.log_artifact(mlflow_run_id, str(twin), artifact_path="reports")
    for name, value in result.metrics.items():
        if isinstance(value, int | float) and not math.isnan(value):
            mlflow_client.log_metric(mlflow_run_id, f"gate_{result.gate}_{name}", float(value))
    # The verdict line, for the Airflow UI's Gates view (mlops.quality.cockpit) without downloading reports.
    mlflow_client.set_tag(mlflow_run_id, f"{GATE_SUMMARY_TAG}{result.gate}", result.summary[:5000])
    mlflow_client.set_tag(
        mlflow_run_id,
        f"gate.{result.gate}",
        "skipped" if result.skipped else ("passed" if result.passed else "failed"),
    )


def _finish_gate(result: Any, mlflow_run_id: str) -> dict[str, Any]:
    _log_gate(result, mlflow_run_id)
    log.info("%s (report: %s)", result.summary, result.report_html)
    if not result.passed:
        raise GateFailed(f"{result.summary} (report: {result.report_html})")
    out: dict[str, Any] = result.to_dict()
    return out


def drift_reference(
    store: ObjectStore,
    key: str,
    cfg: ModelConfig,
    *,
    exclude_holdout_days: int | None = None,
    exclude_rows: pd.DataFrame | None = None,
    max_rows: int | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, int]:
    """A seeded uniform sample of a training set's rows for the drift check, and how many rows it was
    drawn from; never the whole set in memory.

    Reads the feature and timestamp columns one row group at a time and keeps only the sampled rows,
    so memory is bounded by a row group plus ``max_rows`` (default the drift gate's own sample size),
    whatever the training window. Sets up to ``max_rows`` come back whole, in file order. With
    ``exclude_holdout_days`` the holdout is left out, cut where :func:`mlops.model.train.time_split` cuts it.
    With ``exclude_rows`` (a frame with the entity key and timestamp) the rows with those keys are left out:
    the batch the drift gate compares with must not be part of its own reference, or drift is understated.
    A feature column the set lacks is not read, so the drift gate names it.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops.model.train import holdout_cutoff
    from mlops.quality.gates import DRIFT_SAMPLE_ROWS

    limit = DRIFT_SAMPLE_ROWS if max_rows is None else max_rows
    local = store.local_path(key)
    parquet = pq.ParquetFile(local if local is not None else io.BytesIO(store.get(key)))
    present = set(parquet.schema_arrow.names)
    ts = cfg.timestamp_column
    columns = [c for c in dict.fromkeys([*cfg.feature_columns, ts]) if c in present]
    rows = parquet.metadata.num_rows
    eligible: np.ndarray | None = None  # None: every row
    if exclude_holdout_days is not None:
        if ts not in present:
            raise ValueError(f"training set {key} has no timestamp column {ts!r}: cannot leave out its holdout")
        stamps = parquet.read(columns=[ts]).column(0).to_pandas()
        eligible = np.flatnonzero((stamps < holdout_cutoff(stamps, exclude_holdout_days)).to_numpy())
        rows = len(eligible)
    if exclude_rows is not None:
        outside = _rows_outside(parquet, cfg, exclude_rows)
        eligible = np.flatnonzero(outside) if eligible is None else eligible[outside[eligible]]
        rows = len(eligible)
    if rows <= limit:
        chosen = np.arange(rows) if eligible is None else eligible
    else:
        rng = np.random.default_rng(seed)
        picks = rng.choice(rows, size=limit, replace=False)
        chosen = np.sort(picks if eligible is None else eligible[picks])
    pieces = []
    start = 0
    for group in range(parquet.num_row_groups):
        end = start + parquet.metadata.row_group(group).num_rows
        lo, hi = np.searchsorted(chosen, [start, end])
        if hi > lo:
            pieces.append(parquet.read_row_group(group, columns=columns).take(pa.array(chosen[lo:hi] - start)))
        start = end
    table = pa.concat_tables(pieces) if pieces else parquet.schema_arrow.empty_table().select(columns)
    return table.to_pandas(), rows


def _rows_outside(parquet: Any, cfg: ModelConfig, exclude: pd.DataFrame) -> Any:
    """Boolean mask over the set's rows: True where (entity key, timestamp) is not in ``exclude``."""
    import pandas as pd

    key = [cfg.entity.join_key, cfg.timestamp_column]
    missing = [c for c in key if c not in parquet.schema_arrow.names or c not in exclude.columns]
    if missing:
        raise ValueError(f"cannot leave the batch under test out of the drift reference: no {missing} column")
    present = parquet.read(columns=key).to_pandas()
    stamps = pd.to_datetime(present[key[1]], utc=True)
    left = pd.MultiIndex.from_arrays([present[key[0]].astype(str), stamps])
    right = pd.MultiIndex.from_arrays([exclude[key[0]].astype(str), pd.to_datetime(exclude[key[1]], utc=True)])
    return ~left.isin(right)


def _holdout(trained: dict[str, Any]) -> pd.DataFrame:
    parent, _, name = trained["holdout_uri"].rpartition("/")
    return read_parquet(open_store(parent), name)


def gate_drift(model: str, trained: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Evidently drift between the training rows and the newest validated batch."""
    from mlops.quality.gates import drift_gate

    settings = get_settings()
    cfg = get_config(model).config
    parent, _, name = trained["training_set_uri"].rpartition("/")
    newest = validated_days(model, settings)[-1]
    current = read_validated(model, [newest], settings)
    # The training window, sampled, without the batch under test (it would be compared with itself).
    reference, rows = drift_reference(open_store(parent), name, cfg, exclude_rows=current)
    report = _report_path(settings, model, run_id, "drift")
    result = drift_gate(
        reference, current, cfg, report, reference_rows=rows, baseline=lambda: _champion_drift(model, cfg, current)
    )
    return _finish_gate(result, trained["run_id"])


def _champion_drift(model: str, cfg: ModelConfig, current: pd.DataFrame) -> DriftBaseline | None:
    """How far the champion's own training data is from ``current``; None without a champion or when its
    training set is gone (then the drift share alone decides)."""
    from mlops.core.tracking import configure
    from mlops.model.registry import CHAMPION, get_alias_version, version_tags
    from mlops.quality.gates import DRIFT_SAMPLE_ROWS, DriftBaseline, feature_distance

    configure()
    version = get_alias_version(model, CHAMPION)
    if version is None:
        return None
    uri = version_tags(model, version).get("lineage.training_set_uri")
    if not uri:
        log.warning("drift gate: champion v%s records no training set; no baseline to compare with", version)
        return None
    parent, _, name = uri.rpartition("/")
    store = open_store(parent)
    if not store.exists(name):
        log.warning("drift gate: champion v%s's training set %s is gone; no baseline to compare with", version, uri)
        return None
    reference, _ = drift_reference(store, name, cfg, exclude_rows=current)
    sample = current if len(current) <= DRIFT_SAMPLE_ROWS else current.sample(n=DRIFT_SAMPLE_ROWS, random_state=1)
    return DriftBaseline(version, feature_distance(reference, sample, cfg))


def gate_quality(model: str, trained: dict[str, Any], run_id: str) -> dict[str, Any]:
    from mlops.model.train import outputs_from
    from mlops.quality.gates import quality_gate

    settings = get_settings()
    cfg = get_config(model).config
    holdout = _holdout(trained)
    result = quality_gate(
        holdout,
        holdout[cfg.label.column],
        outputs_from(holdout, cfg),
        cfg,
        _report_path(settings, model, run_id, "quality"),
    )
    return _finish_gate(result, trained["run_id"])


def gate_fairness(model: str, trained: dict[str, Any], run_id: str) -> dict[str, Any]:
    from mlops.model.train import outputs_from
    from mlops.quality.gates import fairness_gate

    settings = get_settings()
    cfg = get_config(model).config
    holdout = _holdout(trained)
    result = fairness_gate(
        holdout,
        holdout[cfg.label.column],
        outputs_from(holdout, cfg),
        cfg,
        _report_path(settings, model, run_id, "fairness"),
    )
    return _finish_gate(result, trained["run_id"])


def gate_champion(model: str, trained: dict[str, Any], run_id: str, force: bool = False) -> dict[str, Any]:
    """Challenger vs the current champion on the same frozen holdout.

    The champion is loaded only through the verified loader: a trusted signature over exactly its
    files and a skops (never pickle) format, checked before anything is deserialized.
    """
    from mlops.core.tracking import configure
    from mlops.model.registry import CHAMPION, get_alias_version
    from mlops.model.scoring import load_verified
    from mlops.model.train import evaluate, model_outputs
    from mlops.quality.gates import champion_gate

    settings = configure()
    cfg = get_config(model).config
    metric = cfg.gates.champion.metric
    champion_version = get_alias_version(model, CHAMPION)
    champion_value = None
    if champion_version is not None:
        champion = load_verified(model, champion_version).pipeline
        holdout = _holdout(trained)
        try:
            outputs = model_outputs(cfg, champion, holdout[cfg.feature_columns])
        except (KeyError, ValueError) as exc:
            if not force:
                raise GateFailed(
                    f"champion gate failed: champion v{champion_version} cannot score this holdout ({exc}); "
                    "the features changed: trigger with force=true to replace it"
                ) from exc
            outputs = None
        if outputs is not None:
            champion_value = evaluate(cfg, holdout[cfg.label.column], outputs)[metric]
    result = champion_gate(
        trained["metrics"][metric],
        champion_value,
        cfg,
        _report_path(settings, model, run_id, "champion"),
        champion_version=champion_version,
        force=force,
    )
    return _finish_gate(result, trained["run_id"])
