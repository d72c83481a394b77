"""Data tests of the synthetic generators: they must produce batches the model configs accept."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from mlops.core.config import ModelConfig, get_config
from mlops_dev.datagen import GENERATORS, main, write_batches
from mlops_dev.datagen.credit import generate_credit_batch

MODELS_DIR = Path(__file__).resolve().parents[2] / "include" / "models"
MODELS = sorted(GENERATORS)
START = dt.date(2026, 3, 1)
MIN_AUC = {"credit_risk": 0.7, "tumor_diagnosis": 0.9}
# Multiclass and regression examples: held-out macro F1 and R² a plain model reaches.
MIN_SCORE = {"support_ticket": 0.65, "delivery_time": 0.8}
DRIFTED_FEATURE = {
    "credit_risk": "annual_income",
    "tumor_diagnosis": "mean_radius",
    "support_ticket": "message_length",
    "delivery_time": "distance_km",
}
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00$")


def _config(model: str) -> ModelConfig:
    examples = MODELS_DIR / "examples"  # the multiclass and regression examples
    return get_config(model, examples if (examples / f"{model}.yaml").exists() else MODELS_DIR).config


def _days(n: int, start: dt.date = START) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(n)]


def _violations(frame: pd.DataFrame, config: ModelConfig) -> pd.Series:
    """Rows breaking the config's data-quality rules: nulls, out-of-range values, unknown categories."""
    bad = frame[config.all_columns].isna().any(axis=1)
    for column, rule in config.data_quality.columns.items():
        values = frame[column]
        if rule.min is not None:
            bad |= values.notna() & (pd.to_numeric(values, errors="coerce") < rule.min)
        if rule.max is not None:
            bad |= values.notna() & (pd.to_numeric(values, errors="coerce") > rule.max)
        if rule.allowed is not None:
            bad |= values.notna() & ~values.isin(rule.allowed)
    return bad


def _features(frame: pd.DataFrame, config: ModelConfig, categories: dict[str, list[str]]) -> pd.DataFrame:
    x = frame[config.features.numeric].copy()
    for column in config.features.categorical:
        x[column] = frame[column].astype(pd.CategoricalDtype(categories[column]))
    return x


@pytest.mark.parametrize("model", MODELS)
def test_same_arguments_give_identical_batches(model: str) -> None:
    generate = GENERATORS[model]
    first = generate(START, covariate_drift=0.3, bad_rows=4, seed=3)
    again = generate(START, covariate_drift=0.3, bad_rows=4, seed=3)
    pd.testing.assert_frame_equal(first, again)
    assert not generate(START, seed=4).equals(generate(START, seed=3))


def test_credit_day_state_does_not_depend_on_other_days() -> None:
    """Day D straight away equals day D generated after a run of earlier days."""
    alone = generate_credit_batch(START + dt.timedelta(days=40))
    for day in _days(3):
        generate_credit_batch(day)
    pd.testing.assert_frame_equal(alone, generate_credit_batch(START + dt.timedelta(days=40)))


@pytest.mark.parametrize("model", MODELS)
def test_columns_and_dtypes_match_config(model: str) -> None:
    config = _config(model)
    frame = GENERATORS[model](START)
    assert list(frame.columns) == config.all_columns
    key = frame[config.entity.join_key]
    if config.entity.dtype == "int64":
        assert key.dtype == np.int64
    else:
        assert key.map(type).eq(str).all()
    stamp = frame[config.timestamp_column]
    assert isinstance(stamp.dtype, pd.DatetimeTZDtype) and str(stamp.dt.tz) == "UTC"
    assert stamp.dt.date.eq(START).all()
    for column in config.features.numeric:
        assert pd.api.types.is_numeric_dtype(frame[column]), column
    for column in [*config.features.categorical, *config.sensitive_attributes]:
        assert frame[column].map(type).eq(str).all(), column
    label = frame[config.label.column]
    if config.task == "regression":
        assert pd.api.types.is_float_dtype(label) and label.nunique() > 50
    elif config.task == "multiclass":
        assert set(label) == set(config.label.classes or [])
    else:
        assert type(config.label.positive_class) is type(label.tolist()[0])
        assert label.nunique() == 2 and config.label.positive_class in set(label)


@pytest.mark.parametrize("model", MODELS)
def test_clean_batches_satisfy_every_rule(model: str) -> None:
    config = _config(model)
    frame = pd.concat([GENERATORS[model](day) for day in _days(5)], ignore_index=True)
    assert not _violations(frame, config).any()
    for column, rule in config.data_quality.columns.items():
        if rule.allowed is not None:
            assert set(frame[column]) <= set(rule.allowed), column
    assert config.data_quality.min_rows <= len(frame) // 5 <= config.data_quality.max_rows


@pytest.mark.parametrize("model", MODELS)
def test_entity_and_timestamp_unique_across_days(model: str) -> None:
    config = _config(model)
    frame = pd.concat([GENERATORS[model](day) for day in _days(5)], ignore_index=True)
    assert not frame.duplicated([config.entity.join_key, config.timestamp_column]).any()


def test_credit_customers_apply_at_most_once_a_day_and_profiles_evolve() -> None:
    early, late = generate_credit_batch(START), generate_credit_batch(START + dt.timedelta(days=365))
    assert early["customer_id"].is_unique and late["customer_id"].is_unique
    both = early.merge(late, on="customer_id", suffixes=("_early", "_late"))
    assert len(both) > 20
    months = both["credit_history_months_late"] - both["credit_history_months_early"]
    assert months.between(11, 12).all()
    assert (both["age_late"] - both["age_early"]).between(0, 1).all()
    assert not np.allclose(both["annual_income_late"], both["annual_income_early"])


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("bad_rows", [1, 7, 15])
def test_bad_rows_break_rules(model: str, bad_rows: int) -> None:
    config = _config(model)
    clean = GENERATORS[model](START)
    dirty = GENERATORS[model](START, bad_rows=bad_rows)
    assert len(dirty) == len(clean)
    assert int(_violations(dirty, config).sum()) == bad_rows


@pytest.mark.parametrize("model", MODELS)
def test_covariate_drift_moves_feature_means(model: str) -> None:
    column = DRIFTED_FEATURE[model]
    days = _days(3)
    base = pd.concat([GENERATORS[model](d) for d in days])[column].mean()
    drifted = pd.concat([GENERATORS[model](d, covariate_drift=0.8) for d in days])[column].mean()
    assert abs(drifted / base - 1) > 0.1


def test_credit_covariate_drift_raises_utilization_and_debt() -> None:
    base = generate_credit_batch(START)
    drifted = generate_credit_batch(START, covariate_drift=1.0)
    for column in ("credit_utilization", "debt_to_income"):
        assert drifted[column].mean() > base[column].mean() + 0.05, column
    assert (drifted["loan_purpose"] == "debt_consolidation").mean() > (
        base["loan_purpose"] == "debt_consolidation"
    ).mean()


def test_credit_concept_drift_flips_utilization_signal() -> None:
    days = _days(5)
    before = pd.concat([generate_credit_batch(d) for d in days])
    after = pd.concat([generate_credit_batch(d, concept_drift=1.0) for d in days])
    pd.testing.assert_series_equal(before["credit_utilization"], after["credit_utilization"])
    assert before["credit_utilization"].corr(before["defaulted"]) > 0.1
    assert after["credit_utilization"].corr(after["defaulted"]) < -0.05


@pytest.mark.parametrize("model", MODELS)
def test_label_is_learnable_on_later_days(model: str) -> None:
    config = _config(model)
    generate = GENERATORS[model]
    train = pd.concat([generate(d) for d in _days(10)], ignore_index=True)
    test = pd.concat([generate(d) for d in _days(2, START + dt.timedelta(days=10))], ignore_index=True)
    categories = {c: sorted(set(train[c])) for c in config.features.categorical}
    if config.task != "binary":
        _assert_learnable(config, train, test, categories)
        return
    positive = config.label.positive_class
    clf = HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=100, random_state=0)
    with threadpool_limits(1):  # OpenMP threads spin badly on small, shared CI machines
        clf.fit(_features(train, config, categories), train[config.label.column] == positive)
        scores = clf.predict_proba(_features(test, config, categories))[:, 1]
    auc = roc_auc_score(test[config.label.column] == positive, scores)
    print(f"{model}: held-out ROC AUC {auc:.3f}")
    assert auc > MIN_AUC[model], auc


def _assert_learnable(
    config: ModelConfig, train: pd.DataFrame, test: pd.DataFrame, categories: dict[str, list[str]]
) -> None:
    """A plain gradient-boosting model reaches MIN_SCORE (macro F1 or R²) on the later days."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.metrics import f1_score, r2_score

    label = config.label.column
    kwargs = {"categorical_features": "from_dtype", "max_iter": 100, "random_state": 0}
    model = (
        HistGradientBoostingRegressor(**kwargs)
        if config.task == "regression"
        else HistGradientBoostingClassifier(**kwargs)
    )  # type: ignore[arg-type]
    with threadpool_limits(1):
        model.fit(_features(train, config, categories), train[label])
        predicted = model.predict(_features(test, config, categories))
    if config.task == "regression":
        score = r2_score(test[label], predicted)
    else:
        score = f1_score(test[label], predicted, average="macro")
    print(f"{config.name}: held-out {'R²' if config.task == 'regression' else 'macro F1'} {score:.3f}")
    assert score > MIN_SCORE[config.name], score


def test_credit_default_rate_and_label_disparity_are_moderate() -> None:
    frame = pd.concat([generate_credit_batch(d) for d in _days(10)], ignore_index=True)
    assert 0.15 <= frame["defaulted"].mean() <= 0.3
    for attribute in ("gender", "age_band"):
        rates = frame.groupby(attribute)["defaulted"].mean()
        assert rates.max() - rates.min() < 0.2, (attribute, rates.to_dict())


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_write_batches_round_trip(model: str, fmt: str, tmp_path: Path) -> None:
    config = _config(model)
    paths = write_batches(model, tmp_path / "landing", START, 2, fmt=fmt, rows_per_batch=60, bad_rows=2)
    assert [p.name for p in paths] == [f"2026-03-01.{fmt}", f"2026-03-02.{fmt}"]
    expected = GENERATORS[model](START, rows_per_batch=60, bad_rows=2)
    if fmt == "csv":
        key_dtype = config.entity.dtype.replace("string", "str")
        raw = pd.read_csv(paths[0], dtype={config.entity.join_key: key_dtype})
        assert raw[config.timestamp_column].map(lambda s: bool(ISO_UTC.match(s))).all()
        raw[config.timestamp_column] = pd.to_datetime(raw[config.timestamp_column], utc=True)
        # Strings read back from CSV use NaN for missing values, the frame uses None.
        expected = expected.fillna(np.nan)
    else:
        raw = pd.read_parquet(paths[0])
    pd.testing.assert_frame_equal(raw, expected, check_dtype=False, check_exact=False)


def test_write_batches_ramp_and_unknown_knob(tmp_path: Path) -> None:
    paths = write_batches("credit_risk", tmp_path, START, 2, fmt="parquet", ramp=True, covariate_drift=0.8)
    first = pd.read_parquet(paths[0])
    pd.testing.assert_frame_equal(first, generate_credit_batch(START, covariate_drift=0.4), check_dtype=False)
    with pytest.raises(ValueError, match="concept_drift"):
        write_batches("tumor_diagnosis", tmp_path, START, 1, concept_drift=0.5)
    with pytest.raises(ValueError, match="no generator"):
        write_batches("nope", tmp_path, START, 1)


def test_cli_prints_one_line_per_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--model", "tumor_diagnosis", "--landing", str(tmp_path), "--start", "2026-03-01", "--days", "3"]
    assert main([*argv, "--rows", "30", "--bad-rows", "1", "--format", "parquet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [str(tmp_path / f"2026-03-0{i}.parquet") for i in (1, 2, 3)]
    assert len(pd.read_parquet(lines[0])) == 30
