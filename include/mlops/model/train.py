"""Training CLI: the same entrypoint runs in the training pod (production) and as a local process.

Arguments in; an MLflow run (params, metrics, model, frozen holdout, lineage tags) and a small JSON
result out. In a KubernetesPodOperator the JSON also goes to ``/airflow/xcom/return.json``.

    python -m mlops.model.train --model credit_risk --training-set <uri> --output result.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.core.config import ModelConfig, check_estimator_overrides, get_config
from mlops.core.lake import read_parquet_uri, write_parquet_uri
from mlops.core.settings import SettingsError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from sklearn.pipeline import Pipeline

log = logging.getLogger("mlops.model.train")

PROBA_COLUMN = "__proba"  # binary: probability of the positive class; multiclass: __proba_<i> per class
PREDICTION_COLUMN = "__prediction"  # regression: the predicted value
XCOM_RETURN = Path("/airflow/xcom/return.json")


def gpu_visible() -> bool:
    """True when an NVIDIA GPU is usable from this process (nvidia-smi lists one)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def build_estimator(family: str, params: dict[str, Any], *, use_gpu: bool) -> tuple[Any, str]:
    """Instantiate an allow-listed estimator family; put XGBoost on CUDA when a GPU is visible.

    ``params`` pass the same check as the config loader's; only ``mlops.model.estimators`` imports a class.
    """
    from mlops.model.estimators import check_params, estimator_class, get_family, signature_params

    spec = get_family(family)
    params = check_params(family, params)
    cls = estimator_class(family)
    if not spec.checked:  # a platform-added family: its own signature is the table
        unknown = sorted(set(params) - signature_params(spec))
        if unknown:
            raise ValueError(f"estimator family {family!r} ({spec.class_path}) takes no parameter(s) {unknown}")
    device = "cpu"
    if spec.uses_gpu and "device" not in params:
        if use_gpu:
            device = "cuda"
        params["device"] = device
    return cls(**params), device


def build_pipeline(cfg: ModelConfig, estimator: Any) -> Pipeline:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    transformers: list[tuple[str, Any, list[str]]] = []
    for (kind, strategy, fill), columns in imputation_groups(cfg).items():
        imputer = SimpleImputer(strategy=strategy, fill_value=fill)
        name = f"{kind}_{strategy}" + (f"_{len(transformers)}" if fill is not None else "")
        if kind == "num":
            transformers.append((name, make_pipeline(imputer, StandardScaler()), columns))
        else:
            encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
            transformers.append((name, make_pipeline(imputer, encoder), columns))
    return Pipeline([("features", ColumnTransformer(transformers)), ("estimator", estimator)])


def imputation_groups(cfg: ModelConfig) -> dict[tuple[str, str, Any], list[str]]:
    """Feature columns grouped by (``num``/``cat``, imputation strategy, fill value), in config order.

    The strategy is each column's missing-value policy (``data_quality.columns.<c>.impute_strategy``),
    the same policy the GX gate applies, so a null the gate lets through is filled the way the config says.
    """
    groups: dict[tuple[str, str, Any], list[str]] = {}
    for kind, columns in (("num", cfg.features.numeric), ("cat", cfg.features.categorical)):
        for column in columns:
            strategy, fill = cfg.impute_strategy(column)
            groups.setdefault((kind, strategy, fill), []).append(column)
    return groups


def holdout_cutoff(ts: pd.Series, holdout_days: int) -> pd.Timestamp:
    """Start of the holdout: midnight of the ``holdout_days``-th most recent calendar day in ``ts``."""
    import pandas as pd

    return ts.max().normalize() - pd.Timedelta(days=holdout_days - 1)


def time_split(df: pd.DataFrame, cfg: ModelConfig, holdout_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The most recent ``holdout_days`` calendar days are the frozen holdout; the rest trains."""
    ts = df[cfg.timestamp_column]
    cutoff = holdout_cutoff(ts, holdout_days)
    train, holdout = df[ts < cutoff], df[ts >= cutoff]
    if train.empty or holdout.empty:
        raise ValueError(
            f"time split needs data before and after {cutoff.date()}: {len(train)} train rows, "
            f"{len(holdout)} holdout rows (widen the training window)"
        )
    return train, holdout


def binary_target(values: pd.Series, cfg: ModelConfig) -> pd.Series:
    """1 for the configured positive class, else 0 (see :func:`mlops.core.labels.positive_mask`)."""
    from mlops.core.labels import binary_target as target

    if cfg.label.positive_class is None:
        raise ValueError(f"{cfg.name} is a {cfg.task} model: it has no positive class")
    return target(values, cfg.label.positive_class)


def encode_target(values: pd.Series, cfg: ModelConfig) -> pd.Series:
    """The target the estimator is fitted on: 0/1 (binary), the class's position in ``label.classes``
    (multiclass) or the number itself (regression). Raises ValueError naming what does not fit."""
    import pandas as pd

    if cfg.task == "binary":
        return binary_target(values, cfg)
    if cfg.task == "regression":
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values[numbers.isna() & values.notna()]
        if len(bad) or pd.api.types.is_bool_dtype(values.dtype):
            shown = ", ".join(repr(v) for v in pd.unique(bad)[:5]) if len(bad) else "booleans"
            raise ValueError(f"regression label '{cfg.label.column}' must be numeric; found {shown}")
        return numbers.astype("float64")
    classes = [str(c) for c in cfg.label.classes or []]
    index = values.astype(str).map({c: i for i, c in enumerate(classes)})
    unknown = values[index.isna()]
    if len(unknown):
        shown = ", ".join(repr(v) for v in pd.unique(unknown)[:5])
        raise ValueError(f"label '{cfg.label.column}' has values outside label.classes {classes}: {shown}")
    return index.astype("int64")


def output_columns(cfg: ModelConfig) -> list[str]:
    """Columns of a scored holdout that hold the model's outputs (see :func:`model_outputs`)."""
    if cfg.task == "binary":
        return [PROBA_COLUMN]
    if cfg.task == "multiclass":
        return [f"{PROBA_COLUMN}_{i}" for i in range(len(cfg.label.classes or []))]
    return [PREDICTION_COLUMN]


def model_outputs(cfg: ModelConfig, pipeline: Any, features: pd.DataFrame) -> np.ndarray:
    """What the gates and scoring compare: the positive class's probability (binary), one probability
    column per configured class in config order (multiclass), or the predicted values (regression)."""
    import numpy as np

    if cfg.task == "regression":
        return np.asarray(pipeline.predict(features), dtype="float64")
    proba = np.asarray(pipeline.predict_proba(features), dtype="float64")
    classes = [int(c) for c in getattr(pipeline, "classes_", range(proba.shape[1]))]
    if cfg.task == "binary":
        return proba[:, classes.index(1) if 1 in classes else proba.shape[1] - 1]
    out = np.zeros((len(features), len(cfg.label.classes or [])), dtype="float64")
    for column, klass in enumerate(classes):
        out[:, klass] = proba[:, column]
    return out


def outputs_from(frame: pd.DataFrame, cfg: ModelConfig) -> np.ndarray:
    """The model outputs stored in a scored holdout (the columns :func:`output_columns` names)."""
    import numpy as np

    columns = output_columns(cfg)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"scored holdout lacks output column(s) {missing} for task {cfg.task}")
    values = frame[columns].to_numpy(dtype="float64")
    return values if cfg.task == "multiclass" else np.asarray(values[:, 0])


def evaluate(cfg: ModelConfig, labels: Any, outputs: Any) -> dict[str, float]:
    """The task's metrics of raw label values against model outputs (:mod:`mlops.quality.metrics`)."""
    import pandas as pd

    from mlops.quality.metrics import task_metrics

    y = encode_target(pd.Series(labels).reset_index(drop=True), cfg).to_numpy()
    return task_metrics(cfg.task, y, outputs, cfg.label.decision_threshold)


def classification_metrics(y_true: Any, proba: Any, cfg: ModelConfig) -> dict[str, float]:
    """Holdout metrics at the model's decision threshold (see :mod:`mlops.quality.metrics`)."""
    from mlops.quality.metrics import classification_metrics as computed

    return computed(y_true, proba, cfg.label.decision_threshold)


def check_estimator_kind(cfg: ModelConfig, estimator: Any) -> None:
    """A classifier for binary/multiclass, a regressor for regression (a platform-added family is only
    known once built)."""
    from sklearn.base import is_classifier, is_regressor

    if cfg.task == "regression" and not is_regressor(estimator):
        raise ValueError(f"task regression needs a regressor; {type(estimator).__name__} is not one")
    if cfg.task != "regression" and not is_classifier(estimator):
        raise ValueError(f"task {cfg.task} needs a classifier; {type(estimator).__name__} is not one")


def check_trainable(cfg: ModelConfig, y_train: pd.Series) -> None:
    """Enough label variety to fit: two classes (binary), every class (multiclass), two values (regression)."""
    if cfg.task == "multiclass":
        classes = cfg.label.classes or []
        absent = [c for i, c in enumerate(classes) if i not in set(y_train.unique())]
        if absent:
            raise ValueError(f"training window has no rows of class(es) {absent} in '{cfg.label.column}': cannot train")
    elif y_train.nunique() < 2:
        what = "value" if cfg.task == "regression" else "class"
        raise ValueError(f"training window has a single {what} in '{cfg.label.column}': cannot train")


def pip_requirements(class_path: str) -> list[str]:
    """Pin the model's runtime libraries from this environment (MLflow's inference takes ~15 s a model)."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["scikit-learn", "pandas", "numpy", "scipy", "skops", "cloudpickle"]
    if class_path.startswith("xgboost."):
        names.append("xgboost-cpu")
        names.append("xgboost")
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return pins


def trusted_types(pipeline: Pipeline) -> list[str]:
    """Types skops must trust to load this pipeline: exactly those our own training just produced."""
    import skops.io

    return list(skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)))


SCHEMA_SAMPLE_ROWS = 10_000


def dataset_input(frame: pd.DataFrame, *, source: str, name: str) -> Any:
    """An MLflow dataset of ``frame`` for ``log_input``, built in time linear in its rows.

    MLflow's ``from_pandas`` infers the schema from every cell (77 s for two frames of 1M rows x 36
    columns here) and maps ``type`` over every cell for a digest of only the first 10,000 rows
    (9 s). Here the digest hashes every row (pandas' vectorised row hash), and the schema is
    inferred from the first :data:`SCHEMA_SAMPLE_ROWS` rows: the columns' types are already fixed
    by the validation gate, so more rows cannot change them.
    """
    import hashlib

    import pandas as pd
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.pandas_dataset import PandasDataset
    from mlflow.models import infer_signature

    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(rows.tobytes() + ",".join(map(str, frame.columns)).encode()).hexdigest()[:12]
    dataset = PandasDataset(df=frame, source=resolve_dataset_source(source), name=name, digest=digest)
    # ``schema`` is a functools.cached_property: a value in the instance dict is used as is.
    dataset.__dict__["schema"] = infer_signature(frame.head(SCHEMA_SAMPLE_ROWS)).inputs
    return dataset


def _score_holdout(
    cfg: ModelConfig, pipeline: Any, holdout_df: pd.DataFrame, y_hold: np.ndarray, holdout_uri: str
) -> tuple[np.ndarray, dict[str, float]]:
    """The model's outputs on the holdout and their metrics; the scored holdout is written to ``holdout_uri``."""
    from mlops.quality.metrics import task_metrics

    outputs = model_outputs(cfg, pipeline, holdout_df[cfg.feature_columns])
    metrics = task_metrics(cfg.task, y_hold, outputs, cfg.label.decision_threshold)
    columns = output_columns(cfg)
    scored = holdout_df.assign(**dict(zip(columns, outputs.reshape(len(holdout_df), -1).T, strict=True)))
    write_parquet_uri(holdout_uri, scored)
    return outputs, metrics


def train(
    cfg: ModelConfig,
    training_set_uri: str,
    *,
    holdout_uri: str,
    estimator_params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    run_name: str | None = None,
) -> dict[str, Any]:
    """Fit, evaluate on the time-based holdout, log everything to MLflow; return a small result."""
    from mlflow.models import infer_signature

    import mlflow
    from mlops.core.progress import log_group
    from mlops.core.settings import get_settings
    from mlops.core.tracking import client, configure, directory_checksum, ensure_experiment
    from mlops.model.signing import sign_model, signer_fingerprint, signing_key, skops_model

    started = time.monotonic()
    private_key = signing_key(get_settings())  # before the fit: a missing key must not waste a GPU hour
    df = read_parquet_uri(training_set_uri).sort_values(cfg.timestamp_column, kind="stable")
    train_df, holdout_df = time_split(df, cfg, cfg.training.holdout_days)
    del df  # the two halves are copies: a whole extra copy of the set would stay alive during the fit
    params = {**cfg.training.estimator.params, **(estimator_params or {})}
    estimator, device = build_estimator(cfg.training.estimator.family, params, use_gpu=gpu_visible())
    check_estimator_kind(cfg, estimator)
    pipeline = build_pipeline(cfg, estimator)
    x_train, y_train = train_df[cfg.feature_columns], encode_target(train_df[cfg.label.column], cfg)
    x_hold, y_hold = holdout_df[cfg.feature_columns], encode_target(holdout_df[cfg.label.column], cfg)
    check_trainable(cfg, y_train)
    log.info(
        "training %s on %d rows (%d holdout) with %s on %s",
        cfg.name,
        len(train_df),
        len(holdout_df),
        cfg.training.estimator.class_path,
        device,
    )
    fit_started = time.monotonic()
    with log_group(f"step 1/3: fit {cfg.training.estimator.family} on {len(train_df)} rows", log):
        pipeline.fit(x_train, y_train)
    fit_seconds = time.monotonic() - fit_started
    with log_group(f"step 2/3: score the holdout ({len(holdout_df)} rows)", log):
        outputs, metrics = _score_holdout(cfg, pipeline, holdout_df, y_hold.to_numpy(), holdout_uri)

    settings = configure()
    experiment_id = ensure_experiment(cfg.name, settings)
    with (
        log_group("step 3/3: log, sign and store the model in MLflow", log),
        mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run,
    ):
        mlflow.set_tags(
            {**(tags or {}), "estimator": cfg.training.estimator.class_path, "device": device, "task": cfg.task}
        )
        mlflow.log_params({f"estimator.{k}": v for k, v in params.items()})
        mlflow.log_params(
            {
                "rows_train": len(train_df),
                "rows_holdout": len(holdout_df),
                "holdout_days": cfg.training.holdout_days,
                "training_set": training_set_uri,
            }
        )
        mlflow.log_metrics({**{f"holdout_{k}": v for k, v in metrics.items()}, "fit_seconds": fit_seconds})
        mlflow.log_input(dataset_input(train_df, source=training_set_uri, name="training_set"), context="training")
        mlflow.log_input(dataset_input(holdout_df, source=holdout_uri, name="holdout"), context="holdout")
        signature = infer_signature(x_hold.head(100), outputs[:100])
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            input_example=x_hold.head(3),
            skops_trusted_types=trusted_types(pipeline),
            pip_requirements=pip_requirements(cfg.training.estimator.class_path),
        )
        # Sign what the store now holds (downloaded back by the logged model's URI, as loaders do),
        # then store the signature beside those files: the registered version carries both.
        with tempfile.TemporaryDirectory(prefix="signed-model-") as tmp:
            local_model = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=tmp))
            skops_model(local_model, name=f"{cfg.name} run {run.info.run_id}")  # never sign a pickle
            model_sig = sign_model(local_model, private_key)
            client(settings).log_model_artifact(info.model_id, str(model_sig))
            checksum = directory_checksum(local_model)
        signed_by = signer_fingerprint(private_key)
        mlflow.set_tags({"model_sha256": checksum, "model_signed_by": signed_by})
    result = {
        "model": cfg.name,
        "run_id": run.info.run_id,
        "model_uri": info.model_uri,
        "experiment_id": experiment_id,
        "metrics": metrics,
        "holdout_uri": holdout_uri,
        "training_set_uri": training_set_uri,
        "rows_train": len(train_df),
        "rows_holdout": len(holdout_df),
        "train_start": str(train_df[cfg.timestamp_column].min()),
        "train_end": str(train_df[cfg.timestamp_column].max()),
        "device": device,
        "model_sha256": checksum,
        "model_signed_by": signed_by,
        "seconds": round(time.monotonic() - started, 2),
    }
    log.info("trained %s run %s: %s", cfg.name, run.info.run_id, json.dumps(metrics))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops.model.train", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model config name (include/models/<name>.yaml)")
    parser.add_argument("--training-set", required=True, help="parquet URI (path or s3://...)")
    parser.add_argument("--holdout-output", required=True, help="where the scored holdout parquet goes")
    parser.add_argument("--estimator-params", default="{}", help="JSON object overriding estimator params")
    parser.add_argument("--tags", default="{}", help="JSON object of MLflow run tags (lineage)")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--output", default=None, help="write the JSON result here too")
    parser.add_argument("--xcom", action="store_true", help="write /airflow/xcom/return.json (in a pod)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        overrides = json.loads(args.estimator_params)
        tags = json.loads(args.tags)
        cfg = get_config(args.model).config
        check_estimator_overrides(cfg, overrides)  # the loader's check, before any data is read
        result = train(
            cfg,
            args.training_set,
            holdout_uri=args.holdout_output,
            estimator_params=overrides,
            tags=tags,
            run_name=args.run_name,
        )
    except (ValueError, json.JSONDecodeError, SettingsError) as exc:
        print(f"training failed: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result)
    if args.output:
        Path(args.output).write_text(text)
    if args.xcom:
        XCOM_RETURN.parent.mkdir(parents=True, exist_ok=True)
        XCOM_RETURN.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
