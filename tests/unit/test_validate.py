"""The GX data-quality gate: every kind of bad batch fails with a line naming the column, and never raises."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.core.config import ModelConfig, get_config
from mlops.data.validate import (
    BatchReadError,
    ValidationOutcome,
    build_suite,
    coerce_types,
    read_batch,
    validate_batch,
)

MODELS = Path(__file__).resolve().parents[2] / "include" / "models"
START = datetime(2026, 3, 4, tzinfo=UTC)
END = START + timedelta(days=1)


@pytest.fixture(scope="module")
def credit() -> ModelConfig:
    return get_config("credit_risk", MODELS).config


@pytest.fixture(scope="module")
def tumor() -> ModelConfig:
    return get_config("tumor_diagnosis", MODELS).config


def valid_frame(cfg: ModelConfig, n: int = 200, seed: int = 0) -> pd.DataFrame:
    """N rows that satisfy every rule of the config, built from the config alone."""
    rng = np.random.default_rng(seed)
    rules = cfg.data_quality.columns
    data: dict[str, object] = {}
    if cfg.entity.dtype == "int64":
        data[cfg.entity.join_key] = np.arange(1, n + 1, dtype="int64")
    else:
        data[cfg.entity.join_key] = [f"P{i:06d}" for i in range(n)]
    seconds = rng.integers(0, 86_400, size=n)
    data[cfg.timestamp_column] = pd.to_datetime(START) + pd.to_timedelta(seconds, unit="s")
    for column in cfg.features.numeric:
        rule = rules.get(column)
        low = rule.min if rule is not None and rule.min is not None else 0.0
        high = rule.max if rule is not None and rule.max is not None else low + 100.0
        data[column] = rng.uniform(low, high, size=n)
    for column in [*cfg.features.categorical, *cfg.sensitive_attributes]:
        rule = rules.get(column)
        allowed = rule.allowed if rule is not None and rule.allowed else ["a", "b", "c"]
        data[column] = rng.choice(allowed, size=n).astype(object)
    data[cfg.label.column] = rng.choice(np.array(cfg.label.allowed_values, dtype=object), n)
    return pd.DataFrame(data)[cfg.all_columns]


def run(df: pd.DataFrame, cfg: ModelConfig, tmp_path: Path, batch_id: str = "2026-03-04") -> ValidationOutcome:
    return validate_batch(
        df,
        cfg,
        batch_id=batch_id,
        interval_start=START,
        interval_end=END,
        gx_root=tmp_path / "gx",
        report_path=tmp_path / "reports" / f"{batch_id}.html",
    )


def test_valid_batches_pass_for_both_models(credit: ModelConfig, tumor: ModelConfig, tmp_path: Path) -> None:
    for cfg in (credit, tumor):
        outcome = run(valid_frame(cfg), cfg, tmp_path)
        assert outcome.success, outcome.failures
        assert outcome.failures == []
        assert outcome.statistics["unsuccessful_expectations"] == 0
        assert outcome.statistics["row_count"] == 200
        assert outcome.summary_line().startswith(f"GX gate passed for {cfg.name} batch 2026-03-04")
        json.dumps(outcome.result)  # JSON-able
    # Data Docs were built under the shared GX root, and the run is linked from our report
    assert (tmp_path / "gx" / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").exists()
    assert outcome.data_docs_url is not None and outcome.data_docs_url.endswith(".html")
    assert "PASS" in outcome.report_html.read_text()


def test_suite_covers_every_rule(credit: ModelConfig) -> None:
    suite = build_suite(credit, START, END)
    rules = [e.meta["rule"] for e in suite.expectations]
    for rule in ("schema", "rows", "type", "nulls", "range", "allowed", "unique", "freshness"):
        assert rule in rules
    assert rules.count("range") == 9 and rules.count("allowed") == 6  # 5 categorical columns and the label
    (label,) = [e for e in suite.expectations if e.meta.get("label")]
    assert label.column == credit.label.column and list(label.value_set) == [0, 1]


def test_missing_column_fails_naming_it_and_extra_columns_are_allowed(credit: ModelConfig, tmp_path: Path) -> None:
    df = valid_frame(credit).drop(columns=["loan_amount"]).assign(unrelated_extra=1)
    outcome = run(df, credit, tmp_path)
    assert not outcome.success
    assert outcome.failures[0].startswith("schema:") and "loan_amount" in outcome.failures[0]
    assert "unrelated_extra" not in " ".join(outcome.failures)
    assert all("loan_amount" in line or line.startswith("schema") for line in outcome.failures)


def test_text_in_numeric_csv_column_fails_type_check(credit: ModelConfig, tmp_path: Path) -> None:
    df = valid_frame(credit)
    df["age"] = df["age"].astype(object)
    df.loc[7, "age"] = "abc"
    frame = read_batch(df.to_csv(index=False).encode(), "csv", name="2026-03-04.csv")
    outcome = run(frame, credit, tmp_path)
    assert not outcome.success
    type_line = next(line for line in outcome.failures if line.startswith("age: numeric type"))
    assert "1 of 200 values not numbers" in type_line and "'abc'" in type_line
    # the range check cannot compare strings with numbers; it fails instead of raising
    assert any(line.startswith("age: values between") for line in outcome.failures)
    assert {line.split(":")[0] for line in outcome.failures} == {"age"}


@pytest.fixture(scope="module")
def defective(credit: ModelConfig, tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, ValidationOutcome]:
    """One credit batch with independent defects in different columns (one GX run keeps the tests fast)."""
    df = valid_frame(credit)
    df.loc[:4, "interest_rate"] = np.nan  # nulls beyond the 0% budget
    df.loc[:2, "age"] = 12.0  # out of range
    df.loc[3, "home_ownership"] = "CASTLE"  # unknown category
    df.loc[4, "loan_purpose"] = "<script>alert(1)</script>"  # unknown, and must be escaped in HTML
    df.loc[1, ["customer_id", "event_timestamp"]] = df.loc[0, ["customer_id", "event_timestamp"]].to_numpy()
    df.loc[10:19, "event_timestamp"] = START - timedelta(hours=49)  # older than 48 h before the interval
    return df, run(df, credit, tmp_path_factory.mktemp("defective"), batch_id="2026-03-04 (ab12cd34)")


def failure(outcome: ValidationOutcome, column: str) -> str:
    lines = [line for line in outcome.failures if line.startswith(f"{column}: ")]
    assert len(lines) == 1, outcome.failures
    return lines[0]


def test_defects_fail_with_one_line_each(defective: tuple[pd.DataFrame, ValidationOutcome]) -> None:
    _, outcome = defective
    assert not outcome.success
    assert len(outcome.failures) == 6 == outcome.statistics["unsuccessful_expectations"]


def test_nulls_beyond_budget_fail(defective: tuple[pd.DataFrame, ValidationOutcome]) -> None:
    assert failure(defective[1], "interest_rate") == "interest_rate: no null values (5 of 200 rows null, 2.5%)"


def test_out_of_range_fails(defective: tuple[pd.DataFrame, ValidationOutcome]) -> None:
    assert failure(defective[1], "age") == (
        "age: values between 18 and 100 (3 of 200 rows outside, 1.5%; e.g. 12.0, 12.0, 12.0)"
    )


def test_unknown_category_fails(defective: tuple[pd.DataFrame, ValidationOutcome]) -> None:
    assert failure(defective[1], "home_ownership") == (
        "home_ownership: values in [RENT, OWN, MORTGAGE] (1 of 200 rows not allowed, 0.5%; e.g. 'CASTLE')"
    )


def test_repeated_entity_and_timestamp_fails_uniqueness(
    defective: tuple[pd.DataFrame, ValidationOutcome],
) -> None:
    df, outcome = defective
    stamp = df.loc[0, "event_timestamp"]
    assert failure(outcome, "customer_id+event_timestamp") == (
        "customer_id+event_timestamp: no repeated entity and timestamp (2 of 200 rows repeated, 1%; "
        f"e.g. (1, {stamp}), (1, {stamp}))"
    )


def test_stale_timestamps_fail_freshness(defective: tuple[pd.DataFrame, ValidationOutcome]) -> None:
    assert failure(defective[1], "event_timestamp").startswith(
        "event_timestamp: timestamps within 2026-03-02 00:00:00+00:00 .. 2026-03-05 00:00:00+00:00 "
        "(freshness) (10 of 200 rows outside the window, 5%"
    )


def test_report_and_summary(defective: tuple[pd.DataFrame, ValidationOutcome]) -> None:
    _, outcome = defective
    page = outcome.report_html.read_text()
    assert "FAIL" in page and "age" in page and "home_ownership" in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert outcome.data_docs_url is not None
    assert Path(outcome.data_docs_url.removeprefix("file://")).exists()
    line = outcome.summary_line()
    assert "\n" not in line and len(line) <= 400
    assert line.startswith("GX gate failed for credit_risk batch 2026-03-04 (ab12cd34): 6 of ")
    assert "age: values between 18 and 100 (3 of 200 rows outside, 1.5%" in line
    json.dumps(outcome.result)


def test_summary_line_is_one_truncated_line() -> None:
    outcome = ValidationOutcome(
        success=False,
        failures=[f"col_{i}: values between 0 and 1 (5 of 10 rows outside,\n 50%)" for i in range(30)],
        statistics={"evaluated_expectations": 90, "unsuccessful_expectations": 30},
        result={},
        report_html=Path("r.html"),
        model="credit_risk",
        batch_id="2026-03-04",
    )
    line = outcome.summary_line()
    assert len(line) == 400 and line.endswith("…") and "\n" not in line
    assert line.startswith("GX gate failed for credit_risk batch 2026-03-04: 30 of 90 expectations failed: col_0:")


def test_within_mostly_passes_and_beyond_mostly_fails(tumor: ModelConfig, tmp_path: Path) -> None:
    relaxed_rules = {
        name: rule.model_copy(update={"mostly": 0.95}) for name, rule in tumor.data_quality.columns.items()
    }
    relaxed = tumor.model_copy(
        update={"data_quality": tumor.data_quality.model_copy(update={"columns": relaxed_rules})}
    )
    df = valid_frame(tumor)
    df.loc[:3, "mean_area"] = 99_999.0  # 2% outside: tolerated
    df.loc[:19, "worst_radius"] = -1.0  # 10% outside: fails
    outcome = run(df, relaxed, tmp_path)
    assert outcome.failures == [
        "worst_radius: at least 0.95 of values between 0 and 60 (20 of 200 rows outside, 10%; e.g. -1.0, -1.0, -1.0)"
    ]


def test_unparsable_timestamps_fail_not_null(tumor: ModelConfig, tmp_path: Path) -> None:
    text = valid_frame(tumor).astype({"measured_at": str})
    text.loc[0, "measured_at"] = "not a date"
    frame = read_batch(text.to_csv(index=False).encode(), "csv", name="t.csv", cfg=tumor)
    outcome = run(frame, tumor, tmp_path)
    assert outcome.failures == ["measured_at: no null values (1 of 200 rows null or unparsable, 0.5%)"]


def test_empty_file_is_a_read_error() -> None:
    with pytest.raises(BatchReadError, match=r"2026-03-04\.csv: empty file"):
        read_batch(b"", "csv", name="2026-03-04.csv")
    with pytest.raises(BatchReadError, match="empty file"):
        read_batch(b"\n\n", "csv", name="x.csv")


def test_header_only_csv_fails_row_count(tumor: ModelConfig, tmp_path: Path) -> None:
    frame = read_batch((",".join(tumor.all_columns) + "\n").encode(), "csv", name="h.csv", cfg=tumor)
    assert frame.empty
    outcome = run(frame, tumor, tmp_path)
    assert not outcome.success
    assert outcome.failures == ["rows: row count between 20 and 10000000 (observed 0)"]


def test_truncated_parquet_is_a_read_error(credit: ModelConfig) -> None:
    buffer = io.BytesIO()
    valid_frame(credit).to_parquet(buffer)
    data = buffer.getvalue()
    assert len(read_batch(data, "parquet", name="ok.parquet")) == 200
    with pytest.raises(BatchReadError, match=r"^2026-03-04\.parquet: cannot read parquet: ") as info:
        read_batch(data[: len(data) // 2], "parquet", name="2026-03-04.parquet")
    assert "\n" not in str(info.value)
    with pytest.raises(BatchReadError, match="unsupported format"):
        read_batch(data, "json", name="x.json")


def test_coerce_types_normalises_without_hiding_type_errors(tumor: ModelConfig) -> None:
    df = valid_frame(tumor, n=4)
    df["measured_at"] = ["2026-03-04T01:00:00Z", "2026-03-04 02:00:00+01:00", "bad", None]
    df["mean_radius"] = pd.array([1, 2, None, 4], dtype="Int64")
    df["mean_texture"] = ["1", "x", "3", "4"]
    df["clinic_site"] = pd.Series(["north", None, "south", "east"], dtype="string")
    out = coerce_types(df, tumor)
    assert str(out["measured_at"].dtype) == "datetime64[ns, UTC]"
    assert out["measured_at"].isna().tolist() == [False, False, True, True]
    assert out["mean_radius"].dtype == "float64"
    assert out["mean_texture"].tolist() == ["1", "x", "3", "4"]  # left for the type expectation
    assert out["clinic_site"].dtype == object and out["clinic_site"][1] is None
    assert df["mean_radius"].dtype == "Int64"  # input untouched
    assert coerce_types(out, tumor).equals(out)


def test_string_ids_keep_leading_zeros_from_csv(tumor: ModelConfig) -> None:
    csv = (",".join(tumor.all_columns) + "\n").encode()
    row = {c: "1" for c in tumor.all_columns} | {"patient_id": "00042"}
    csv += (",".join(row[c] for c in tumor.all_columns) + "\n").encode()
    assert read_batch(csv, "csv", name="x.csv", cfg=tumor)["patient_id"].tolist() == ["00042"]
    assert read_batch(csv, "csv", name="x.csv")["patient_id"].tolist() == [42]


def test_labels_are_never_mapped_to_a_class_silently(credit: ModelConfig, tumor: ModelConfig) -> None:
    raw = pd.DataFrame({credit.label.column: ["1", " 0 ", "1.0", "yes", "2", "0.5", None, "True"]})
    got = coerce_types(raw, credit)[credit.label.column].tolist()
    assert got == [1, 0, 1, "yes", 2, "0.5", None, "True"]  # only integers written as text become integers
    floats = pd.DataFrame({credit.label.column: [1.0, 0.0, 0.5, float("nan")]})
    assert coerce_types(floats, credit)[credit.label.column].tolist() == [1, 0, 0.5, None]
    booleans = pd.DataFrame({credit.label.column: [True, False]})
    assert coerce_types(booleans, credit)[credit.label.column].tolist() == [True, False]
    text = pd.DataFrame({tumor.label.column: ["benign", "Malignant", "1"]})
    assert coerce_types(text, tumor)[tumor.label.column].tolist() == ["benign", "Malignant", "1"]


@pytest.mark.parametrize("name", ["credit", "tumor"])
def test_label_outside_the_classes_or_null_fails_whatever_the_null_budget(
    name: str, credit: ModelConfig, tumor: ModelConfig, tmp_path: Path
) -> None:
    cfg = {"credit": credit, "tumor": tumor}[name]
    lenient = cfg.model_copy(update={"data_quality": cfg.data_quality.model_copy(update={"max_null_fraction": 0.5})})
    df = valid_frame(lenient).astype({cfg.label.column: object})
    bad = "Malignant" if name == "tumor" else 7
    df.loc[:2, cfg.label.column] = bad
    df.loc[3:4, cfg.label.column] = None
    outcome = run(df, lenient, tmp_path)
    assert not outcome.success
    allowed = ", ".join(str(v) for v in cfg.label.allowed_values)
    (in_set,) = [line for line in outcome.failures if f"values in [{allowed}]" in line]
    assert in_set.startswith(f"{cfg.label.column}:") and f"e.g. {bad!r}" in in_set, in_set
    assert f"{cfg.label.column}: no null values (2 of 200 rows null" in "; ".join(outcome.failures)


LABEL_VARIANTS = {
    "integer": (1, [0, 1], 2),
    "string": ("bad", ["good", "bad"], "maybe"),
    "boolean": (True, [False, True], "unknown"),
}


@pytest.mark.parametrize("label_type", LABEL_VARIANTS)
def test_gx_gate_fails_a_label_outside_the_classes_for_every_label_type(
    label_type: str, credit: ModelConfig, tmp_path: Path
) -> None:
    """Landed as CSV (as a producer writes it), a good batch passes and one stray label value fails the gate."""
    from mlops.core.config import LabelConfig

    positive, classes, stray = LABEL_VARIANTS[label_type]
    label = LabelConfig(column="defaulted", positive_class=positive, classes=classes)  # type: ignore[arg-type]
    cfg = credit.model_copy(update={"label": label})

    def landed(frame: pd.DataFrame) -> pd.DataFrame:
        return coerce_types(read_batch(frame.to_csv(index=False).encode(), "csv", name="b.csv", cfg=cfg), cfg)

    good = valid_frame(cfg, seed=3)
    outcome = run(landed(good), cfg, tmp_path, batch_id="good")
    assert outcome.success, outcome.failures
    bad = good.astype({"defaulted": object})
    bad.loc[:4, "defaulted"] = stray
    outcome = run(landed(bad), cfg, tmp_path, batch_id="bad")
    assert not outcome.success
    line = outcome.summary_line()
    assert "defaulted" in line and str(stray) in line and "\n" not in line
