"""The blocking data-quality gate: read one landed batch, type it, and check it with Great Expectations.

Every rule comes from the model config (``data_quality`` plus the column lists), so a new model gets its
gate without code. Bad data never raises here: an unreadable file is a ``BatchReadError`` with one
readable line, and every other problem (missing column, wrong type, nulls, ranges, categories, row
count, duplicate entity+timestamp, stale timestamps) comes back as a failed expectation in a
``ValidationOutcome``, including expectations that GX could not evaluate.

Design decisions:

* Types are checked, not coerced. Numeric columns are left as read, so a CSV column holding ``abc``
  stays ``object`` and fails ``expect_column_values_to_be_in_type_list`` with a line naming the column
  and the unparsable values; ``pd.to_numeric(errors="coerce")`` would have hidden it as nulls.
  ``coerce_types`` only normalises representations (nullable/narrow numeric dtypes to 64-bit numpy,
  string/category dtypes to ``object``) and parses the timestamp column to UTC, where unparsable
  values become NaT and fail the timestamp's not-null expectation.
* The label must be one of ``label.allowed_values`` (an expectation; the failure line names the bad
  values) and is never null whatever the null budget: an unknown or missing label would otherwise
  become the negative class in training. ``coerce_types`` only turns integer labels written as text
  (``"1"``, ``"1.0"``) into integers and leaves every other value as it is, for the gate to name. The
  timestamp has no type rule because ``coerce_types`` parsed it, so its problems show up as nulls or
  freshness failures.
* Extra columns are allowed (``exact_match=False``): producers may add columns without breaking the
  gate; the pipeline only reads the columns in the config. Missing columns fail the schema rule.
* GX is called directly (the Airflow GX provider does not install next to Airflow 3) and imported
  lazily, so DAG files that import this module parse fast.
* The suite is rebuilt from the config on every run (the freshness window depends on the interval)
  and stored in a file-mode context under ``gx_root``; a file lock serialises runs that share the
  root so two batches cannot overwrite each other's suite between saving and running it.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import pandas as pd

from mlops.core.config import ModelConfig
from mlops.core.lake import parse_dt
from mlops.core.locks import file_lock

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite

_DATASOURCE = "mlops_batches"
_BATCH_DEFINITION = "whole_batch"
_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 10}
_SUMMARY_MAX_CHARS = 400
_SAMPLES = 5

# Type names as GX's pandas implementation of expect_column_values_to_be_in_type_list resolves them:
# numpy dtype names match the column dtype, "int"/"float"/"str" match values of object columns.
INTEGER_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype", "UInt8Dtype", "UInt16Dtype", "UInt32Dtype",
    "UInt64Dtype", "int",
]  # fmt: skip
NUMERIC_TYPES = [*INTEGER_TYPES, "float16", "float32", "float64", "Float32Dtype", "Float64Dtype", "float"]
STRING_TYPES = ["str", "StringDtype"]


class BatchReadError(ValueError):
    """A landed file cannot be read as a table; the message is one line naming the file and problem."""


# ----------------------------------------------------------------------------------------- reading


def read_batch(data: bytes, fmt: str, *, name: str, cfg: ModelConfig | None = None) -> pd.DataFrame:
    """Parse a landed file; raise BatchReadError for anything that is not a readable table.

    A header-only CSV is readable (0 rows) so the row-count rule reports it. With ``cfg`` the CSV
    columns the model declares as strings are read as ``str``, so ids like ``00042`` keep their zeros.
    """
    if fmt not in ("csv", "parquet"):
        raise BatchReadError(f"{name}: unsupported format '{fmt}' (expected csv or parquet)")
    if not data:
        raise BatchReadError(f"{name}: empty file (0 bytes)")
    try:
        if fmt == "csv":
            dtypes = dict.fromkeys(_string_columns(cfg), str) if cfg is not None else None
            frame = pd.read_csv(io.BytesIO(data), dtype=dtypes, low_memory=False)
        else:
            frame = pd.read_parquet(io.BytesIO(data))
    except pd.errors.EmptyDataError as exc:
        raise BatchReadError(f"{name}: empty file (no header row)") from exc
    except Exception as exc:  # pandas/pyarrow raise many types for corrupt input
        raise BatchReadError(f"{name}: cannot read {fmt}: {_one_line(exc)}") from exc
    if fmt == "csv":
        repeated = _repeated_header_names(data)
        if repeated:  # pandas renames them (age, age.1): which one is right cannot be known
            raise BatchReadError(f"{name}: duplicate columns in the header: {', '.join(repeated)}")
    return frame


def _repeated_header_names(data: bytes) -> list[str]:
    """Column names that appear more than once in a CSV header row (pandas would rename them)."""
    import csv

    first = data.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace")
    try:
        names = next(csv.reader([first]), [])
    except csv.Error:
        return []
    from collections import Counter

    return sorted(n for n, count in Counter(names).items() if count > 1)


def _string_columns(cfg: ModelConfig) -> list[str]:
    """Columns whose values the model treats as strings."""
    columns = [*cfg.features.categorical, *cfg.sensitive_attributes]
    if cfg.entity.dtype == "string":
        columns.append(cfg.entity.join_key)
    if cfg.task != "regression" and all(isinstance(c, str) for c in cfg.label.allowed_values):
        columns.append(cfg.label.column)
    return [c for c in dict.fromkeys(columns) if c not in cfg.numeric_columns]


def _numeric_columns(cfg: ModelConfig) -> list[str]:
    extra = [cfg.entity.join_key] if cfg.entity.dtype == "int64" else []
    label = [cfg.label.column] if cfg.task == "regression" else []  # a regression label is a number
    return [*extra, *cfg.numeric_columns, *label]


def _expected_type(cfg: ModelConfig, column: str) -> str | None:
    """The type family a column must have; None for the timestamp (parsed) and the label (any type)."""
    if column == cfg.label.column:
        return "numeric" if cfg.task == "regression" else None
    if column == cfg.entity.join_key:
        return "integer" if cfg.entity.dtype == "int64" else "string"
    if column in cfg.numeric_columns:
        return "numeric"
    if column in _string_columns(cfg):
        return "string"
    return None


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------------------- typing


def coerce_types(df: pd.DataFrame, cfg: ModelConfig) -> pd.DataFrame:
    """Parse the timestamp to UTC and normalise dtypes, without hiding type errors (see module doc).

    Idempotent; returns a new frame and leaves ``df`` untouched.
    """
    out = df.copy(deep=False)
    out.columns = [str(c) for c in out.columns]
    duplicated = sorted(set(out.columns[out.columns.duplicated()]))
    if duplicated:
        raise BatchReadError(f"batch has duplicate columns: {', '.join(duplicated)}")
    if cfg.timestamp_column in out.columns:
        out[cfg.timestamp_column] = _to_utc(out[cfg.timestamp_column])
    for column in _numeric_columns(cfg):
        if column in out.columns:
            out[column] = _normalise_numeric(out[column])
    for column in _string_columns(cfg):
        if column in out.columns:
            out[column] = _normalise_string(out[column])
    if cfg.label.column in out.columns and cfg.task != "regression":
        out[cfg.label.column] = _normalise_label(out[cfg.label.column], cfg)
    return out


_INTEGER_TEXT = re.compile(r"^\s*[+-]?\d+(\.0*)?\s*$")


def _normalise_label(series: pd.Series, cfg: ModelConfig) -> pd.Series:
    """Integer classes written as text or floats become ints; nothing else changes (the gate names it).

    Never maps an unknown value to a class: ``"yes"``, ``2`` or ``0.5`` stay as they are and fail the
    label's allowed-values expectation.
    """
    allowed = cfg.label.allowed_values
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in allowed):
        return series
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return series.astype(object)  # True/False are not the classes 1/0: left for the gate to name
    if pd.api.types.is_integer_dtype(dtype):
        return _normalise_numeric(series)

    def as_class(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INTEGER_TEXT.match(value):
            return int(float(value))
        return value

    mapped = series.map(as_class, na_action="ignore").astype(object)
    if mapped.notna().all() and all(isinstance(v, int) and not isinstance(v, bool) for v in mapped):
        with suppress(OverflowError, ValueError):
            return mapped.astype("int64")
    return mapped.where(mapped.notna(), None)


def _to_utc(series: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC; values that are not datetimes or ISO-8601 strings become NaT."""
    try:
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            return series.dt.tz_convert("UTC")
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            return series.dt.tz_localize("UTC")
        if pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
            # Epoch numbers are ambiguous (s? ms?); refuse them rather than guess.
            return pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns, UTC]")
        return pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601")
    except (TypeError, ValueError, OverflowError, AttributeError):
        return pd.to_datetime(series.astype("string"), utc=True, errors="coerce", format="ISO8601")


def _normalise_numeric(series: pd.Series) -> pd.Series:
    """Nullable and narrow numeric dtypes become int64/float64: GX vectorises only those, and treats
    ``pd.NA`` in a range check as a failing value instead of a null."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
        return series  # strings, objects, booleans: left for the type expectation to judge
    if pd.api.types.is_integer_dtype(dtype) and not series.isna().any():
        if dtype == "uint64" and len(series) and series.max() > 2**63 - 1:
            return series
        return series.astype("int64") if dtype != "int64" else series
    if dtype == "float64":
        return series
    return pd.Series(series.to_numpy(dtype="float64", na_value=float("nan")), index=series.index)


def _normalise_string(series: pd.Series) -> pd.Series:
    """String and category extension dtypes become object columns of ``str``, as GX type checks expect."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype | pd.StringDtype):
        return series.astype(object).where(series.notna(), None)
    if isinstance(dtype, pd.ArrowDtype) and pd.api.types.is_string_dtype(dtype):
        return series.astype(object).where(series.notna(), None)
    return series


# ----------------------------------------------------------------------------------------- suite


def null_budget(cfg: ModelConfig, column: str) -> float:
    """The largest fraction of nulls the gate lets through in ``column`` (its missing-value policy):
    the column's ``max_null_fraction``, else 1 for ``missing: impute`` (training fills every null) and
    the batch-wide ``data_quality.max_null_fraction`` for ``missing: reject``."""
    rule = cfg.data_quality.columns.get(column)
    if rule is not None and rule.max_null_fraction is not None:
        return rule.max_null_fraction
    if rule is not None and rule.missing == "impute":
        return 1.0
    return cfg.data_quality.max_null_fraction


def _gx() -> Any:
    """Import GX on first use (fast DAG parsing); analytics are switched off per context, in memory."""
    import great_expectations

    return great_expectations


def freshness_window(cfg: ModelConfig, interval_start: datetime, interval_end: datetime) -> tuple[datetime, datetime]:
    """Event timestamps of a batch must fall in [interval start - max age, interval end]."""
    oldest = parse_dt(interval_start) - timedelta(hours=cfg.data_quality.freshness_max_age_hours)
    return oldest, parse_dt(interval_end)


def build_suite(cfg: ModelConfig, interval_start: datetime, interval_end: datetime) -> ExpectationSuite:
    """All rules of the model's config as one GX suite; ``meta.rule`` says which rule each one is."""
    gx = _gx()
    exp = gx.expectations
    dq = cfg.data_quality
    expectations: list[Any] = []

    def add(expectation: Any, rule: str, **meta: Any) -> None:
        expectation.meta = {"rule": rule, "order": len(expectations), **meta}
        expectations.append(expectation)

    add(exp.ExpectTableColumnsToMatchSet(column_set=list(cfg.all_columns), exact_match=False), "schema")
    add(exp.ExpectTableRowCountToBeBetween(min_value=dq.min_rows, max_value=dq.max_rows), "rows")

    for column in cfg.all_columns:
        rule = dq.columns.get(column)
        is_label = column == cfg.label.column
        if is_label:  # never null, never outside the classes, whatever the null budget
            add(exp.ExpectColumnValuesToNotBeNull(column=column), "nulls")
            if cfg.task != "regression":  # a regression label is typed numeric instead (below)
                in_set = exp.ExpectColumnValuesToBeInSet(column=column, value_set=list(cfg.label.allowed_values))
                add(in_set, "allowed", label=True)
        expected = _expected_type(cfg, column)
        if expected is not None:
            type_list = {"integer": INTEGER_TYPES, "numeric": NUMERIC_TYPES, "string": STRING_TYPES}[expected]
            add(
                exp.ExpectColumnValuesToBeInTypeList(column=column, type_list=type_list),
                "type",
                expected=expected,
            )

        budget = null_budget(cfg, column)
        if budget < 1 and not is_label:
            not_null = exp.ExpectColumnValuesToNotBeNull(column=column, mostly=round(1 - budget, 12))
            add(not_null, "nulls", timestamp=column == cfg.timestamp_column)

        if rule is not None and (rule.min is not None or rule.max is not None):
            between = exp.ExpectColumnValuesToBeBetween(
                column=column, min_value=rule.min, max_value=rule.max, mostly=rule.mostly
            )
            add(between, "range")
        if rule is not None and rule.allowed is not None:
            in_set = exp.ExpectColumnValuesToBeInSet(column=column, value_set=list(rule.allowed), mostly=rule.mostly)
            add(in_set, "allowed")

    key = [cfg.entity.join_key, cfg.timestamp_column]
    add(exp.ExpectCompoundColumnsToBeUnique(column_list=key), "unique")
    oldest, newest = freshness_window(cfg, interval_start, interval_end)
    fresh = exp.ExpectColumnValuesToBeBetween(column=cfg.timestamp_column, min_value=oldest, max_value=newest)
    add(fresh, "freshness")
    # Built in one go: ExpectationSuite.add_expectation needs an active Data Context.
    return gx.ExpectationSuite(
        name=cfg.gx_suite,
        expectations=expectations,
        meta={"model": cfg.name, "generated_by": "mlops.data.validate"},
    )


# ----------------------------------------------------------------------------------------- outcome


@dataclass(frozen=True)
class ExpectationRow:
    """One evaluated expectation, flattened for the failure lines and the HTML report."""

    column: str
    expectation: str
    description: str
    success: bool
    observed: str
    unexpected_count: int | None
    unexpected_percent: float | None
    element_count: int | None
    samples: list[str]
    error: str | None
    detail: str

    def failure_line(self) -> str:
        return f"{self.column}: {self.description} ({self.detail})"


@dataclass(frozen=True)
class ValidationOutcome:
    """What the gate decided for one batch, with evidence for people and machines."""

    success: bool
    failures: list[str]
    statistics: dict[str, Any]
    result: dict[str, Any]
    report_html: Path
    model: str = ""
    batch_id: str = ""
    interval_start: datetime | None = None
    interval_end: datetime | None = None
    data_docs_url: str | None = None
    rows: tuple[ExpectationRow, ...] = ()

    def summary_line(self) -> str:
        """One line for logs, task notes and alerts (about 400 characters at most)."""
        evaluated = self.statistics.get("evaluated_expectations", 0)
        failed = self.statistics.get("unsuccessful_expectations", len(self.failures))
        if self.success:
            text = (
                f"GX gate passed for {self.model} batch {self.batch_id}: all {evaluated} expectations met "
                f"on {self.statistics.get('row_count', '?')} rows"
            )
        else:
            text = (
                f"GX gate failed for {self.model} batch {self.batch_id}: {failed} of {evaluated} "
                f"expectations failed: " + "; ".join(self.failures)
            )
        text = " ".join(text.split())
        return text if len(text) <= _SUMMARY_MAX_CHARS else text[: _SUMMARY_MAX_CHARS - 1] + "…"


# ----------------------------------------------------------------------------------------- running


def _checkpoint(context: Any, cfg: ModelConfig, suite: ExpectationSuite) -> Any:
    """Get-or-add the datasource, asset and batch definition; replace the suite, definition and checkpoint."""
    gx = _gx()
    from great_expectations.checkpoint import UpdateDataDocsAction

    try:
        source = context.data_sources.get(_DATASOURCE)
    except LookupError:
        source = context.data_sources.add_pandas(_DATASOURCE)
    try:
        asset = source.get_asset(cfg.name)
    except LookupError:
        asset = source.add_dataframe_asset(cfg.name)
    try:
        batch = asset.get_batch_definition(_BATCH_DEFINITION)
    except LookupError:
        batch = asset.add_batch_definition_whole_dataframe(_BATCH_DEFINITION)
    # Replaced, never add_or_update'd: GX's add_or_update matches every new expectation against the
    # stored ones with a list.index of dict-normalising __eq__ calls (O(n^2); ~3 s of a 4 s run with
    # 110 expectations), and the suite changes with every interval anyway (freshness bounds). The
    # suite, then the validation definition, then the checkpoint, each stored before its parent.
    _replace(context.suites, suite.name)
    stored_suite = context.suites.add(suite)
    definition_name = f"{cfg.name}_batch_gate"
    _replace(context.checkpoints, f"{cfg.name}_batch_checkpoint")
    _replace(context.validation_definitions, definition_name)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=definition_name, data=batch, suite=stored_suite)
    )
    return context.checkpoints.add(
        gx.Checkpoint(
            name=f"{cfg.name}_batch_checkpoint",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs")],
            result_format=_RESULT_FORMAT,
        )
    )


def _replace(factory: Any, name: str) -> None:
    """Delete the named object of a GX factory if it exists (the caller adds the new one)."""
    from great_expectations.exceptions import DataContextError

    with suppress(DataContextError):
        factory.delete(name)


def _for_gx(frame: pd.DataFrame, cfg: ModelConfig) -> pd.DataFrame:
    """The expected columns in one consolidated copy.

    GX's pandas engine filters the whole frame (``df[mask]``, a full copy) for every column rule;
    unconsolidated blocks made that 2x slower, and extra columns (allowed anyway) only add copy cost.
    """
    expected = set(cfg.all_columns)
    return frame[[c for c in frame.columns if c in expected]].copy()


def _run_name(batch_id: str) -> str:
    """GX uses the run name as a folder of the Data Docs site."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", batch_id).strip("._")[:100] or "batch"


def _docs_url(context: Any, key: Any) -> str | None:
    try:
        sites = context.get_docs_sites_urls(resource_identifier=key)
    except Exception:  # the link is a convenience; never fail the gate over it
        return None
    urls = [site.get("site_url") for site in sites if site.get("site_url")]
    return str(urls[0]) if urls else None


def validate_batch(
    df: pd.DataFrame,
    cfg: ModelConfig,
    *,
    batch_id: str,
    interval_start: datetime,
    interval_end: datetime,
    gx_root: Path,
    report_path: Path,
) -> ValidationOutcome:
    """Run the model's suite on one batch, build Data Docs and our own HTML report; never raise on data."""
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    gx = _gx()
    frame = coerce_types(df, cfg)
    suite = build_suite(cfg, interval_start, interval_end)
    gx_root = Path(gx_root)
    gx_root.mkdir(parents=True, exist_ok=True)
    with file_lock(gx_root / ".mlops-gx.lock"):  # the stored suite is rewritten per run and checked on run
        context = gx.get_context(mode="file", project_root_dir=str(gx_root))
        context.variables.progress_bars = ProgressBarsConfig(globally=False)  # in memory only: quiet logs
        context.variables.analytics_enabled = False  # in memory only: no network from workers
        checkpoint = _checkpoint(context, cfg, suite)
        run_id = RunIdentifier(run_name=_run_name(batch_id), run_time=datetime.now(UTC))
        checkpoint_result = checkpoint.run(batch_parameters={"dataframe": _for_gx(frame, cfg)}, run_id=run_id)
        key, validation = next(iter(checkpoint_result.run_results.items()))
        docs_url = _docs_url(context, key)

    # GX returns results grouped by metric, not in suite order; people read table rules first.
    ordered = sorted(validation.results, key=lambda r: (r.expectation_config.meta or {}).get("order", 10**6))
    rows = tuple(_safe_row(r, frame) for r in ordered)
    success = bool(validation.success) and all(r.success for r in rows)
    statistics: dict[str, Any] = {
        **dict(validation.statistics),
        "unsuccessful_expectations": sum(not r.success for r in rows),
        "row_count": len(frame),
        "column_count": len(frame.columns),
        "extra_columns": [c for c in frame.columns if c not in set(cfg.all_columns)],
    }
    evaluated = len(rows)
    statistics["evaluated_expectations"] = evaluated
    statistics["successful_expectations"] = evaluated - statistics["unsuccessful_expectations"]
    statistics["success_percent"] = 100.0 * statistics["successful_expectations"] / evaluated if evaluated else 100.0
    outcome = ValidationOutcome(
        success=success,
        failures=[r.failure_line() for r in rows if not r.success],
        statistics=statistics,
        result=json.loads(json.dumps(validation.to_json_dict(), default=str)),
        report_html=Path(report_path),
        model=cfg.name,
        batch_id=batch_id,
        interval_start=parse_dt(interval_start),
        interval_end=parse_dt(interval_end),
        data_docs_url=docs_url,
        rows=rows,
    )
    _write_report(outcome)
    return outcome


# ----------------------------------------------------------------------------------------- describing


def _exception_message(info: Any) -> str | None:
    """GX reports errors flat or keyed by metric id; return the first message, if any."""
    if not isinstance(info, dict) or not info:
        return None
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for entry in entries:
        if entry.get("raised_exception"):
            return " ".join(str(entry.get("exception_message") or "error").split())[:200]
    return None


def _fmt_number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _fmt_percent(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g}%"


def _fmt_value(value: Any, *, compound: bool = False) -> str:
    if compound and isinstance(value, dict):  # compound-column samples come as {column: value}
        text = "(" + ", ".join(str(v) for v in value.values()) + ")"
    else:
        text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _describe(rule: str, kwargs: dict[str, Any], meta: dict[str, Any]) -> str:
    mostly = kwargs.get("mostly")
    share = f"at least {mostly:.4g} of " if isinstance(mostly, float | int) and mostly < 1 else ""
    if rule == "range":
        return _describe_range(kwargs, share)
    if rule == "nulls":
        return f"{share}values not null" if share else "no null values"
    texts: dict[str, Callable[[], str]] = {
        "schema": lambda: "has all expected columns",
        "rows": lambda: f"row count between {kwargs.get('min_value')} and {kwargs.get('max_value')}",
        "type": lambda: f"{meta.get('expected', 'expected')} type",
        "allowed": lambda: f"{share}values in [{', '.join(str(v) for v in kwargs.get('value_set') or [])}]",
        "unique": lambda: "no repeated entity and timestamp",
        "freshness": lambda: f"timestamps within {kwargs.get('min_value')} .. {kwargs.get('max_value')} (freshness)",
    }
    return texts.get(rule, lambda: str(kwargs))()


def _describe_range(kwargs: dict[str, Any], share: str) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is None:
        return f"{share}values at most {_fmt_number(high)}"
    if high is None:
        return f"{share}values at least {_fmt_number(low)}"
    return f"{share}values between {_fmt_number(low)} and {_fmt_number(high)}"


def _unparsable_numbers(series: pd.Series) -> tuple[int, list[str]]:
    """Count and sample values of an object column that are not numbers (what made it non-numeric)."""
    values = series.dropna()
    try:
        bad = values[pd.to_numeric(values, errors="coerce").isna()]
    except (TypeError, ValueError):  # lists, dicts, ... in the column
        bad = values[[not isinstance(v, int | float | str) for v in values]]
    samples: dict[str, None] = {}
    for value in bad:
        samples.setdefault(_fmt_value(value))
        if len(samples) == _SAMPLES:
            break
    return len(bad), list(samples)


def _safe_row(validation: Any, frame: pd.DataFrame) -> ExpectationRow:
    """Describing a result must not turn bad data into a crash; fall back to GX's bare verdict."""
    try:
        return _row(validation, frame)
    except Exception as exc:
        config = validation.expectation_config
        return ExpectationRow(
            column=str(config.kwargs.get("column") or config.type),
            expectation=str(config.type),
            description=str(config.type),
            success=bool(validation.success),
            observed="",
            unexpected_count=None,
            unexpected_percent=None,
            element_count=None,
            samples=[],
            error=None,
            detail=f"could not describe the result: {_one_line(exc)}",
        )


def _error_detail(error: str, rule: str, column: str, frame: pd.DataFrame, *, absent: bool) -> str:
    """Why an expectation could not be evaluated, in the words a person needs."""
    if absent:
        return "not evaluated: column missing"
    if rule in ("range", "freshness") and column in frame.columns and frame[column].dtype == object:
        wanted = "numeric" if rule == "range" else "a timestamp"
        return f"not evaluated: column is not {wanted} (dtype object)"
    return f"not evaluated: {error}"


def _type_detail(
    frame: pd.DataFrame,
    column: str,
    dtype: str,
    meta: dict[str, Any],
    *,
    success: bool,
    samples: list[str],
    counts: tuple[Any, Any, Any],
) -> tuple[str, list[str], Any, Any]:
    """(detail, samples, unexpected count, unexpected percent) of a column-type expectation."""
    unexpected, elements, percent = counts
    detail = f"column dtype {dtype}"
    if not success and dtype == "object" and meta.get("expected") in ("numeric", "integer"):
        # GX counts every string as unexpected; the useful number is how many are not numbers
        count, bad = _unparsable_numbers(frame[column])
        if count:
            detail += f"; {count} of {len(frame)} values not numbers"
            samples = bad
            unexpected, percent = count, 100.0 * count / len(frame) if len(frame) else 0.0
        else:
            detail += f"; {unexpected} of {elements} values are numbers stored as text"
    elif not success and unexpected:
        detail += f"; {unexpected} of {elements} values not {meta.get('expected')}"
    if not success and samples:
        detail += f", e.g. {', '.join(samples[:3])}"
    return detail, samples, unexpected, percent


def _row(validation: Any, frame: pd.DataFrame) -> ExpectationRow:
    """Flatten one GX expectation result into what a person needs to see."""
    config = validation.expectation_config
    kwargs: dict[str, Any] = dict(config.kwargs)
    meta: dict[str, Any] = dict(config.meta or {})
    rule = str(meta.get("rule", config.type))
    result: dict[str, Any] = dict(validation.result or {})
    column = kwargs.get("column") or "+".join(kwargs.get("column_list") or []) or rule
    error = _exception_message(validation.exception_info)
    success = bool(validation.success) and error is None

    unexpected = result.get("unexpected_count")
    percent = result.get("unexpected_percent")
    elements = result.get("element_count")
    partial = (result.get("partial_unexpected_list") or [])[:_SAMPLES]
    samples = [_fmt_value(v, compound=rule == "unique") for v in partial]
    observed = result.get("observed_value")
    observed_text = "" if observed is None else _fmt_value(observed)

    referenced = [kwargs["column"]] if kwargs.get("column") else list(kwargs.get("column_list") or [])
    absent = [c for c in referenced if c not in frame.columns]
    if error is not None:
        detail = _error_detail(error, rule, column, frame, absent=bool(absent))
    elif rule == "schema":
        mismatched = (result.get("details") or {}).get("mismatched") or {}
        missing = mismatched.get("missing") or []
        expected = set(kwargs.get("column_set") or [])
        extra = [c for c in frame.columns if c not in expected]  # GX only sees the expected columns
        detail = f"missing: {', '.join(missing)}" if missing else "all present"
        observed_text = f"{len(frame.columns)} columns" + (f"; extra (allowed): {', '.join(extra)}" if extra else "")
    elif rule == "rows":
        detail = f"observed {observed}"
    elif rule == "type":
        observed_text = str(frame[column].dtype) if column in frame.columns else "?"
        detail, samples, unexpected, percent = _type_detail(
            frame, column, observed_text, meta, success=success, samples=samples, counts=(unexpected, elements, percent)
        )
    else:
        noun = {
            "nulls": "null" + (" or unparsable" if meta.get("timestamp") else ""),
            "range": "outside",
            "allowed": "not allowed",
            "unique": "repeated",
            "freshness": "outside the window",
        }.get(rule, "unexpected")
        detail = f"{unexpected} of {elements} rows {noun}, {_fmt_percent(percent)}"
        if rule == "nulls":
            samples = []  # the "unexpected values" of a not-null rule are just None
        elif samples and not success:
            detail += f"; e.g. {', '.join(samples[:3])}"
    return ExpectationRow(
        column=str(column),
        expectation=str(config.type),
        description=_describe(rule, kwargs, meta),
        success=success,
        observed=observed_text,
        unexpected_count=unexpected if isinstance(unexpected, int) else None,
        unexpected_percent=float(percent) if isinstance(percent, int | float) else None,
        element_count=elements if isinstance(elements, int) else None,
        samples=samples,
        error=error,
        detail=detail,
    )


# ----------------------------------------------------------------------------------------- report


def _docs_link(outcome: ValidationOutcome) -> str:
    """A link to the GX Data Docs page of this run, relative to the report when both are local."""
    url = outcome.data_docs_url
    if not url:
        return "<p>GX Data Docs: not available.</p>"
    href = url
    if url.startswith("file://"):
        target = Path(unquote(urlparse(url).path))
        try:
            href = os.path.relpath(target, outcome.report_html.parent.resolve())
        except ValueError:
            href = url
    return (
        f'<p>GX Data Docs for this run: <a href="{html.escape(href)}">{html.escape(href)}</a><br>'
        f"<small>{html.escape(url)}</small></p>"
    )


def render_report(outcome: ValidationOutcome) -> str:
    """A self-contained HTML page a person can open from the task's links or the artifact store."""
    from mlops.quality.reports import Verdict, render_page, table, tag

    esc = html.escape
    verdict: Verdict = "PASS" if outcome.success else "FAIL"
    stats = outcome.statistics
    rows = []
    for i, row in enumerate(outcome.rows, start=1):
        unexpected = ""
        if row.unexpected_count is not None:
            unexpected = f"{row.unexpected_count} of {row.element_count} ({_fmt_percent(row.unexpected_percent)})"
        rows.append(
            [
                str(i),
                esc(row.column),
                f"{esc(row.description)}<br><code>{esc(row.expectation)}</code>",
                tag(row.success, failed="ERROR" if row.error else "FAIL"),
                esc(row.observed),
                esc(unexpected),
                esc(", ".join(row.samples)),
                esc(row.detail),
            ]
        )
    headers = ["#", "Column", "Expectation", "Result", "Observed", "Unexpected", "Sample unexpected values", "Detail"]
    failures = "".join(f"<li>{esc(line)}</li>" for line in outcome.failures)
    interval = f"{outcome.interval_start} .. {outcome.interval_end}"
    body = f"""<dl>
<dt>Model</dt><dd>{esc(outcome.model)}</dd>
<dt>Batch</dt><dd>{esc(outcome.batch_id)}</dd>
<dt>Interval</dt><dd>{esc(interval)}</dd>
<dt>Rows</dt><dd>{esc(str(stats.get("row_count")))}</dd>
<dt>Expectations</dt><dd>{esc(str(stats.get("evaluated_expectations")))} evaluated,
{esc(str(stats.get("successful_expectations")))} met, {esc(str(stats.get("unsuccessful_expectations")))}
failed</dd>
</dl>
<p>{esc(outcome.summary_line())}</p>
{f"<h2>Failures</h2><ul>{failures}</ul>" if failures else ""}
{_docs_link(outcome)}
<h2>Every expectation</h2>
{table(headers, rows, ["" if row.success else "bad" for row in outcome.rows])}"""
    return render_page(
        f"{verdict}: {outcome.model} batch {outcome.batch_id}",
        body,
        verdict=verdict,
        summary=f"data-quality gate for {outcome.model} batch {outcome.batch_id}",
    )


def _write_report(outcome: ValidationOutcome) -> None:
    from mlops.quality.reports import write_page

    write_page(outcome.report_html, render_report(outcome))
