"""Model pipelines are configuration: one YAML file per model in ``include/models/``.

The schema below is the single source of truth for every key; ``python -m mlops.core.config --markdown``
prints the reference table that the README carries. Loading is cheap (YAML + pydantic, no I/O beyond
the file) because DAG files call it at parse time to generate one set of DAGs per model.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from mlops.model.estimators import FAMILIES, EstimatorParamError, check_params, get_family
from mlops.quality.metrics import LOWER_IS_BETTER, TASK_METRICS, UNIT_METRICS

NAME_PATTERN = r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$"
NAME_MAX = 40
# Names the platform derives from a model name: DAG ids ``<model>__<kind>``, MLflow names such as
# ``<model>__shadow`` / ``__alias_history`` / ``__monitoring`` (hence no ``__`` in a name), and the
# config-error DAGs ``model_config_errors__<kind>``.
RESERVED_PREFIXES = ("model_config_errors",)
COLUMN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
LANDING_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
FLAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
OWNER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
# An OCI image reference: [registry[:port]/]path[:tag][@sha256:digest].
IMAGE_PATTERN = (
    r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
CPU_PATTERN = r"^(?:[0-9]+(?:\.[0-9]{1,3})?|[0-9]+m)$"
MEMORY_PATTERN = r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$"
MEMORY_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
# Airflow's cron presets (airflow.utils.dates.cron_presets; a unit test keeps the two equal).
CRON_PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}
# Every task's metrics (mlops.quality.metrics.TASK_METRICS says which task has which).
METRIC = Literal[
    "roc_auc", "accuracy", "f1", "precision", "recall", "macro_f1", "log_loss", "roc_auc_ovr", "rmse", "mae", "r2"
]
# Per-group metrics of the fairness gate, by task.
FAIRNESS_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("selection_rate", "true_positive_rate", "false_positive_rate", "accuracy"),
    "multiclass": ("accuracy", "macro_recall"),
    "regression": ("mae",),
}
# What a task gets when its config leaves a gate's metric out (binary keeps the schema's defaults).
TASK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "multiclass": {
        "quality": {"min_metrics": {"macro_f1": 0.5}},
        "champion": {"metric": "macro_f1"},
        "fairness": {"metric": "accuracy"},
    },
    "regression": {
        "quality": {"min_metrics": {"r2": 0.1}},
        "champion": {"metric": "rmse"},
        "fairness": {"metric": "mae"},
    },
}
MAX_FILE_BYTES = 256 * 1024


class KeyedError(ValueError):
    """A validation problem at ``key`` below the model the validator runs on (reported as ``a.b.key``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def check_model_name(value: str) -> str:
    """Lower-case words joined by single underscores, and no name the platform reserves."""
    if not isinstance(value, str) or not re.fullmatch(NAME_PATTERN, value) or not 2 <= len(value) <= NAME_MAX:
        raise ValueError(
            f"{value!r} must be 2-{NAME_MAX} lower-case letters/digits in words joined by single underscores "
            "(no '__': the platform's DAG ids '<model>__<kind>' and MLflow names '<model>__shadow' use it)"
        )
    for prefix in RESERVED_PREFIXES:
        if value.startswith(prefix):
            raise ValueError(f"{value!r} starts with {prefix!r}, which the platform reserves for its own DAGs")
    return value


def check_column(value: str) -> str:
    if not re.fullmatch(COLUMN_PATTERN, value):
        raise ValueError(f"column name {value!r} must be an identifier (letters, digits, '_'; at most 64)")
    return value


def _columns(values: list[str], what: str) -> list[str]:
    for value in values:
        check_column(value)
    duplicated = sorted({v for v in values if values.count(v) > 1})
    if duplicated:
        raise ValueError(f"{what} listed more than once: {duplicated}")
    return values


def check_landing_path(value: str) -> str:
    """A path below the environment's landing root: plain segments, never absolute, a URL or ``..``."""
    hint = "a path relative to the landing root (MLOPS_LANDING_URI), like 'credit_risk' or 'team/credit_risk'"
    if "://" in value or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", value):
        raise ValueError(f"{value!r} names a location with a scheme; must be {hint}")
    if value.startswith(("/", "\\")) or "\\" in value:
        raise ValueError(f"{value!r} is absolute or uses backslashes; must be {hint}")
    segments = value.split("/")
    if len(value) > 200 or len(segments) > 8:
        raise ValueError(f"{value!r} is too long (at most 8 segments, 200 characters); must be {hint}")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ValueError(f"{value!r} has an empty, '.' or '..' segment; must be {hint}")
        if segment.startswith("."):
            raise ValueError(f"{value!r} has a hidden segment {segment!r}; must be {hint}")
        if not re.fullmatch(LANDING_SEGMENT, segment):
            raise ValueError(f"{value!r}: segment {segment!r} may hold only letters, digits, '_', '.' and '-'")
    return value


def check_ready_flag(value: str) -> str:
    """A plain file name in the landing folder that no batch file can have."""
    if not re.fullmatch(FLAG_PATTERN, value):
        raise ValueError(
            f"{value!r} must be a plain file name (letters, digits, '_', '.', '-'; not starting with '.'), "
            "e.g. '_READY'"
        )
    if value.lower().endswith((".csv", ".parquet")):
        raise ValueError(f"{value!r} could be a batch file (.csv/.parquet): the watcher would delete a batch")
    return value


def check_cron(expression: str) -> str:
    """A cron Airflow accepts (its presets, or five fields croniter parses, as Airflow's timetables do)."""
    from datetime import datetime

    from croniter import CroniterError, croniter

    if expression.startswith("@"):
        if expression not in CRON_PRESETS:
            raise ValueError(f"unknown cron preset {expression!r}; Airflow knows {', '.join(CRON_PRESETS)}")
        return expression
    if len(expression.split()) != 5:
        raise ValueError(f"{expression!r} must have five fields (minute hour day-of-month month day-of-week)")
    try:
        croniter(expression, datetime(2026, 1, 1)).get_next(datetime)
    except (CroniterError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"{expression!r} is not a cron Airflow can schedule: {exc}") from None
    return expression


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _metrics(values: dict[str, float]) -> dict[str, float]:
    for name, value in values.items():
        if name in LOWER_IS_BETTER:
            if value < 0:
                raise KeyedError(name, f"{name} threshold {value} must be at least 0")
        elif not 0 <= value <= 1:
            raise KeyedError(name, f"{name} threshold {value} must be between 0 and 1")
    return values


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SourceConfig(_Strict):
    landing: str = Field(
        description="Where new batch files land: a path of plain segments relative to the environment's "
        "landing root (`MLOPS_LANDING_URI`, a folder or `s3://bucket/prefix`); never absolute, a URL or `..`. "
        "Files are named `YYYY-MM-DD*.csv|parquet`; the date is the batch's data interval."
    )
    formats: list[Literal["csv", "parquet"]] = Field(
        default=["csv", "parquet"], min_length=1, description="File formats accepted from the landing location."
    )
    ready_flag: str | None = Field(
        default="_READY",
        description="File name (no folder; never a `.csv`/`.parquet` batch name) the producer writes into a "
        "local landing folder after landing batches. An Airflow "
        "AssetWatcher in the triggerer deletes it and starts `<model>__landing`, which ingests, validates and "
        "materializes every newly landed batch at once. null: no flag watcher (the daily data DAG still runs). An "
        "`s3://` landing root uses no flag: S3 event notifications to SQS (`MLOPS_LANDING_QUEUE_URL`) start it.",
    )

    @field_validator("landing")
    @classmethod
    def _landing(cls, value: str) -> str:
        return check_landing_path(value)

    @field_validator("ready_flag")
    @classmethod
    def _flag(cls, value: str | None) -> str | None:
        return None if value is None else check_ready_flag(value)

    @field_validator("formats")
    @classmethod
    def _formats(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("formats listed more than once")
        return value


class EntityConfig(_Strict):
    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX, description="Feast entity name.")
    join_key: str = Field(description="Column that identifies the entity (the Feast join key).")
    dtype: Literal["int64", "string"] = Field(default="int64", description="Type of the join key.")

    @field_validator("join_key")
    @classmethod
    def _column(cls, value: str) -> str:
        return check_column(value)


class LabelConfig(_Strict):
    column: str = Field(description="Label column in each batch.")
    decision_threshold: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Probability of the positive class at or above which a row is predicted positive "
        "(gates, scoring and monitoring).",
    )
    positive_class: StrictBool | StrictInt | StrictStr | None = Field(
        default=None,
        description="Value of the label that counts as the positive class (a boolean, an integer or a string); "
        "required for `task: binary`, absent for multiclass and regression.",
    )
    classes: list[StrictBool | StrictInt | StrictStr] | None = Field(
        default=None,
        description="Every value the label may take (a GX expectation: a batch with any other value is "
        "quarantined): at least two distinct values of `positive_class`'s type, holding it. Default: "
        "`[false, true]` for a boolean `positive_class`, `[0, 1]` for an integer one; a string `positive_class` "
        "needs the list.",
    )

    @field_validator("column")
    @classmethod
    def _column(cls, value: str) -> str:
        return check_column(value)

    @field_validator("positive_class", mode="before")
    @classmethod
    def _label_value(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, bool | int | str):
            raise ValueError(f"{value!r} must be a boolean, an integer or a string label value")
        return value

    @field_validator("classes", mode="before")
    @classmethod
    def _label_values(cls, value: Any) -> Any:
        if isinstance(value, list):
            for item in value:
                cls._label_value(item)
        return value

    @model_validator(mode="after")
    def _classes(self) -> LabelConfig:
        positive = self.positive_class
        if positive is None:  # multiclass or regression: ModelConfig checks them against the task
            return self
        if self.classes is None:
            if isinstance(positive, str):
                raise KeyedError("classes", "required when positive_class is a string (list every label value)")
            if positive not in (0, 1):
                raise KeyedError("classes", f"required when positive_class ({positive}) is not 0 or 1")
            return self
        if len(self.classes) < 2:
            raise KeyedError("classes", "must list at least two label values")
        if len(set(self.classes)) != len(self.classes):
            raise KeyedError("classes", f"values listed more than once: {self.classes}")
        mixed = [c for c in self.classes if type(c) is not type(positive)]
        if mixed:
            raise KeyedError("classes", f"{mixed} are not of positive_class's type ({type(positive).__name__})")
        if positive not in self.classes:
            raise KeyedError("classes", f"must hold positive_class {positive!r}")
        return self

    @property
    def positive(self) -> bool | int | str:
        """The binary label's positive class (the loader requires one for task binary, refuses it otherwise)."""
        if self.positive_class is None:
            raise ValueError(f"label '{self.column}' has no positive class: the model is not binary")
        return self.positive_class

    @property
    def allowed_values(self) -> list[bool | int | str]:
        """The label values a batch may contain: the config's ``classes``, else both booleans or ``[0, 1]``."""
        if self.classes is not None:
            return list(self.classes)
        if self.positive_class is None:
            raise ValueError("a regression label has no classes")
        if isinstance(self.positive_class, bool):
            return [False, True]
        if isinstance(self.positive_class, int):
            return [0, 1]
        raise ValueError("label.classes is required when label.positive_class is a string")


class FeaturesConfig(_Strict):
    version: int = Field(
        default=1, ge=1, le=10_000, description="Version of the feature service (`<model>_v<version>`)."
    )
    ttl_days: int = Field(default=365, ge=1, le=36_500, description="Feast feature view TTL in days.")
    numeric: list[str] = Field(default_factory=list, max_length=10_000, description="Numeric feature columns.")
    categorical: list[str] = Field(
        default_factory=list, max_length=10_000, description="Categorical (string) feature columns."
    )

    @field_validator("numeric", "categorical")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return _columns(value, "columns")

    @model_validator(mode="after")
    def _some_features(self) -> FeaturesConfig:
        if not self.numeric and not self.categorical:
            raise ValueError("at least one numeric or categorical feature is required")
        overlap = set(self.numeric) & set(self.categorical)
        if overlap:
            raise ValueError(f"columns listed as both numeric and categorical: {sorted(overlap)}")
        return self


class ColumnRule(_Strict):
    min: float | None = Field(default=None, description="Smallest allowed value (numeric columns only).")
    max: float | None = Field(default=None, description="Largest allowed value (numeric columns only).")
    allowed: list[StrictStr] | None = Field(
        default=None,
        min_length=1,
        max_length=100_000,
        description="Allowed categories (categorical features and sensitive attributes only).",
    )
    max_null_fraction: float | None = Field(
        default=None, ge=0, le=1, description="Override of the batch-wide null budget for this column."
    )
    mostly: float = Field(default=1.0, gt=0, le=1, description="Fraction of rows that must satisfy min/max/allowed.")
    missing: Literal["reject", "impute"] = Field(
        default="reject",
        description="Missing values: `reject` (the GX gate quarantines a batch with more than "
        "`max_null_fraction` nulls here, default the batch-wide budget; tolerated nulls are then imputed with "
        "the median / most frequent value in training) or `impute` (nulls pass the gate up to "
        "`max_null_fraction`, default 1, and training fills them with `impute_strategy`). Features only.",
    )
    impute_strategy: Literal["median", "mean", "most_frequent", "constant"] | None = Field(
        default=None,
        description="How training fills this column's nulls (scikit-learn `SimpleImputer`): default `median` "
        "for numeric and `most_frequent` for categorical features; `mean` is for numeric columns only; "
        "`constant` needs `fill_value`.",
    )
    fill_value: StrictInt | float | StrictStr | None = Field(
        default=None, description="The value `impute_strategy: constant` fills in (a number or a category)."
    )

    @model_validator(mode="after")
    def _range(self) -> ColumnRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise KeyedError("min", f"min ({self.min:g}) is greater than max ({self.max:g})")
        if self.impute_strategy is not None and self.missing != "impute":
            raise KeyedError("impute_strategy", "set `missing: impute` too (with `missing: reject` nothing is filled)")
        if (self.impute_strategy == "constant") != (self.fill_value is not None):
            raise KeyedError("fill_value", "is required with `impute_strategy: constant` and only with it")
        if self.allowed is not None and len(set(self.allowed)) != len(self.allowed):
            raise KeyedError("allowed", "categories listed more than once")
        return self


class DataQualityConfig(_Strict):
    min_rows: int = Field(default=1, ge=1, le=1_000_000_000, description="Fewest rows a batch may have.")
    max_rows: int = Field(default=10_000_000, ge=1, le=1_000_000_000, description="Most rows a batch may have.")
    max_file_mb: float = Field(
        default=512,
        gt=0,
        le=1_000_000,
        description="Largest landed file, in MiB, checked before it is read (a bigger one is quarantined unread).",
    )
    max_day_mb: float = Field(
        default=2048,
        gt=0,
        le=10_000_000,
        description="Largest total size of one day's landed files, in MiB, checked before any of them is read; "
        "at least `max_file_mb`.",
    )
    max_null_fraction: float = Field(
        default=0.0, ge=0, le=1, description="Largest fraction of nulls allowed in any expected column."
    )
    freshness_max_age_hours: float = Field(
        default=48,
        gt=0,
        le=87_600,
        description="Event timestamps must be no older than this before the interval start.",
    )
    columns: dict[str, ColumnRule] = Field(default_factory=dict, description="Per-column rules.")

    @field_validator("columns")
    @classmethod
    def _column_names(cls, value: dict[str, ColumnRule]) -> dict[str, ColumnRule]:
        _columns(list(value), "columns")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> DataQualityConfig:
        if self.min_rows > self.max_rows:
            raise KeyedError("min_rows", f"min_rows ({self.min_rows}) is greater than max_rows ({self.max_rows})")
        if self.max_file_mb > self.max_day_mb:
            raise KeyedError(
                "max_file_mb", f"max_file_mb ({self.max_file_mb:g}) is greater than max_day_mb ({self.max_day_mb:g})"
            )
        return self


class DriftGate(_Strict):
    max_drifted_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Largest share of features allowed to drift (Evidently).",
    )
    champion_margin: float | None = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="A version over `max_drifted_share` still passes when its training data is closer to the "
        "checked batch than the champion's by at least this fraction of the champion's mean feature distance "
        "(a retrain after drift, whose window reaches the new data); null: never, the share alone decides.",
    )


class QualityGate(_Strict):
    min_metrics: dict[METRIC, float] = Field(
        default_factory=lambda: {"roc_auc": 0.6},  # type: ignore[arg-type,dict-item]
        description="Lowest acceptable value (0-1) of each holdout metric that is better when higher; of the "
        "model's task (binary: roc_auc, accuracy, f1, precision, recall; multiclass: macro_f1, accuracy, "
        "roc_auc_ovr; regression: r2). Default per task: `{roc_auc: 0.6}`, `{macro_f1: 0.5}`, `{r2: 0.1}`.",
    )
    max_metrics: dict[METRIC, float] = Field(
        default_factory=dict,
        description="Highest acceptable value (>= 0) of each error metric (multiclass: log_loss; regression: "
        "rmse, mae, in the label's units).",
    )

    @field_validator("min_metrics", "max_metrics")
    @classmethod
    def _range(cls, value: dict[str, float]) -> dict[str, float]:
        return _metrics(value)

    @model_validator(mode="after")
    def _some(self) -> QualityGate:
        if not self.min_metrics and not self.max_metrics:
            raise KeyedError(
                "min_metrics", "the quality gate needs at least 1 threshold (in min_metrics or max_metrics)"
            )
        return self


class FairnessGate(_Strict):
    metric: Literal[
        "selection_rate", "true_positive_rate", "false_positive_rate", "accuracy", "macro_recall", "mae"
    ] = Field(
        default="selection_rate",
        description="Metric compared across groups (fairlearn MetricFrame). binary: selection_rate, "
        "true_positive_rate, false_positive_rate, accuracy; multiclass: accuracy, macro_recall (default "
        "accuracy); regression: mae (the default).",
    )
    max_disparity: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Largest allowed difference between groups' metric values; for `mae`, the difference "
        "relative to the overall MAE (0.2: the worst group's MAE exceeds the best's by at most 20% of it).",
    )
    min_group_size: int = Field(
        default=20, ge=1, le=1_000_000, description="Groups with fewer holdout rows are reported but not gated."
    )


class ChampionGate(_Strict):
    metric: METRIC = Field(
        default="roc_auc",
        description="Comparison metric of the model's task (default: roc_auc, multiclass macro_f1, regression "
        "rmse). Error metrics (rmse, mae, log_loss) compare lower-is-better.",
    )
    tolerance: float = Field(
        default=0.01,
        ge=0,
        description="How much worse than the champion the challenger may be (in the metric's units; at most 1 "
        "for a 0-1 metric).",
    )


class GatesConfig(_Strict):
    drift: DriftGate = Field(default_factory=DriftGate, description="Data drift gate.")
    quality: QualityGate = Field(default_factory=QualityGate, description="Holdout quality gate.")
    fairness: FairnessGate = Field(default_factory=FairnessGate, description="Group fairness gate.")
    champion: ChampionGate = Field(default_factory=ChampionGate, description="Challenger vs champion gate.")


class EstimatorConfig(_Strict):
    family: str = Field(
        description="Estimator family from the platform's allow-list (`mlops.model.estimators`): "
        + ", ".join(f"`{name}` ({family.class_path})" for name, family in FAMILIES.items())
        + ". Never an import path."
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Constructor arguments, checked against the family's own parameters (names, types, ranges).",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_import_path(cls, data: Any) -> Any:
        if isinstance(data, dict) and "class" in data:
            named = data["class"]
            suggestion = next((n for n, f in FAMILIES.items() if f.class_path == named), "xgboost")
            raise KeyedError(
                "class",
                "an import path is not accepted (a config names data, never code): write "
                f"`family: {suggestion}` instead; families: {', '.join(FAMILIES)}",
            )
        return data

    @model_validator(mode="after")
    def _allowed(self) -> EstimatorConfig:
        try:
            check_params(self.family, self.params)
        except EstimatorParamError as exc:
            raise KeyedError(exc.key, str(exc)) from None
        return self

    @property
    def class_path(self) -> str:
        """The allow-listed class of the family (for lineage tags and requirements, never imported from data)."""
        return get_family(self.family).class_path


class ResourcesConfig(_Strict):
    cpu: str = Field(
        default="2", description="CPU request/limit of the training pod (Kubernetes quantity: `2`, `0.5`, `500m`)."
    )
    memory: str = Field(
        default="4Gi", description="Memory request/limit of the training pod (Kubernetes quantity: `4Gi`, `512Mi`)."
    )
    gpu: int = Field(default=0, ge=0, le=8, description="`nvidia.com/gpu` limit of the training pod.")
    image: str | None = Field(
        default=None,
        description="Training image reference (`registry/path:tag[@sha256:...]`); defaults to MLOPS_TRAINING_IMAGE.",
    )

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: str) -> str:
        if not re.fullmatch(CPU_PATTERN, value):
            raise ValueError(f"{value!r} is not a Kubernetes CPU quantity like '2', '0.5' or '500m'")
        cores = int(value[:-1]) / 1000 if value.endswith("m") else float(value)
        if not 0.1 <= cores <= 256:
            raise ValueError(f"{value!r} must be between 100m and 256 cores")
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        match = re.fullmatch(MEMORY_PATTERN, value)
        if not match:
            raise ValueError(f"{value!r} is not a Kubernetes memory quantity like '4Gi' or '512Mi'")
        size = float(match[1]) * MEMORY_UNITS[match[2] or ""]
        if not 128 * 2**20 <= size <= 4 * 2**40:
            raise ValueError(f"{value!r} must be between 128Mi and 4Ti")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 512 or not re.fullmatch(IMAGE_PATTERN, value)):
            raise ValueError(f"{value!r} is not an image reference like 'ghcr.io/org/trainer:1.2.0'")
        return value


class TrainingConfig(_Strict):
    window_days: int = Field(default=30, ge=3, le=3650, description="Days of data in the default training window.")
    holdout_days: int = Field(
        default=2, ge=1, le=365, description="Most recent days of the window held out for gates (< `window_days`)."
    )
    estimator: EstimatorConfig = Field(
        description="The estimator to train: a classifier for binary and multiclass, a regressor for regression."
    )
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="Pod resources.")
    schedule: str | None = Field(
        default="0 3 * * 0",
        description="Cron (five fields, UTC, or an Airflow preset like `@weekly`) for scheduled retraining, or null.",
    )
    timeout_minutes: int = Field(
        default=240,
        ge=5,
        le=2880,
        description="Longest a training may run (local process group killed, pod deadline); then it is "
        "ended as an infrastructure failure and retried.",
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        if self.holdout_days >= self.window_days:
            raise KeyedError(
                "holdout_days",
                f"holdout_days ({self.holdout_days}) must be less than window_days ({self.window_days}): "
                "nothing would be left to train on",
            )
        family = get_family(self.estimator.family)
        if self.resources.gpu and family.checked and not family.uses_gpu:
            raise KeyedError(
                "resources.gpu",
                f"estimator family {self.estimator.family!r} cannot use a GPU; set gpu: 0 (GPU families: "
                f"{', '.join(n for n, f in FAMILIES.items() if f.uses_gpu)})",
            )
        return self


class MonitoringConfig(_Strict):
    drift_share_threshold: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Share of drifted features in a scored batch (vs the champion's training data) that "
        "emits a drift event and so triggers retraining.",
    )
    prediction_drift_threshold: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Kolmogorov-Smirnov statistic between the champion's holdout scores and a batch's "
        "scores (multiclass: total variation distance between predicted-class shares) above which prediction "
        "drift also emits a drift event.",
    )
    min_quality: dict[METRIC, float] = Field(
        default_factory=dict,
        description="Hard guardrails (0-1) on labelled scored batches: below any of them the circuit breaker "
        "rolls the champion back.",
    )
    max_quality: dict[METRIC, float] = Field(
        default_factory=dict,
        description="Hard guardrails on error metrics (rmse, mae, log_loss) of labelled scored batches: above "
        "any of them the circuit breaker rolls the champion back.",
    )
    min_rows_for_quality: int = Field(
        default=50,
        ge=1,
        le=10_000_000,
        description="Fewest labelled rows before quality is judged (and the breaker may fire).",
    )

    @field_validator("min_quality", "max_quality")
    @classmethod
    def _range(cls, value: dict[str, float]) -> dict[str, float]:
        return _metrics(value)


class RetrainingConfig(_Strict):
    cooldown_minutes: float = Field(
        default=60,
        ge=0,
        le=43_200,
        description="An event-triggered retrain (drift or new labels) within this many minutes of the last "
        "one is skipped (at most 30 days).",
    )
    on_new_labels: bool = Field(
        default=False,
        description="Also retrain when `<model>__landing` has validated newly landed labelled batches (the "
        "`<model>.labels` Asset), not only on drift and on the cron.",
    )


class CanaryConfig(_Strict):
    steps: list[float] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0, 100.0],
        min_length=1,
        max_length=20,
        description="Percent of entities the canary serves at each step, increasing, each in (0, 100]. "
        "Passing the analysis after the last step moves `champion` to the canary.",
    )
    min_intervals: int = Field(
        default=1, ge=1, le=365, description="Scored intervals a step needs before it is judged."
    )
    min_scored_rows: int = Field(
        default=100, ge=1, le=100_000_000, description="Rows the canary must have served in a step before it is judged."
    )
    min_labelled_rows: int = Field(
        default=50,
        ge=1,
        le=100_000_000,
        description="Labelled rows each arm needs in a step before quality is compared (and the quality "
        "guardrail may abort).",
    )
    max_quality_drop: dict[METRIC, float] = Field(
        default_factory=lambda: {"roc_auc": 0.03},  # type: ignore[arg-type,dict-item]
        description="Largest drop (0-1) of each live metric, canary vs champion on the same intervals' split, "
        "before the step aborts.",
    )
    max_prediction_drift: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Largest Kolmogorov-Smirnov statistic between the canary's and the champion's scores "
        "(their arms are random halves of the same entities) before the step aborts.",
    )
    max_failure_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Guardrail: share of the canary's rows without a finite score; above it the rollout "
        "aborts at once.",
    )
    max_p99_latency_ms: float = Field(
        default=250.0,
        gt=0,
        le=60_000,
        description="Guardrail: per-row p99 of the canary's predict call (ms); above it the rollout aborts at once.",
    )
    latency_sample_rows: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="Rows per scoring run timed one at a time for the per-row p50/p99 of predict (every model).",
    )

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[float]) -> list[float]:
        for index, share in enumerate(value):
            if not 0 < share <= 100:
                raise KeyedError(str(index), f"step {share} must be a percent in (0, 100]")
            if index and share <= value[index - 1]:
                raise KeyedError(str(index), f"steps must increase ({value[index - 1]} then {share})")
        return value

    @field_validator("max_quality_drop")
    @classmethod
    def _drops(cls, value: dict[str, float]) -> dict[str, float]:
        return _metrics(value)


class PromotionConfig(_Strict):
    require_approval: bool = Field(
        default=False, description="Wait for a person's approval in Airflow before `champion` moves."
    )
    strategy: Literal["canary", "immediate"] = Field(
        default="canary",
        description="`canary`: a version that passed every gate serves a growing share of entities "
        "(`<model>__rollout` judges each step) before it becomes `champion`; `immediate`: it becomes "
        "`champion` for all traffic at once. A model's first version is always immediate (nothing to compare). "
        "Multiclass and regression models are `immediate` (the live analysis judges binary models only).",
    )
    canary: CanaryConfig = Field(default_factory=CanaryConfig, description="Canary steps, evidence and thresholds.")


class SensitiveGroup(_Strict):
    type: Literal["numeric", "categorical"] | None = Field(
        default=None,
        description="How the attribute is read: `numeric` (e.g. age, or a 0/1 flag) or `categorical` "
        "(strings). Default: numeric when it is a numeric feature, else categorical.",
    )
    edges: list[float] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Inner bin edges for a numeric attribute, ascending: `[30, 45]` gives the groups "
        "`age < 30`, `age 30-45`, `age ≥ 45`.",
    )
    quantiles: int | None = Field(
        default=None,
        ge=2,
        le=20,
        description="Bin a numeric attribute into this many equal-count bins of the holdout being gated "
        "(instead of `edges`).",
    )

    @model_validator(mode="after")
    def _bins(self) -> SensitiveGroup:
        if self.edges is not None and self.quantiles is not None:
            raise KeyedError("edges", "give either edges or quantiles, not both")
        if self.edges is not None and any(b <= a for a, b in itertools.pairwise(self.edges)):
            raise KeyedError("edges", f"must be strictly ascending, got {self.edges}")
        if (self.edges is not None or self.quantiles is not None) and self.type == "categorical":
            raise KeyedError("type", "bins (edges/quantiles) apply to numeric attributes only")
        return self


def class_column(value: bool | int | str) -> str:
    """The scoring output column holding the probability of one class (``proba_<class>``)."""
    return "proba_" + re.sub(r"[^A-Za-z0-9_]", "_", str(value))


def check_task_label(task: str, label: LabelConfig) -> None:
    """The label fits the task: a positive class for binary, >= 3 classes for multiclass, none for regression."""
    if task == "binary":
        if label.positive_class is None:
            raise KeyedError("label.positive_class", "required for task binary (the value that counts as positive)")
        return
    if label.positive_class is not None:
        hint = "list every class in label.classes" if task == "multiclass" else "remove it"
        raise KeyedError("label.positive_class", f"a {task} model has no positive class: {hint}")
    if task == "regression":
        if label.classes is not None:
            raise KeyedError("label.classes", "a regression label is a number, not a class: remove label.classes")
        return
    classes = label.classes or []
    if len(classes) < 3:
        raise KeyedError(
            "label.classes",
            f"task multiclass needs at least three classes, got {len(classes)}; two classes are task: binary",
        )
    if len({type(c) for c in classes}) != 1:
        raise KeyedError("label.classes", f"classes mix types: {classes}")
    names = [class_column(c) for c in classes]
    if len(set(names)) != len(names):
        raise KeyedError("label.classes", f"classes {classes} collide as output column names {names}")


def check_task_metrics(cfg: ModelConfig) -> None:
    """Every threshold names a metric of the model's task, on the side its direction needs."""
    allowed = TASK_METRICS[cfg.task]
    sides = [
        ("gates.quality.min_metrics", cfg.gates.quality.min_metrics, False),
        ("gates.quality.max_metrics", cfg.gates.quality.max_metrics, True),
        ("monitoring.min_quality", cfg.monitoring.min_quality, False),
        ("monitoring.max_quality", cfg.monitoring.max_quality, True),
    ]
    for key, values, upper in sides:
        for name in values:
            if name not in allowed:
                raise KeyedError(
                    f"{key}.{name}", f"{name} is not a {cfg.task} metric; {cfg.task} has {', '.join(allowed)}"
                )
            if (name in LOWER_IS_BETTER) != upper:
                other = key.replace("max_", "min_") if upper else key.replace("min_", "max_")
                kind = "an error metric (lower is better)" if name in LOWER_IS_BETTER else "better when higher"
                raise KeyedError(f"{key}.{name}", f"{name} is {kind}: set its threshold under {other}")
    champion = cfg.gates.champion
    if champion.metric not in allowed:
        raise KeyedError(
            "gates.champion.metric",
            f"{champion.metric} is not a {cfg.task} metric; {cfg.task} has {', '.join(allowed)}",
        )
    if champion.metric in UNIT_METRICS and champion.tolerance > 1:
        raise KeyedError("gates.champion.tolerance", f"must be less than or equal to 1: {champion.metric} lies in 0-1")
    fairness = cfg.gates.fairness.metric
    if fairness not in FAIRNESS_METRICS[cfg.task]:
        raise KeyedError(
            "gates.fairness.metric",
            f"{fairness} does not apply to task {cfg.task}; use one of {', '.join(FAIRNESS_METRICS[cfg.task])}",
        )


class ModelConfig(_Strict):
    name: str = Field(
        description="Model name (lower-case words joined by single `_`, no `__`, not `model_config_errors*`); "
        "DAG ids and the registered model carry it."
    )
    description: str = Field(default="", max_length=2000, description="Shown in the DAG docs.")
    owner: str = Field(default="mlops", description="Airflow owner of the model's DAGs.")
    ingest_schedule: Literal["@daily", "0 0 * * *"] = Field(
        default="@daily",
        description="Schedule of the data DAG. Batches are daily partitions keyed by their date, so only a "
        "daily schedule at 00:00 UTC is accepted.",
    )
    source: SourceConfig = Field(description="Landing location.")
    entity: EntityConfig = Field(description="The entity the rows describe.")
    timestamp_column: str = Field(description="Event timestamp column (UTC).")
    task: Literal["binary", "multiclass", "regression"] = Field(
        default="binary",
        description="What the model predicts: `binary` (probability of `label.positive_class`), `multiclass` "
        "(a probability per `label.classes`, at least three) or `regression` (a number; the label must be "
        "numeric). Picks the metrics, gate directions, scoring outputs and fairness metrics.",
    )
    label: LabelConfig = Field(description="Label column and positive class.")
    features: FeaturesConfig = Field(description="Model input features.")
    sensitive_attributes: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Columns used for group fairness (stored, not used as inputs); never the key, timestamp or label.",
    )
    sensitive_groups: dict[str, SensitiveGroup] = Field(
        default_factory=dict,
        description="Per sensitive attribute: its type and optional bins (see below); attributes not listed "
        "are numeric when they are numeric features, else categorical, and never binned.",
    )
    data_quality: DataQualityConfig = Field(default_factory=DataQualityConfig, description="GX gate rules.")
    gates: GatesConfig = Field(default_factory=GatesConfig, description="Model gate thresholds.")
    training: TrainingConfig = Field(description="Training settings.")
    promotion: PromotionConfig = Field(default_factory=PromotionConfig, description="Promotion settings.")
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig, description="Drift monitoring.")
    retraining: RetrainingConfig = Field(default_factory=RetrainingConfig, description="Retraining guard rails.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_model_name(value)

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str) -> str:
        if not re.fullmatch(OWNER_PATTERN, value):
            raise ValueError(f"{value!r} must be a plain owner name (letters, digits, '_', '.', '@', '-')")
        return value

    @field_validator("timestamp_column")
    @classmethod
    def _column(cls, value: str) -> str:
        return check_column(value)

    @field_validator("sensitive_attributes")
    @classmethod
    def _sensitive(cls, value: list[str]) -> list[str]:
        return _columns(value, "sensitive attributes")

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        """A multiclass or regression config gets its task's gate metrics where it names none."""
        if not isinstance(data, dict) or data.get("task") not in TASK_DEFAULTS:
            return data
        gates = data.get("gates") or {}
        if not isinstance(gates, dict):
            return data
        gates = dict(gates)
        for section, defaults in TASK_DEFAULTS[str(data["task"])].items():
            current = gates.get(section) or {}
            if not isinstance(current, dict):
                continue
            fill = {"min_metrics": {}} if section == "quality" and "max_metrics" in current else defaults
            gates[section] = {**fill, **current}  # only maxima named: no binary minimum slips in
        promotion = data.get("promotion") or {}
        if isinstance(promotion, dict) and "strategy" not in promotion:
            promotion = {**promotion, "strategy": "immediate"}  # the live canary analysis judges binary only
        return {**data, "gates": gates, "promotion": promotion}

    @model_validator(mode="after")
    def _task_consistent(self) -> ModelConfig:
        check_task_label(self.task, self.label)
        family = get_family(self.training.estimator.family)
        wanted = "regressor" if self.task == "regression" else "classifier"
        if family.checked and family.kind != wanted:
            same = ", ".join(n for n, f in FAMILIES.items() if f.kind == wanted)
            raise KeyedError(
                "training.estimator.family",
                f"{self.training.estimator.family!r} is a {family.kind}; task {self.task} needs a {wanted} ({same})",
            )
        check_task_metrics(self)
        if self.task != "binary" and self.promotion.strategy == "canary":
            raise KeyedError(
                "promotion.strategy",
                f"canary rollouts judge binary models only for now; a {self.task} model uses `immediate`",
            )
        return self

    @model_validator(mode="after")
    def _columns_consistent(self) -> ModelConfig:
        reserved = {self.entity.join_key, self.timestamp_column, self.label.column}
        if len(reserved) != 3:
            raise ValueError("entity.join_key, timestamp_column and label.column must be different columns")
        clash = reserved & set(self.feature_columns)
        if clash:
            raise ValueError(f"key, timestamp or label columns listed as features: {sorted(clash)}")
        clash = reserved & set(self.sensitive_attributes)
        if clash:
            raise KeyedError(
                "sensitive_attributes",
                f"{sorted(clash)} is the entity key, timestamp or label column, not a group attribute",
            )
        unknown = set(self.data_quality.columns) - set(self.all_columns)
        if unknown:
            raise ValueError(f"data_quality.columns names columns the model does not have: {sorted(unknown)}")
        self._check_sensitive_groups()
        self._check_missing_policies()
        numeric = set(self.numeric_columns) | ({self.entity.join_key} if self.entity.dtype == "int64" else set())
        if self.task == "regression":
            numeric.add(self.label.column)
        categorical = set(self.features.categorical) | (set(self.sensitive_attributes) - set(self.numeric_columns))
        for column, rule in self.data_quality.columns.items():
            if (rule.min is not None or rule.max is not None) and column not in numeric:
                bound = "min" if rule.min is not None else "max"
                raise KeyedError(
                    f"data_quality.columns.{column}.{bound}",
                    f"'{column}' is not a numeric column: min/max apply to numeric features only",
                )
            if rule.allowed is not None and column not in categorical:
                where = "use label.classes" if column == self.label.column else "allowed applies to categorical columns"
                raise KeyedError(
                    f"data_quality.columns.{column}.allowed", f"'{column}' is not a categorical column: {where}"
                )
        return self

    def _check_sensitive_groups(self) -> None:
        for column, group in self.sensitive_groups.items():
            where = f"sensitive_groups.{column}"
            if column not in self.sensitive_attributes:
                raise KeyedError(where, f"'{column}' is not listed in sensitive_attributes")
            if group.type == "categorical" and column in self.features.numeric:
                raise KeyedError(f"{where}.type", f"'{column}' is a numeric feature; it cannot be read as categorical")
            if group.type == "numeric" and column in self.features.categorical:
                raise KeyedError(f"{where}.type", f"'{column}' is a categorical feature; it cannot be read as numeric")
            if (group.edges or group.quantiles) and column not in self.numeric_columns:
                raise KeyedError(where, f"'{column}' is categorical: set `type: numeric` to bin it")

    def _check_missing_policies(self) -> None:
        features = set(self.feature_columns)
        for column, rule in self.data_quality.columns.items():
            where = f"data_quality.columns.{column}"
            if rule.missing == "impute" and column not in features:
                raise KeyedError(f"{where}.missing", f"'{column}' is not a model feature: only features are imputed")
            strategy = rule.impute_strategy
            if strategy == "mean" and column not in self.features.numeric:
                raise KeyedError(
                    f"{where}.impute_strategy", f"'{column}' is categorical: use most_frequent or constant"
                )
            if strategy == "constant" and column in self.features.numeric and isinstance(rule.fill_value, str):
                raise KeyedError(f"{where}.fill_value", f"'{column}' is numeric: fill it with a number")

    def impute_strategy(self, column: str) -> tuple[str, Any]:
        """How training fills ``column``'s nulls: ``(strategy, fill_value)`` from its missing-value policy."""
        rule = self.data_quality.columns.get(column)
        default = "median" if column in self.features.numeric else "most_frequent"
        if rule is None or rule.impute_strategy is None:
            return default, None
        return rule.impute_strategy, rule.fill_value

    @property
    def numeric_columns(self) -> list[str]:
        """Stored columns read as numbers: numeric features plus sensitive attributes typed numeric."""
        extra = [
            c
            for c, g in self.sensitive_groups.items()
            if c not in self.features.numeric and (g.type == "numeric" or (g.type is None and (g.edges or g.quantiles)))
        ]
        return [*self.features.numeric, *extra]

    @property
    def feature_columns(self) -> list[str]:
        return [*self.features.numeric, *self.features.categorical]

    @property
    def stored_columns(self) -> list[str]:
        """Columns kept in the feature view: model inputs plus sensitive attributes."""
        extra = [c for c in self.sensitive_attributes if c not in self.feature_columns]
        return [*self.feature_columns, *extra]

    @property
    def all_columns(self) -> list[str]:
        return [self.entity.join_key, self.timestamp_column, *self.stored_columns, self.label.column]

    @property
    def feature_service(self) -> str:
        return f"{self.name}_v{self.features.version}"

    @property
    def feature_view(self) -> str:
        return f"{self.name}_features"

    @property
    def registered_model(self) -> str:
        return self.name

    @property
    def gx_suite(self) -> str:
        return f"{self.name}_batch_suite"


class ConfigError(ValueError):
    """A model config file is malformed. The message names the file, the key and the problem."""


@dataclass(frozen=True)
class LoadedConfig:
    path: Path
    config: ModelConfig
    config_hash: str


class _DataLoader(yaml.SafeLoader):
    """Safe YAML that also refuses aliases (a few lines could expand to gigabytes) and duplicate keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (*name) are not accepted in a model config", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable: SafeLoader reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


_YAML_TRUE_FALSE = {"true", "false"}


def _plain_bool(loader: _DataLoader, node: Any) -> bool:
    """Only ``true``/``false`` are booleans: YAML 1.1's ``yes``/``no``/``on``/``off`` are refused, since a
    churn table's unquoted ``positive_class: Yes`` would otherwise become ``True`` and match nothing."""
    text = str(node.value)
    if text.lower() not in _YAML_TRUE_FALSE:
        reading = "true" if text.lower() in ("yes", "y", "on") else "false"
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"unquoted {text!r} is read by YAML as the boolean {reading}: quote it ('{text}') if it is a "
            f"text value (a label class or a category), or write {reading} for a boolean",
            node.start_mark,
        )
    return text.lower() == "true"


_DataLoader.add_constructor("tag:yaml.org,2002:bool", _plain_bool)


def _format_loc(loc: Iterable[int | str]) -> str:
    return ".".join(str(p) for p in loc if p != "") or "<root>"


def _problem(error: Any) -> str:
    """One pydantic error as ``key '<dotted key>': <message>`` (a KeyedError adds its own sub-key)."""
    loc = list(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, KeyedError) and cause.key:
        loc.extend(cause.key.split("."))
    return f"key '{_format_loc(loc)}': {error['msg']}"


def parse_config(path: Path, data: Any) -> ModelConfig:
    """Validate already-parsed YAML ``data`` as the config in ``path``; raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: key '<root>': expected a mapping of settings, got {type(data).__name__}")
    try:
        config = ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "; ".join(_problem(e) for e in exc.errors())) from None
    except (ValueError, TypeError, RecursionError) as exc:  # a validator's own bug must still name the file
        raise ConfigError(f"{path}: key '<root>': {exc}") from None
    if config.name != path.stem:
        raise ConfigError(f"{path}: key 'name': '{config.name}' must match the file name '{path.stem}'")
    return config


def parse_text(path: Path, text: str) -> ModelConfig:
    """Validate YAML ``text`` as the config file ``path`` would be (same YAML rules); raise ConfigError."""
    try:
        data = yaml.load(text, Loader=_DataLoader)  # a SafeLoader subclass
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {' '.join(str(exc).split())}") from None
    return parse_config(path, data)


def load_config(path: Path) -> LoadedConfig:
    """Parse and validate one model config; raise ConfigError naming file, key and problem."""
    try:
        raw = path.read_bytes()
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigError(
                f"{path}: key '<root>': file is {len(raw)} bytes; a model config is at most {MAX_FILE_BYTES}"
            )
        data = yaml.load(raw.decode("utf-8"), Loader=_DataLoader)  # a SafeLoader subclass
    except ConfigError:
        raise
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {' '.join(str(exc).split())}") from None
    config = parse_config(path, data)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return LoadedConfig(path=path, config=config, config_hash=digest)


def _landing_overlap(a: str, b: str) -> bool:
    """True when one landing path is the other or lies inside it (either model would list the other's files)."""
    pa, pb = a.casefold().split("/"), b.casefold().split("/")
    shorter = min(len(pa), len(pb))
    return pa[:shorter] == pb[:shorter]


def cross_model_errors(configs: list[LoadedConfig]) -> dict[Path, list[str]]:
    """Conflicts between models: one Feast entity defined two ways, one landing path or feature view shared.

    Every file in a conflict is refused (neither may run on data or Feast objects the other also claims);
    each message names both files.
    """
    problems: dict[Path, list[str]] = {}

    def conflict(a: LoadedConfig, b: LoadedConfig, key: str, what: str) -> None:
        problems.setdefault(a.path, []).append(f"key '{key}': {what} (also in {b.path})")
        problems.setdefault(b.path, []).append(f"key '{key}': {what} (also in {a.path})")

    for i, a in enumerate(configs):
        for b in configs[i + 1 :]:
            ca, cb = a.config, b.config
            if ca.entity.name == cb.entity.name and (ca.entity.join_key, ca.entity.dtype) != (
                cb.entity.join_key,
                cb.entity.dtype,
            ):
                conflict(
                    a,
                    b,
                    "entity.name",
                    f"Feast entity '{ca.entity.name}' is defined with join key '{ca.entity.join_key}' "
                    f"({ca.entity.dtype}) in {a.path} and '{cb.entity.join_key}' ({cb.entity.dtype}) in {b.path}; "
                    "use the same key and type or another entity name",
                )
            if _landing_overlap(ca.source.landing, cb.source.landing):
                conflict(
                    a,
                    b,
                    "source.landing",
                    f"landing paths '{ca.source.landing}' and '{cb.source.landing}' overlap: each model would "
                    "ingest the other's batches; give every model its own folder",
                )
            if ca.feature_view == cb.feature_view:
                conflict(a, b, "name", f"both define the Feast feature view '{ca.feature_view}'")
    return problems


def discover(models_dir: Path) -> tuple[list[LoadedConfig], list[ConfigError]]:
    """Load every ``*.yaml`` in the folder; return the good ones and the errors, never raising."""
    good: list[LoadedConfig] = []
    bad: list[ConfigError] = []
    for path in sorted(models_dir.glob("*.yaml")):
        try:
            good.append(load_config(path))
        except ConfigError as exc:
            bad.append(exc)
    conflicts = cross_model_errors(good)
    bad.extend(ConfigError(f"{path}: " + "; ".join(messages)) for path, messages in conflicts.items())
    return [c for c in good if c.path not in conflicts], bad


def check_estimator_overrides(cfg: ModelConfig, overrides: Any) -> dict[str, Any]:
    """A run's ``estimator_params`` merged over the config's, checked exactly as the loader checks params.

    Raises ConfigError with one line naming the bad key; returns the merged params.
    """
    if not isinstance(overrides, dict):
        kind = type(overrides).__name__
        raise ConfigError(f"estimator_params: expected a JSON object of parameter overrides, got {kind}")
    try:
        return check_params(cfg.training.estimator.family, {**cfg.training.estimator.params, **overrides})
    except EstimatorParamError as exc:
        raise ConfigError(f"estimator_params: key '{exc.key or 'params'}': {exc}") from None


def get_config(name: str, models_dir: Path | None = None) -> LoadedConfig:
    """Load the config of one model by name (inside tasks)."""
    if models_dir is None:
        from mlops.core.settings import get_settings

        models_dir = get_settings().models_dir
    path = models_dir / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"{path}: no config for model '{name}'")
    return load_config(path)


def reference_markdown() -> str:
    """The config reference table, generated from the schema (kept in the README)."""
    rows: list[str] = ["| key | type | default | meaning |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{field.alias or name}"
            annotation = field.annotation
            nested = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            if field.is_required():
                default = "required"
            elif field.default_factory is not None:
                default = "see below" if nested else f"`{json.dumps(field.default_factory())}`"  # type: ignore[call-arg]
            else:
                default = f"`{json.dumps(field.default)}`"
            plain = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
            spelled = re.sub(r"\b(?:[A-Za-z_]+\.)+([A-Za-z_]\w*)", r"\1", str(annotation))
            spelled = re.sub(r"Annotated\[(\w+), Strict\(strict=True\)\]", r"\1", spelled)
            spelled = re.sub(r"Union\[([^\[\]]*)\]", lambda m: m[1].replace(", ", " | "), spelled)
            type_name = "mapping" if nested else (plain or spelled)
            type_name = type_name.replace("|", "\\|")
            meaning = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{key}` | {type_name} | {default} | {meaning} |")
            if nested:
                walk(nested, f"{key}.")
            if key == "data_quality.columns":
                walk(ColumnRule, "data_quality.columns.<column>.")
            if key == "sensitive_groups":
                walk(SensitiveGroup, "sensitive_groups.<column>.")

    walk(ModelConfig, "")
    return "\n".join(rows)


def check(models_dir: Path) -> list[str]:
    """Every problem of every model config in the folder (cross-model conflicts included); [] when clean."""
    if not models_dir.is_dir():
        return [f"{models_dir}: not a folder of model configs"]
    configs, errors = discover(models_dir)
    if not configs and not errors:
        return [f"{models_dir}: no *.yaml model configs"]
    return [str(e) for e in errors]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mlops.core.config", description="Model config tools.")
    parser.add_argument("--markdown", action="store_true", help="print the config reference table")
    parser.add_argument("--check", action="store_true", help="validate every model config; exit 1 on any problem")
    parser.add_argument("models_dir", nargs="?", type=Path, help="folder of model YAMLs (default: MLOPS_MODELS_DIR)")
    args = parser.parse_args(argv)
    if args.markdown:
        print(reference_markdown())
        return 0
    if not args.check:
        parser.print_usage(sys.stderr)
        return 2
    if args.models_dir is None:
        from mlops.core.settings import get_settings

        args.models_dir = get_settings().models_dir
    problems = check(args.models_dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} model config problem(s) in {args.models_dir}", file=sys.stderr)
        return 1
    print(f"model configs in {args.models_dir}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
