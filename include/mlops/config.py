"""Model pipelines are configuration: one YAML file per model in ``include/models/``.

The schema below is the single source of truth for every key; ``python -m mlops.config --markdown``
prints the reference table that the README carries. Loading is cheap (YAML + pydantic, no I/O beyond
the file) because DAG files call it at parse time to generate one set of DAGs per model.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9_]{1,40}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    landing: str = Field(
        description="Where new batch files land: a path relative to the environment's landing root, "
        "an absolute path, or an `s3://bucket/prefix`. Files are named `YYYY-MM-DD*.csv|parquet`; the "
        "date is the batch's data interval."
    )
    formats: list[Literal["csv", "parquet"]] = Field(
        default=["csv", "parquet"], description="File formats accepted from the landing location."
    )
    ready_flag: str | None = Field(
        default="_READY",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="File the producer writes into a local landing folder after landing batches. An Airflow "
        "AssetWatcher in the triggerer deletes it and starts `<model>__landing`, which ingests, validates and "
        "materializes every newly landed batch at once. null: no watcher (an `s3://` landing location has "
        "none either; the daily data DAG still runs).",
    )


class EntityConfig(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Feast entity name.")
    join_key: str = Field(description="Column that identifies the entity (the Feast join key).")
    dtype: Literal["int64", "string"] = Field(default="int64", description="Type of the join key.")


class LabelConfig(_Strict):
    column: str = Field(description="Label column in each batch.")
    positive_class: int | str = Field(description="Value of the label that counts as the positive class.")
    classes: list[int | str] | None = Field(
        default=None,
        description="Every value the label may take (a GX expectation: a batch with any other value is "
        "quarantined). Must hold `positive_class`. Default for an integer `positive_class`: `[0, 1]`; a string "
        "`positive_class` needs the list.",
    )

    @property
    def allowed_values(self) -> list[int | str]:
        """The label values a batch may contain (the config's ``classes``, or ``[0, 1]`` for integer labels)."""
        if self.classes is not None:
            return list(self.classes)
        if isinstance(self.positive_class, int):
            return [0, 1]
        raise ValueError("label.classes is required when label.positive_class is a string")


class FeaturesConfig(_Strict):
    version: int = Field(default=1, ge=1, description="Version of the feature service (`<model>_v<version>`).")
    ttl_days: int = Field(default=365, ge=1, description="Feast feature view TTL in days.")
    numeric: list[str] = Field(default_factory=list, description="Numeric feature columns.")
    categorical: list[str] = Field(default_factory=list, description="Categorical (string) feature columns.")

    @model_validator(mode="after")
    def _some_features(self) -> FeaturesConfig:
        if not self.numeric and not self.categorical:
            raise ValueError("at least one numeric or categorical feature is required")
        overlap = set(self.numeric) & set(self.categorical)
        if overlap:
            raise ValueError(f"columns listed as both numeric and categorical: {sorted(overlap)}")
        return self


class ColumnRule(_Strict):
    min: float | None = Field(default=None, description="Smallest allowed value.")
    max: float | None = Field(default=None, description="Largest allowed value.")
    allowed: list[str] | None = Field(default=None, description="Allowed categories.")
    max_null_fraction: float | None = Field(
        default=None, ge=0, le=1, description="Override of the batch-wide null budget for this column."
    )
    mostly: float = Field(default=1.0, gt=0, le=1, description="Fraction of rows that must satisfy min/max/allowed.")


class DataQualityConfig(_Strict):
    min_rows: int = Field(default=1, ge=1, description="Fewest rows a batch may have.")
    max_rows: int = Field(default=10_000_000, ge=1, description="Most rows a batch may have.")
    max_file_mb: float = Field(
        default=512,
        gt=0,
        description="Largest landed file, in MiB, checked before it is read (a bigger one is quarantined unread).",
    )
    max_day_mb: float = Field(
        default=2048,
        gt=0,
        description="Largest total size of one day's landed files, in MiB, checked before any of them is read.",
    )
    max_null_fraction: float = Field(
        default=0.0, ge=0, le=1, description="Largest fraction of nulls allowed in any expected column."
    )
    freshness_max_age_hours: float = Field(
        default=48, gt=0, description="Event timestamps must be no older than this before the interval start."
    )
    columns: dict[str, ColumnRule] = Field(default_factory=dict, description="Per-column rules.")


class DriftGate(_Strict):
    max_drifted_share: float = Field(
        default=0.5, ge=0, le=1, description="Largest share of features allowed to drift (Evidently)."
    )


class QualityGate(_Strict):
    min_metrics: dict[Literal["roc_auc", "accuracy", "f1", "precision", "recall"], float] = Field(
        default_factory=lambda: {"roc_auc": 0.6},  # type: ignore[arg-type,dict-item]
        description="Lowest acceptable value of each holdout metric.",
    )


class FairnessGate(_Strict):
    metric: Literal["selection_rate", "true_positive_rate", "false_positive_rate", "accuracy"] = Field(
        default="selection_rate", description="Metric compared across groups (fairlearn MetricFrame)."
    )
    max_disparity: float = Field(
        default=0.2, ge=0, le=1, description="Largest allowed difference between groups' metric values."
    )
    min_group_size: int = Field(
        default=20, ge=1, description="Groups with fewer holdout rows are reported but not gated."
    )


class ChampionGate(_Strict):
    metric: Literal["roc_auc", "accuracy", "f1"] = Field(default="roc_auc", description="Comparison metric.")
    tolerance: float = Field(default=0.01, ge=0, description="How much worse than the champion the challenger may be.")


class GatesConfig(_Strict):
    drift: DriftGate = Field(default_factory=DriftGate, description="Data drift gate.")
    quality: QualityGate = Field(default_factory=QualityGate, description="Holdout quality gate.")
    fairness: FairnessGate = Field(default_factory=FairnessGate, description="Group fairness gate.")
    champion: ChampionGate = Field(default_factory=ChampionGate, description="Challenger vs champion gate.")


class EstimatorConfig(_Strict):
    class_path: str = Field(
        alias="class",
        description="Import path of a scikit-learn compatible classifier, e.g. `xgboost.XGBClassifier`.",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Constructor arguments.")

    @field_validator("class_path")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w.]*\.[A-Za-z_]\w*", value):
            raise ValueError("must be a dotted import path like 'sklearn.linear_model.LogisticRegression'")
        return value


class ResourcesConfig(_Strict):
    cpu: str = Field(default="2", description="CPU request/limit of the training pod.")
    memory: str = Field(default="4Gi", description="Memory request/limit of the training pod.")
    gpu: int = Field(default=0, ge=0, le=8, description="`nvidia.com/gpu` limit of the training pod.")
    image: str | None = Field(default=None, description="Training image; defaults to MLOPS_TRAINING_IMAGE.")


class TrainingConfig(_Strict):
    window_days: int = Field(default=30, ge=1, description="Days of data in the default training window.")
    holdout_days: int = Field(default=2, ge=1, description="Most recent days of the window held out for gates.")
    estimator: EstimatorConfig = Field(description="The classifier to train.")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="Pod resources.")
    schedule: str | None = Field(default="0 3 * * 0", description="Cron for scheduled retraining, or null.")
    timeout_minutes: int = Field(
        default=240,
        ge=5,
        le=2880,
        description="Longest a training may run (local process group killed, pod deadline); then it is "
        "ended as an infrastructure failure and retried.",
    )


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
        "scores above which prediction drift also emits a drift event.",
    )
    min_quality: dict[Literal["roc_auc", "accuracy", "f1", "precision", "recall"], float] = Field(
        default_factory=dict,
        description="Hard guardrails on labelled scored batches: below any of them the circuit breaker "
        "rolls the champion back.",
    )
    min_rows_for_quality: int = Field(
        default=50,
        ge=1,
        description="Fewest labelled rows before quality is judged (and the breaker may fire).",
    )


class RetrainingConfig(_Strict):
    cooldown_minutes: float = Field(
        default=60,
        ge=0,
        description="An event-triggered retrain (drift or new labels) within this many minutes of the last "
        "one is skipped.",
    )
    on_new_labels: bool = Field(
        default=False,
        description="Also retrain when `<model>__landing` has validated newly landed labelled batches (the "
        "`<model>.labels` Asset), not only on drift and on the cron.",
    )


class PromotionConfig(_Strict):
    require_approval: bool = Field(
        default=False, description="Wait for a person's approval in Airflow before `champion` moves."
    )


class ModelConfig(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Model name; DAG ids and the registered model carry it.")
    description: str = Field(default="", description="Shown in the DAG docs.")
    owner: str = Field(default="mlops", description="Airflow owner of the model's DAGs.")
    ingest_schedule: Literal["@daily", "0 0 * * *"] = Field(
        default="@daily",
        description="Schedule of the data DAG. Batches are daily partitions keyed by their date, so only a "
        "daily schedule at 00:00 UTC is accepted.",
    )
    source: SourceConfig = Field(description="Landing location.")
    entity: EntityConfig = Field(description="The entity the rows describe.")
    timestamp_column: str = Field(description="Event timestamp column (UTC).")
    label: LabelConfig = Field(description="Label column and positive class.")
    features: FeaturesConfig = Field(description="Model input features.")
    sensitive_attributes: list[str] = Field(
        default_factory=list, description="Columns used for group fairness (stored, not used as inputs)."
    )
    data_quality: DataQualityConfig = Field(default_factory=DataQualityConfig, description="GX gate rules.")
    gates: GatesConfig = Field(default_factory=GatesConfig, description="Model gate thresholds.")
    training: TrainingConfig = Field(description="Training settings.")
    promotion: PromotionConfig = Field(default_factory=PromotionConfig, description="Promotion settings.")
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig, description="Drift monitoring.")
    retraining: RetrainingConfig = Field(default_factory=RetrainingConfig, description="Retraining guard rails.")

    @model_validator(mode="after")
    def _columns_consistent(self) -> ModelConfig:
        reserved = {self.entity.join_key, self.timestamp_column, self.label.column}
        if len(reserved) != 3:
            raise ValueError("entity.join_key, timestamp_column and label.column must be different columns")
        clash = reserved & set(self.feature_columns)
        if clash:
            raise ValueError(f"key, timestamp or label columns listed as features: {sorted(clash)}")
        unknown = set(self.data_quality.columns) - set(self.all_columns)
        if unknown:
            raise ValueError(f"data_quality.columns names columns the model does not have: {sorted(unknown)}")
        return self

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


def _format_loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def load_config(path: Path) -> LoadedConfig:
    """Parse and validate one model config; raise ConfigError naming file, key and problem."""
    try:
        raw_text = path.read_text()
        data = yaml.safe_load(raw_text)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: key '<root>': expected a mapping of settings, got {type(data).__name__}")
    try:
        config = ModelConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"key '{_format_loc(e['loc'])}': {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc
    if config.name != path.stem:
        raise ConfigError(f"{path}: key 'name': '{config.name}' must match the file name '{path.stem}'")
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return LoadedConfig(path=path, config=config, config_hash=digest)


def discover(models_dir: Path) -> tuple[list[LoadedConfig], list[ConfigError]]:
    """Load every ``*.yaml`` in the folder; return the good ones and the errors, never raising."""
    good: list[LoadedConfig] = []
    bad: list[ConfigError] = []
    for path in sorted(models_dir.glob("*.yaml")):
        try:
            good.append(load_config(path))
        except ConfigError as exc:
            bad.append(exc)
    return good, bad


def get_config(name: str, models_dir: Path | None = None) -> LoadedConfig:
    """Load the config of one model by name (inside tasks)."""
    if models_dir is None:
        from mlops.settings import get_settings

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
            type_name = "mapping" if nested else (plain or spelled)
            type_name = type_name.replace("|", "\\|")
            meaning = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{key}` | {type_name} | {default} | {meaning} |")
            if nested:
                walk(nested, f"{key}.")
            if key == "data_quality.columns":
                walk(ColumnRule, "data_quality.columns.<column>.")

    walk(ModelConfig, "")
    return "\n".join(rows)


if __name__ == "__main__":
    if "--markdown" in sys.argv:
        print(reference_markdown())
