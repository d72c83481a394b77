"""Bringing a new table: label typing and YAML's yes/no trap, typed and binned sensitive attributes,
missing-value policies in the gate and in training, the drift reference without the batch under test,
and the starter config inferred from a sample."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops.core.config import ConfigError, ModelConfig, load_config, parse_config, parse_text
from mlops.data.onboard import OnboardError, check_against_sample, infer, render
from mlops.data.validate import coerce_types, read_batch, validate_batch
from mlops.quality.groups import bin_labels, group_labels, quantile_edges

START = datetime(2026, 3, 4, tzinfo=UTC)
END = START + timedelta(days=1)

BASE: dict[str, Any] = {
    "name": "churn",
    "source": {"landing": "churn"},
    "entity": {"name": "subscriber", "join_key": "customer_id"},
    "timestamp_column": "event_timestamp",
    "label": {"column": "churned", "positive_class": "Yes", "classes": ["No", "Yes"]},
    "features": {"numeric": ["tenure", "charges"], "categorical": ["contract"]},
    "sensitive_attributes": ["age", "senior"],
    "sensitive_groups": {"age": {"edges": [30, 45]}, "senior": {"type": "numeric"}},
    "data_quality": {
        "columns": {
            "tenure": {"missing": "impute", "impute_strategy": "mean"},
            "charges": {"missing": "reject", "max_null_fraction": 0.1},
            "contract": {"missing": "impute", "impute_strategy": "constant", "fill_value": "unknown"},
            "senior": {"min": 0, "max": 1},
            "age": {"min": 0, "max": 120},
        }
    },
    "training": {"estimator": {"family": "logistic_regression"}},
}


def config(**changes: Any) -> ModelConfig:
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return parse_config(Path("churn.yaml"), data)


def frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": np.arange(n) + 1,
            "event_timestamp": [(START + timedelta(seconds=int(s))).isoformat() for s in rng.integers(0, 86_000, n)],
            "tenure": rng.integers(0, 70, n).astype(float),
            "charges": rng.normal(70, 10, n).round(2),
            "contract": rng.choice(["monthly", "yearly"], n).astype(object),
            "age": rng.integers(18, 80, n),
            "senior": rng.integers(0, 2, n),
            "churned": rng.choice(["No", "Yes"], n).astype(object),
        }
    )


def gate(df: pd.DataFrame, cfg: ModelConfig, tmp_path: Path) -> Any:
    data = df.to_csv(index=False).encode()
    typed = coerce_types(read_batch(data, "csv", name="b.csv", cfg=cfg), cfg)
    return validate_batch(
        typed,
        cfg,
        batch_id="2026-03-04",
        interval_start=START,
        interval_end=END,
        gx_root=tmp_path / "gx",
        report_path=tmp_path / "r.html",
    )


# ----------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize("word", ["Yes", "yes", "YES", "No", "no", "on", "Off", "y", "N"])
def test_yaml_yes_no_on_off_is_refused_with_a_quote_it_message(tmp_path: Path, word: str) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False).replace("positive_class: 'Yes'", f"positive_class: {word}")
    path = tmp_path / "churn.yaml"
    path.write_text(text)
    if word in ("y", "N"):  # PyYAML reads these as strings: no trap, loads as the string itself
        with pytest.raises(ConfigError, match="classes"):
            load_config(path)
        return
    with pytest.raises(ConfigError, match=rf"unquoted '{word}' is read by YAML as the boolean .*quote it"):
        load_config(path)
    path.write_text(text.replace(f"positive_class: {word}", "positive_class: 'Yes'"))
    assert load_config(path).config.label.positive_class == "Yes"


def test_the_trap_is_refused_in_a_list_too_and_true_false_stay_booleans(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unquoted 'No'"):
        parse_text(Path("churn.yaml"), yaml.safe_dump(BASE).replace("- 'No'", "- No"))
    data = copy.deepcopy(BASE)
    data["label"] = {"column": "churned", "positive_class": True}
    cfg = parse_text(Path("churn.yaml"), yaml.safe_dump(data))
    assert cfg.label.positive_class is True and cfg.label.allowed_values == [False, True]


@pytest.mark.parametrize(
    ("label", "values", "absent"),
    [
        ({"positive_class": "Yes", "classes": ["No", "Yes"]}, ["No"] * 5, "['Yes']"),
        ({"positive_class": 1}, [0] * 5, "[1]"),
        ({"positive_class": True}, [False] * 5, "[True]"),
    ],
)
def test_first_batch_must_hold_every_configured_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label: dict[str, Any], values: list[Any], absent: str
) -> None:
    from mlops.core.settings import get_settings
    from mlops.data import steps

    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("MLOPS_LAKE_URI", raising=False)
    cfg = config(label={"column": "churned", **label})
    day = pd.DataFrame({"churned": values})
    problem = steps._classes_absent_from_first_batch(cfg, "2026-03-04", day, get_settings())
    assert absent in problem and "first batch" in problem and "label.positive_class" in problem
    full = pd.DataFrame({"churned": [*values, *cfg.label.allowed_values]})
    assert steps._classes_absent_from_first_batch(cfg, "2026-03-04", full, get_settings()) == ""


# ----------------------------------------------------------------------------------------- groups


def binned_counts(values: pd.Series, edges: list[float]) -> int:
    from mlops.quality.groups import binned

    return int(binned(values, "x", edges).nunique())


def test_bins_from_edges_and_quantiles_give_readable_consistent_labels() -> None:
    cfg = config()
    ages = pd.Series([18, 29.9, 30, 44, 45, 80, None])
    assert group_labels(ages, cfg, "age").tolist() == [
        "age < 30",
        "age < 30",
        "age 30-45",
        "age 30-45",
        "age ≥ 45",
        "age ≥ 45",
        "(missing)",
    ]
    assert bin_labels("x", [0.5, 2.25]) == ["x < 0.5", "x 0.5-2.25", "x ≥ 2.25"]
    quartiles = config(sensitive_groups={"age": {"quantiles": 4}, "senior": {"type": "numeric"}})
    many = pd.Series(np.arange(100, dtype=float))
    labels = group_labels(many, quartiles, "age")
    assert labels.nunique() == 4 and labels.value_counts().tolist() == [25, 25, 25, 25]
    tied = pd.Series([1, 1, 1, 1, 2, 3, 4, 5])
    edges = quantile_edges(tied, 4)  # ties merge bins: never an empty one, never an edge at the minimum
    assert edges == sorted(set(edges)) and min(edges) > 1
    assert binned_counts(tied, edges) == len(edges) + 1
    # 0/1 integers read back as floats (the feature store's Float64) still read 0 and 1.
    assert group_labels(pd.Series([0.0, 1.0, np.nan]), cfg, "senior").tolist() == ["0", "1", "(missing)"]
    assert group_labels(pd.Series(["0", "1"]), cfg, "gender").tolist() == ["0", "1"]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"age": {"edges": [45, 30]}}, "strictly ascending"),
        ({"age": {"edges": [30], "quantiles": 3}}, "either edges or quantiles"),
        ({"age": {"type": "categorical", "quantiles": 3}}, "numeric attributes only"),
        ({"income": {"type": "numeric"}}, "not listed in sensitive_attributes"),
        ({"age": {"quantiles": 1}}, "greater than or equal to 2"),
    ],
)
def test_bad_sensitive_groups_are_refused(groups: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(sensitive_groups=groups)


def test_integer_sensitive_attribute_keeps_its_dtype_and_its_range_passes(tmp_path: Path) -> None:
    cfg = config()
    assert "senior" in cfg.numeric_columns and "age" in cfg.numeric_columns
    typed = coerce_types(read_batch(frame().to_csv(index=False).encode(), "csv", name="b.csv", cfg=cfg), cfg)
    assert typed["senior"].dtype == "int64" and typed["age"].dtype == "int64"
    assert gate(frame(), cfg, tmp_path).success
    untyped = config(sensitive_groups={}, data_quality={"columns": {}})  # no type: read as a category (text)
    assert read_batch(frame().to_csv(index=False).encode(), "csv", name="b.csv", cfg=untyped)["senior"].dtype == object
    with pytest.raises(ConfigError, match="not a numeric column"):
        config(sensitive_groups={}, data_quality={"columns": {"senior": {"min": 0, "max": 1}}})


def test_fairness_gate_reports_binned_groups_and_logs_each_group(tmp_path: Path) -> None:
    from mlops.quality.gates import fairness_gate

    cfg = config(gates={"fairness": {"min_group_size": 5, "max_disparity": 1.0}})
    holdout = frame(200, seed=3)
    result = fairness_gate(holdout, holdout["churned"], np.linspace(0, 1, 200), cfg, tmp_path / "fairness.html")
    groups = {g["group"] for g in result.details["attributes"]["age"]["groups"]}
    assert groups == {"age < 30", "age 30-45", "age ≥ 45"}
    assert {g["group"] for g in result.details["attributes"]["senior"]["groups"]} == {"0", "1"}
    keys = [k for k in result.metrics if k.startswith("group.age.")]
    assert {"group.age.age lt 30.selection_rate", "group.age.age ge 45.selection_rate"} <= set(keys)
    assert "age 30-45" in Path(result.report_html).read_text()


# ----------------------------------------------------------------------------------------- missing values


def test_missing_value_policies_drive_the_gate(tmp_path: Path) -> None:
    cfg = config()
    df = frame()
    df.loc[: len(df) // 2, "tenure"] = np.nan  # impute: any fraction passes
    df.loc[:5, "contract"] = None
    df.loc[:9, "charges"] = np.nan  # reject, tolerates 10%: 10 of 120 rows pass
    outcome = gate(df, cfg, tmp_path)
    assert outcome.success, outcome.failures
    df.loc[:20, "charges"] = np.nan  # 21 of 120 rows: over the tolerated fraction
    failed = gate(df, cfg, tmp_path)
    assert not failed.success and "charges" in failed.summary_line()
    strict = config(data_quality={"columns": {"senior": {"min": 0, "max": 1}, "age": {"min": 0, "max": 120}}})
    df = frame()
    df.loc[0, "tenure"] = np.nan  # default policy: reject every null
    assert not gate(df, strict, tmp_path).success


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"tenure": {"impute_strategy": "median"}}, "set `missing: impute`"),
        ({"tenure": {"missing": "impute", "impute_strategy": "constant"}}, "fill_value"),
        ({"contract": {"missing": "impute", "impute_strategy": "mean"}}, "is categorical"),
        ({"tenure": {"missing": "impute", "impute_strategy": "constant", "fill_value": "x"}}, "fill it with a number"),
        ({"age": {"missing": "impute"}}, "only features are imputed"),
        ({"tenure": {"missing": "drop"}}, "missing"),
    ],
)
def test_bad_missing_value_policies_are_refused(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(data_quality={"columns": rule})


def test_training_imputes_each_column_as_configured() -> None:
    from sklearn.linear_model import LogisticRegression

    from mlops.model.train import build_pipeline, imputation_groups

    cfg = config()
    assert imputation_groups(cfg) == {
        ("num", "mean", None): ["tenure"],
        ("num", "median", None): ["charges"],
        ("cat", "constant", "unknown"): ["contract"],
    }
    df = frame(40)
    df.loc[:9, "tenure"] = np.nan
    df.loc[:9, "contract"] = np.nan  # what the training set holds for a missing category
    pipeline = build_pipeline(cfg, LogisticRegression()).fit(df[cfg.feature_columns], df["churned"] == "Yes")
    transformer = pipeline.named_steps["features"]
    mean_imputer = transformer.named_transformers_["num_mean"].steps[0][1]
    assert mean_imputer.statistics_[0] == pytest.approx(df["tenure"].mean())
    constant = transformer.named_transformers_[next(n for n in transformer.named_transformers_ if "constant" in n)]
    assert "unknown" in constant.steps[1][1].categories_[0]


# ----------------------------------------------------------------------------------------- drift reference


def test_drift_reference_leaves_out_the_batch_under_test(tmp_path: Path) -> None:
    from mlops.core.storage import LocalStore
    from mlops.quality.steps import drift_reference

    cfg = config()
    days = [frame(100, seed=d).assign(customer_id=lambda f, d=d: f["customer_id"] + 1000 * d) for d in range(3)]
    for d, day in enumerate(days):
        day["event_timestamp"] = pd.to_datetime(day["event_timestamp"], utc=True) + pd.Timedelta(days=d)
    whole = pd.concat(days, ignore_index=True)
    whole.to_parquet(tmp_path / "set.parquet", index=False)
    store = LocalStore(tmp_path)
    reference, rows = drift_reference(store, "set.parquet", cfg, exclude_rows=days[2])
    assert rows == 200 and len(reference) == 200
    assert not reference["event_timestamp"].isin(days[2]["event_timestamp"]).any()
    held_out, rows = drift_reference(store, "set.parquet", cfg, exclude_holdout_days=1, exclude_rows=days[0])
    assert rows == 100 and reference["event_timestamp"].isin(held_out["event_timestamp"]).sum() == 100
    with pytest.raises(ValueError, match="no \\['customer_id'\\] column"):
        drift_reference(store, "set.parquet", cfg, exclude_rows=days[2].drop(columns="customer_id"))


# ----------------------------------------------------------------------------------------- starter config


def test_starter_config_is_inferred_typed_and_checked_against_its_sample() -> None:
    df = frame(300)
    df.loc[:30, "tenure"] = np.nan
    df["notes"] = [f"free text {i}" for i in range(len(df))]
    df["usage"] = np.arange(len(df)) % 7  # not an age: never suggested as a sensitive attribute
    inferred = infer(df)
    assert (inferred.timestamp, inferred.key, inferred.key_dtype) == ("event_timestamp", "customer_id", "int64")
    assert inferred.label == "churned" and inferred.classes == ["No", "Yes"] and inferred.positive == "Yes"
    assert inferred.sensitive == ["age", "senior"] and inferred.groups["age"] == {"type": "numeric", "quantiles": 4}
    assert "notes" in inferred.skipped and "contract" in inferred.categorical
    assert inferred.rules["tenure"]["missing"] == "impute" and "missing" not in inferred.rules["charges"]
    few = df.assign(charges=df["charges"].where(df.index % 50 != 0))  # 6 of 300 nulls: 2%
    assert infer(few).rules["charges"] | {"min": 0, "max": 0} == {
        "min": 0,
        "max": 0,
        "missing": "reject",
        "max_null_fraction": 0.04,
    }
    low, high = df["charges"].min(), df["charges"].max()
    span = high - low
    assert inferred.rules["charges"]["min"] == pytest.approx(low - span / 2, rel=1e-5)
    assert inferred.rules["charges"]["max"] == pytest.approx(high + span / 2, rel=1e-5)
    assert inferred.rules["tenure"]["min"] == 0  # never below 0 for a non-negative column
    text = render("churn", inferred, "sample.csv")
    assert "positive_class: 'Yes'" in text and "REVIEW" in text
    cfg = check_against_sample(text, "churn", df)
    assert cfg.label.positive_class == "Yes" and "senior" in cfg.numeric_columns


def test_starter_config_refuses_what_it_cannot_infer_and_what_fails_its_sample() -> None:
    df = frame(50)
    with pytest.raises(OnboardError, match="no event timestamp"):
        infer(df.drop(columns="event_timestamp"))
    with pytest.raises(OnboardError, match="no entity key"):
        infer(df.assign(customer_id=1))
    with pytest.raises(OnboardError, match="fewer than two classes"):
        infer(df.assign(churned="No"), label="churned")
    text = render("churn", infer(df), "sample.csv").replace("['No', 'Yes']", "['No', 'Yes', 'Maybe']")
    broken = df.assign(charges=-1000.0)
    with pytest.raises(OnboardError, match="fails its own sample"):
        check_against_sample(text, "churn", broken)
