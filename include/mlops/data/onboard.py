"""A starter model config inferred from a sample table: ``python -m mlops.data.onboard SAMPLE --name NAME``.

Reads a CSV or parquet sample and writes a commented YAML a person finishes by reviewing two choices,
the label and the sensitive attributes (each marked ``REVIEW``). It infers the event timestamp, the
entity key, typed features, ranges with a margin, categories, a missing-value policy per column, label
candidates with their classes, and suggests sensitive attributes by name. The YAML is validated against
the sample with the real GX gate before it is written: a starter config that would quarantine its own
sample is never written.

Ranges get a margin of half the observed span on each side (never below 0 for a non-negative column):
a narrower one quarantines real later batches whose extremes the sample did not happen to hold.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlops.core.config import NAME_MAX, NAME_PATTERN, ConfigError, ModelConfig, check_model_name, parse_text

if TYPE_CHECKING:
    import pandas as pd

RANGE_MARGIN = 0.5  # of the observed span, on each side
FEW_NULLS = 0.05  # a null rate up to this is tolerated (up to twice the rate), above it imputed
MAX_CATEGORIES = 50
MAX_LABEL_CLASSES = 20
LABEL_HINTS = ("label", "target", "churn", "default", "outcome", "class", "fraud", "diagnosis", "y")
SENSITIVE_HINTS = (
    "gender", "sex", "age", "race", "ethnic", "religion", "nationality", "marital", "disab", "senior", "citizen",
)  # fmt: skip
TIMESTAMP_HINTS = ("timestamp", "time", "date", "at", "ts")
POSITIVE_WORDS = ("yes", "y", "true", "positive", "1")


class OnboardError(ValueError):
    """The sample cannot give a starter config; the message says what to add or pass."""


@dataclass
class Inferred:
    """What the sample says, before it is written as YAML."""

    timestamp: str
    key: str
    key_dtype: str
    label: str
    classes: list[Any]
    positive: Any
    label_candidates: list[str]
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    sensitive: list[str] = field(default_factory=list)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)


def read_sample(path: Path) -> pd.DataFrame:
    import pandas as pd

    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path, low_memory=False)
    raise OnboardError(f"{path}: a sample is a .csv or .parquet file")


def _hinted(name: str, hints: tuple[str, ...]) -> bool:
    """A word of ``name`` (split at ``_``) is a hint, or starts with one of four letters or more
    (``churned``, ``ethnicity``), so ``usage`` or ``page_views`` never read as an age."""
    words = name.lower().split("_")
    return any(w == h or (len(h) >= 4 and w.startswith(h)) for w in words for h in hints)


def _timestamp(df: pd.DataFrame) -> str:
    import pandas as pd

    for column in df.columns:
        values = df[column]
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            return str(column)
        if values.dtype == object and _hinted(str(column), TIMESTAMP_HINTS):
            parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
            if parsed.notna().all():
                return str(column)
    raise OnboardError("no event timestamp column (ISO-8601 date-times, e.g. 'event_timestamp'): add one")


def _key(df: pd.DataFrame, taken: set[str]) -> tuple[str, str]:
    import pandas as pd

    candidates = [c for c in df.columns if c not in taken and df[c].notna().all() and df[c].is_unique]
    named = [c for c in candidates if str(c).lower() == "id" or str(c).lower().endswith("_id")]
    for column in [*named, *candidates]:
        dtype = df[column].dtype
        if pd.api.types.is_integer_dtype(dtype):
            return str(column), "int64"
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            return str(column), "string"
    raise OnboardError("no entity key column (unique, never empty, e.g. 'customer_id'): add one")


def _classes(values: pd.Series) -> list[Any]:
    import pandas as pd

    distinct = values.dropna().unique().tolist()
    if pd.api.types.is_bool_dtype(values.dtype):
        return [False, True]
    if pd.api.types.is_integer_dtype(values.dtype) or all(isinstance(v, int) for v in distinct):
        return sorted(int(v) for v in distinct)
    return sorted(str(v) for v in distinct)


def _label_candidates(df: pd.DataFrame, taken: set[str]) -> list[str]:
    import pandas as pd

    found = []
    for column in df.columns:
        values = df[column]
        if column in taken or values.isna().any() or pd.api.types.is_float_dtype(values.dtype):
            continue
        if 2 <= values.nunique() <= MAX_LABEL_CLASSES:
            found.append(str(column))
    return sorted(found, key=lambda c: (not _hinted(c, LABEL_HINTS), found.index(c)))


def _positive(classes: list[Any], values: pd.Series) -> Any:
    """True, 1, a class named like yes/true/positive, else the rarer class: the usual event predicted."""
    if classes == [False, True]:
        return True
    if 1 in classes and all(isinstance(c, int) for c in classes):
        return 1
    named = [c for c in classes if str(c).lower() in POSITIVE_WORDS]
    if len(named) == 1:
        return named[0]
    counts = values.astype(str).value_counts()
    return str(counts.idxmin())


def _range(values: pd.Series, integer: bool) -> dict[str, Any]:
    import math

    low, high = float(values.min()), float(values.max())
    margin = RANGE_MARGIN * (high - low) or RANGE_MARGIN * max(abs(low), 1.0)
    lo, hi = low - margin, high + margin
    if low >= 0:
        lo = max(lo, 0.0)
    if integer:
        return {"min": math.floor(lo), "max": math.ceil(hi)}
    return {"min": float(f"{lo:.6g}"), "max": float(f"{hi:.6g}")}


def _feature(df: pd.DataFrame, column: str, inferred: Inferred) -> None:
    """Type one remaining column as a numeric or categorical feature with its rule, or skip it with why."""
    import pandas as pd

    values = df[column]
    rule: dict[str, Any] = {}
    if pd.api.types.is_bool_dtype(values.dtype):
        inferred.skipped[column] = "boolean: write it as 0/1 to use it as a numeric feature"
        return
    if pd.api.types.is_numeric_dtype(values.dtype):
        if values.notna().sum() == 0:
            inferred.skipped[column] = "always empty in the sample"
            return
        inferred.numeric.append(column)
        rule.update(_range(values.dropna(), pd.api.types.is_integer_dtype(values.dropna().convert_dtypes().dtype)))
    else:
        distinct = values.dropna().astype(str).unique()
        if len(distinct) == 0 or len(distinct) > MAX_CATEGORIES or len(distinct) > 0.5 * len(values):
            inferred.skipped[column] = f"text with {len(distinct)} distinct values (an id or free text?)"
            return
        inferred.categorical.append(column)
        rule["allowed"] = sorted(str(v) for v in distinct)
    rule.update(null_policy(values, numeric=column in inferred.numeric))
    inferred.rules[column] = rule


def null_policy(values: pd.Series, *, numeric: bool) -> dict[str, Any]:
    """No nulls in the sample: reject any (the default). A few (up to ``FEW_NULLS``): reject beyond
    twice the sample's rate. More: impute (median for numbers, most frequent category)."""
    import math

    fraction = float(values.isna().mean())
    if fraction == 0:
        return {}
    if fraction <= FEW_NULLS:
        return {"missing": "reject", "max_null_fraction": min(1.0, math.ceil(fraction * 200) / 100)}
    return {"missing": "impute", "impute_strategy": "median" if numeric else "most_frequent"}


def _sensitive(df: pd.DataFrame, column: str, inferred: Inferred) -> None:
    """A suggested sensitive attribute: typed, binned by quartiles when it is a numeric with many values."""
    import pandas as pd

    inferred.sensitive.append(column)
    values = df[column]
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        group: dict[str, Any] = {"type": "numeric"}
        if values.nunique() > 10:
            group["quantiles"] = 4
        inferred.groups[column] = group
        if column not in inferred.numeric:
            inferred.rules[column] = _range(values.dropna(), pd.api.types.is_integer_dtype(values.dtype))
    elif column not in inferred.categorical:
        inferred.rules[column] = {"allowed": sorted(values.dropna().astype(str).unique())}


def infer(df: pd.DataFrame, label: str | None = None, sensitive: list[str] | None = None) -> Inferred:
    """Everything a starter config needs from a sample (``label``/``sensitive`` override the guesses)."""
    if df.empty:
        raise OnboardError("the sample has no rows")
    bad = [str(c) for c in df.columns if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", str(c))]
    if bad:
        raise OnboardError(f"column names must be identifiers (letters, digits, '_'): rename {bad}")
    timestamp = _timestamp(df)
    key, key_dtype = _key(df, {timestamp})
    candidates = _label_candidates(df, {timestamp, key})
    chosen = label or (candidates[0] if candidates else None)
    if chosen is None or chosen not in df.columns:
        raise OnboardError(f"no label column {'named ' + repr(label) if label else 'found'}: pass --label COLUMN")
    classes = _classes(df[chosen])
    if len(classes) < 2:
        raise OnboardError(f"label {chosen!r} has fewer than two classes in the sample: {classes}")
    inferred = Inferred(
        timestamp,
        key,
        key_dtype,
        chosen,
        classes,
        _positive(classes, df[chosen]),
        [c for c in candidates if c != chosen],
    )
    suggested = sensitive if sensitive is not None else [c for c in map(str, df.columns) if _hinted(c, SENSITIVE_HINTS)]
    reserved = {timestamp, key, chosen}
    for column in map(str, df.columns):
        if column not in reserved and column not in suggested:
            _feature(df, column, inferred)
    for column in suggested:
        if column in reserved or column not in df.columns:
            raise OnboardError(f"sensitive attribute {column!r} is not a column other than key, timestamp and label")
        _sensitive(df, column, inferred)
    return inferred


def _v(value: Any) -> str:
    """One YAML value in flow style (strings YAML would read as booleans or numbers come out quoted)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6, allow_unicode=True).strip()
    return text.removesuffix("...").strip()


def render(name: str, inferred: Inferred, sample: str) -> str:
    """The commented starter YAML."""
    i = inferred
    entity = re.sub(r"_id$", "", i.key.lower()) or name
    if not re.fullmatch(NAME_PATTERN, entity) or len(entity) > NAME_MAX:
        entity = name
    lines = [
        f"# Starter config inferred from {sample} by `python -m mlops.data.onboard`.",
        "# Review every line marked REVIEW, then check it: python -m mlops.core.config --check",
        f"name: {name}",
        f"description: {_v('Inferred from ' + Path(sample).name + '; describe what the model predicts.')}",
        "source:",
        f"  landing: {name}            # batches land in <landing root>/{name}/YYYY-MM-DD*.csv|parquet",
        "entity:",
        f"  name: {entity}",
        f"  join_key: {i.key}",
        f"  dtype: {i.key_dtype}",
        f"timestamp_column: {i.timestamp}",
        "label:                            # REVIEW: the column the model predicts and its positive class",
        f"  column: {i.label}"
        + (f"            # other candidates: {', '.join(i.label_candidates)}" if i.label_candidates else ""),
        f"  positive_class: {_v(i.positive)}",
        f"  classes: {_v(i.classes)}",
        "features:",
        f"  numeric: {_v(i.numeric)}",
        f"  categorical: {_v(i.categorical)}",
    ]
    lines += [f"  # not used: {column} ({why})" for column, why in i.skipped.items()]
    lines += [
        "sensitive_attributes: " + _v(i.sensitive) + "   # REVIEW: suggested by name; groups compared for fairness",
    ]
    if i.groups:
        lines.append("sensitive_groups:")
        lines += [f"  {column}: {_v(group)}" for column, group in i.groups.items()]
    lines += [
        "data_quality:",
        "  min_rows: 1",
        f"  # ranges: the sample's span plus {RANGE_MARGIN:.0%} of it on each side. Nulls: none in the sample -> "
        "rejected; a few -> tolerated up to twice the sample's rate; more -> imputed in training",
        "  columns:",
    ]
    lines += [f"    {column}: {_v(rule)}" for column, rule in i.rules.items()]
    lines += [
        "training:",
        "  window_days: 30",
        "  holdout_days: 2",
        "  estimator:",
        "    family: logistic_regression",
        "    params: {max_iter: 2000}",
        "  resources: {cpu: '1', memory: 2Gi, gpu: 0}",
        "",
    ]
    return "\n".join(lines)


def _any_age(cfg: ModelConfig) -> ModelConfig:
    """The config without its freshness rule: a sample spans many days, each batch only one."""
    quality = cfg.data_quality.model_copy(update={"freshness_max_age_hours": 87_600})
    return cfg.model_copy(update={"data_quality": quality})


def check_against_sample(text: str, name: str, df: pd.DataFrame) -> ModelConfig:
    """Parse the YAML as the loader does and run the GX gate on the sample; raise OnboardError on any failure."""
    import pandas as pd

    from mlops.data.validate import coerce_types, validate_batch

    try:
        cfg = parse_text(Path(f"{name}.yaml"), text)
    except ConfigError as exc:
        raise OnboardError(f"the inferred config is invalid: {exc}") from None
    frame = coerce_types(df, cfg)
    stamps = frame[cfg.timestamp_column]
    start = stamps.min().floor("D").to_pydatetime()
    end = (stamps.max().floor("D") + pd.Timedelta(days=1)).to_pydatetime()
    with tempfile.TemporaryDirectory() as work:
        outcome = validate_batch(
            frame,
            _any_age(cfg),
            batch_id="onboarding-sample",
            interval_start=start,
            interval_end=end,
            gx_root=Path(work) / "gx",
            report_path=Path(work) / "report.html",
        )
    if not outcome.success:
        raise OnboardError(f"the inferred config fails its own sample: {outcome.summary_line()}")
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops.data.onboard", description=__doc__.split("\n")[0])
    parser.add_argument("sample", type=Path, help="a .csv or .parquet sample of the model's batches")
    parser.add_argument("--name", required=True, help="model name (lower-case words joined by '_')")
    parser.add_argument("--label", help="label column (default: the likeliest candidate)")
    parser.add_argument("--sensitive", help="comma-separated sensitive attributes (default: suggested by name)")
    parser.add_argument("--out", type=Path, help="where to write (default: include/models/<name>.yaml)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args(argv)
    out = args.out or Path("include/models") / f"{args.name}.yaml"
    try:
        check_model_name(args.name)
        if out.exists() and not args.force:
            raise OnboardError(f"{out} exists: pass --force to overwrite it")
        df = read_sample(args.sample)
        sensitive = None if args.sensitive is None else [c for c in args.sensitive.split(",") if c]
        text = render(args.name, infer(df, args.label, sensitive), str(args.sample))
        check_against_sample(text, args.name, df)
    except (OnboardError, ValueError, OSError) as exc:
        print(f"onboard: {exc}", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}: review the lines marked REVIEW, then `python -m mlops.core.config --check`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
