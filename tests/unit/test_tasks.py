"""Multiclass and regression models: config checks, metrics, every gate failing for each task, scoring outputs.

The example configs ``support_ticket`` (multiclass) and ``delivery_time`` (regression) are the base; each
gate is fed the model it must reject (a constant model, a worse challenger, a group with skewed errors)
beside a passing twin, so a failure comes from the planted fault.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops.core.config import ConfigError, ModelConfig, get_config, parse_config
from mlops.model.scoring import prediction_outputs, task_outputs
from mlops.model.train import check_trainable, encode_target, evaluate, model_outputs
from mlops.quality.gates import champion_gate, fairness_gate, quality_gate
from mlops.quality.metrics import (
    TASK_METRICS,
    meets,
    multiclass_metrics,
    regression_metrics,
    task_metrics,
)
from mlops.quality.monitoring import prediction_drift_statistic, prediction_values

MODELS = Path(__file__).resolve().parents[2] / "include" / "models"
EXAMPLES = MODELS / "examples"  # the multiclass and regression examples (not deployed by default)
N = 600
CLASSES = ["low", "medium", "high"]


def _data(model: str) -> dict[str, Any]:
    folder = MODELS if (MODELS / f"{model}.yaml").exists() else EXAMPLES
    data: dict[str, Any] = yaml.safe_load((folder / f"{model}.yaml").read_text())
    return data


def _parse(model: str, data: dict[str, Any]) -> ModelConfig:
    return parse_config(Path(f"{model}.yaml"), data)


@pytest.fixture(scope="module")
def multiclass() -> ModelConfig:
    return get_config("support_ticket", EXAMPLES).config


@pytest.fixture(scope="module")
def regression() -> ModelConfig:
    return get_config("delivery_time", EXAMPLES).config


# ------------------------------------------------------------------------------------------ config


def test_example_configs_have_their_tasks_and_binary_stays_default() -> None:
    from mlops.core.config import check

    assert check(EXAMPLES) == []
    assert get_config("credit_risk", MODELS).config.task == "binary"
    assert get_config("tumor_diagnosis", MODELS).config.task == "binary"
    assert get_config("support_ticket", EXAMPLES).config.task == "multiclass"
    assert get_config("delivery_time", EXAMPLES).config.task == "regression"


def _broken(model: str, edit: Any) -> str:
    data = copy.deepcopy(_data(model))
    edit(data)
    with pytest.raises(ConfigError) as err:
        _parse(model, data)
    return str(err.value)


@pytest.mark.parametrize(
    ("model", "edit", "key", "words"),
    [
        (
            "tumor_diagnosis",
            lambda d: d["training"]["estimator"].update(family="ridge", params={}),
            "training.estimator.family",
            "'ridge' is a regressor; task binary needs a classifier",
        ),
        (
            "delivery_time",
            lambda d: d["training"]["estimator"].update(family="random_forest", params={}),
            "training.estimator.family",
            "task regression needs a regressor",
        ),
        (
            "delivery_time",
            lambda d: d["label"].update(classes=[1, 2, 3]),
            "label.classes",
            "a regression label is a number",
        ),
        (
            "support_ticket",
            lambda d: d["label"].update(classes=["low", "high"]),
            "label.classes",
            "at least three classes, got 2",
        ),
        (
            "support_ticket",
            lambda d: d["label"].update(positive_class="high"),
            "label.positive_class",
            "no positive class",
        ),
        (
            "credit_risk",
            lambda d: d["label"].pop("positive_class"),
            "label.positive_class",
            "required for task binary",
        ),
        (
            "delivery_time",
            lambda d: d["gates"]["quality"].update(min_metrics={"rmse": 5.0}),
            "gates.quality.min_metrics.rmse",
            "error metric (lower is better): set its threshold under gates.quality.max_metrics",
        ),
        (
            "delivery_time",
            lambda d: d["gates"]["quality"].update(min_metrics={"roc_auc": 0.7}),
            "gates.quality.min_metrics.roc_auc",
            "roc_auc is not a regression metric",
        ),
        (
            "support_ticket",
            lambda d: d["gates"]["champion"].update(metric="rmse"),
            "gates.champion.metric",
            "rmse is not a multiclass metric",
        ),
        (
            "delivery_time",
            lambda d: d["gates"]["fairness"].update(metric="selection_rate"),
            "gates.fairness.metric",
            "selection_rate does not apply to task regression",
        ),
        (
            "credit_risk",
            lambda d: d["gates"]["champion"].update(tolerance=2),
            "gates.champion.tolerance",
            "less than or equal to 1: roc_auc lies in 0-1",
        ),
    ],
)
def test_task_mismatches_are_refused_with_the_key(model: str, edit: Any, key: str, words: str) -> None:
    message = _broken(model, edit)
    assert f"key '{key}'" in message and words in message, message


def test_a_task_without_gate_metrics_gets_its_own_defaults() -> None:
    data = copy.deepcopy(_data("delivery_time"))
    data.pop("gates")
    data.pop("monitoring")
    cfg = _parse("delivery_time", data)
    assert dict(cfg.gates.quality.min_metrics) == {"r2": 0.1}
    assert (cfg.gates.champion.metric, cfg.gates.fairness.metric) == ("rmse", "mae")
    data = copy.deepcopy(_data("support_ticket"))
    data["gates"] = {"quality": {"max_metrics": {"log_loss": 1.0}}}
    cfg = _parse("support_ticket", data)
    assert dict(cfg.gates.quality.min_metrics) == {} and dict(cfg.gates.quality.max_metrics) == {"log_loss": 1.0}
    assert (cfg.gates.champion.metric, cfg.gates.fairness.metric) == ("macro_f1", "accuracy")


def test_regression_label_must_be_numeric_at_training(regression: ModelConfig) -> None:
    assert encode_target(pd.Series(["12.5", 30]), regression).tolist() == [12.5, 30.0]
    with pytest.raises(ValueError, match="must be numeric; found 'soon'"):
        encode_target(pd.Series([12.5, "soon"]), regression)
    with pytest.raises(ValueError, match=r"outside label\.classes"):
        encode_target(pd.Series(["low", "urgent"]), get_config("support_ticket", EXAMPLES).config)


def test_a_platform_family_of_the_wrong_kind_is_refused_when_built(regression: ModelConfig) -> None:
    from sklearn.linear_model import Ridge, RidgeClassifier

    from mlops.model.train import check_estimator_kind

    with pytest.raises(ValueError, match="task regression needs a regressor; RidgeClassifier"):
        check_estimator_kind(regression, RidgeClassifier())
    with pytest.raises(ValueError, match="task multiclass needs a classifier; Ridge"):
        check_estimator_kind(get_config("support_ticket", EXAMPLES).config, Ridge())
    check_estimator_kind(regression, Ridge())


def test_multiclass_training_needs_every_class(multiclass: ModelConfig) -> None:
    with pytest.raises(ValueError, match=r"no rows of class\(es\) \['high'\]"):
        check_trainable(multiclass, encode_target(pd.Series(["low", "medium"] * 5), multiclass))
    check_trainable(multiclass, encode_target(pd.Series(CLASSES * 5), multiclass))


# ----------------------------------------------------------------------------------------- metrics


def test_multiclass_metrics_perfect_and_uninformed() -> None:
    y = np.arange(N) % 3
    perfect = np.eye(3)[y] * 0.9 + 0.1 / 3
    good = multiclass_metrics(y, perfect)
    assert good["macro_f1"] == good["accuracy"] == 1.0 and good["roc_auc_ovr"] == 1.0
    flat = multiclass_metrics(y, np.full((N, 3), 1 / 3))
    assert flat["accuracy"] == pytest.approx(1 / 3) and flat["roc_auc_ovr"] == 0.5
    assert flat["log_loss"] == pytest.approx(math.log(3)) and good["log_loss"] < flat["log_loss"]
    assert math.isnan(multiclass_metrics(y[y < 2], perfect[y < 2])["roc_auc_ovr"])  # a class never occurs
    with pytest.raises(ValueError, match="one probability column per class"):
        multiclass_metrics(y, perfect[:, :2])


def test_regression_metrics_and_directions() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = regression_metrics(y, y + np.array([1.0, -1.0, 1.0, -1.0]))
    assert m["rmse"] == 1.0 and m["mae"] == 1.0 and m["r2"] == pytest.approx(1 - 4 / 5)
    assert math.isnan(regression_metrics([2.0, 2.0], [2.0, 2.0])["r2"])
    assert meets("rmse", 1.0, 1.5) and not meets("rmse", 2.0, 1.5)
    assert meets("r2", 0.8, 0.5) and not meets("r2", float("nan"), 0.5)
    assert set(task_metrics("regression", y, y)) == set(TASK_METRICS["regression"])
    with pytest.raises(ValueError, match="unknown task"):
        task_metrics("ranking", y, y)


# ------------------------------------------------------------------------------------------ holdouts


def _ticket_holdout(seed: int, skew_group: str | None = None) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    """Regions, true priorities and a good model's class probabilities; ``skew_group`` gets random ones."""
    rng = np.random.default_rng(seed)
    region = rng.choice(["emea", "amer", "apac"], N)
    y = rng.integers(0, 3, N)
    hit = rng.random(N) < 0.85
    predicted = np.where(hit, y, (y + 1) % 3)
    if skew_group is not None:
        mask = region == skew_group
        predicted[mask] = rng.integers(0, 3, int(mask.sum()))
    proba = np.full((N, 3), 0.1)
    proba[np.arange(N), predicted] = 0.8
    labels = pd.Series(np.asarray(CLASSES, dtype=object)[y])
    return pd.DataFrame({"region": region}), labels, proba


def _delivery_holdout(seed: int, skew_group: str | None = None) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    rng = np.random.default_rng(seed)
    zone = rng.choice(["north", "south", "center"], N)
    y = rng.uniform(15, 90, N)
    predicted = y + rng.normal(0, 3, N)
    if skew_group is not None:
        mask = zone == skew_group
        predicted[mask] += rng.normal(0, 12, int(mask.sum()))
    return pd.DataFrame({"zone": zone}), pd.Series(y), predicted


HOLDOUTS = {"multiclass": _ticket_holdout, "regression": _delivery_holdout}


def _cfg(task: str, multiclass: ModelConfig, regression: ModelConfig) -> ModelConfig:
    return multiclass if task == "multiclass" else regression


def _constant(task: str, labels: pd.Series) -> np.ndarray:
    if task == "multiclass":
        return np.tile([0.5, 0.3, 0.2], (len(labels), 1))  # always "low"
    return np.full(len(labels), float(np.mean(labels)))  # always the mean


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_quality_gate_fails_a_constant_model(
    task: str, multiclass: ModelConfig, regression: ModelConfig, tmp_path: Path
) -> None:
    cfg = _cfg(task, multiclass, regression)
    holdout, labels, outputs = HOLDOUTS[task](1)
    good = quality_gate(holdout, labels, outputs, cfg, tmp_path / "good.html")
    assert good.passed, good.summary
    bad = quality_gate(holdout, labels, _constant(task, labels), cfg, tmp_path / "bad.html")
    assert not bad.passed and bad.summary.startswith("quality gate failed")
    first = "macro_f1" if task == "multiclass" else "r2"
    assert first in bad.details["failing"], bad.summary
    assert "FAIL" in (tmp_path / "bad.html").read_text()
    with pytest.raises(ValueError, match="outputs must be"):
        quality_gate(
            holdout, labels, outputs[:, 0] if task == "multiclass" else outputs[:, None], cfg, tmp_path / "x.html"
        )


def test_regression_quality_gate_fails_on_an_error_metric_alone(regression: ModelConfig, tmp_path: Path) -> None:
    holdout, labels, outputs = _delivery_holdout(2)
    shifted = outputs + 7.0  # still correlated (R² stays high enough) but every delivery off by 7 minutes
    result = quality_gate(holdout, labels, shifted, regression, tmp_path / "q.html")
    assert not result.passed and "mae" in result.details["failing"] and "> max" in result.summary


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_champion_gate_fails_a_worse_challenger(
    task: str, multiclass: ModelConfig, regression: ModelConfig, tmp_path: Path
) -> None:
    cfg = _cfg(task, multiclass, regression)
    _, labels, outputs = HOLDOUTS[task](3)
    _, _, worse_outputs = HOLDOUTS[task](3, skew_group="emea" if task == "multiclass" else "north")
    metric = cfg.gates.champion.metric
    champion = evaluate(cfg, labels, outputs)[metric]
    worse = evaluate(cfg, labels, worse_outputs)[metric]
    failed = champion_gate(worse, champion, cfg, tmp_path / "c1.html", champion_version="1")
    assert not failed.passed and failed.summary.startswith("champion gate failed"), failed.summary
    passed = champion_gate(champion, worse, cfg, tmp_path / "c2.html", champion_version="1")
    assert passed.passed, passed.summary
    if task == "regression":  # lower is better: a higher RMSE within the tolerance still passes
        assert failed.details["lower_is_better"] and "+ tolerance" in failed.summary
        near = champion_gate(champion + 0.4, champion, cfg, tmp_path / "c3.html", champion_version="1")
        assert near.passed and near.metrics["required"] == pytest.approx(champion + 0.5)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_fairness_gate_fails_skewed_group_errors(
    task: str, multiclass: ModelConfig, regression: ModelConfig, tmp_path: Path
) -> None:
    cfg = _cfg(task, multiclass, regression)
    attr = cfg.sensitive_attributes[0]
    group = "emea" if task == "multiclass" else "north"
    holdout, labels, outputs = HOLDOUTS[task](4)
    even = fairness_gate(holdout, labels, outputs, cfg, tmp_path / "even.html")
    assert even.passed, even.summary
    holdout, labels, outputs = HOLDOUTS[task](4, skew_group=group)
    skewed = fairness_gate(holdout, labels, outputs, cfg, tmp_path / "skewed.html")
    assert not skewed.passed, skewed.summary
    info = skewed.details["attributes"][attr]
    worst = info["lowest"] if task == "multiclass" else info["highest"]  # lowest accuracy / highest MAE
    assert worst == group and info["disparity"] > cfg.gates.fairness.max_disparity
    assert f"group.{attr}.{group}.{cfg.gates.fairness.metric}" in skewed.metrics
    assert group in (tmp_path / "skewed.html").read_text()


def test_fairness_gate_cannot_pass_on_one_measurable_group(regression: ModelConfig, tmp_path: Path) -> None:
    holdout, labels, outputs = _delivery_holdout(5)
    holdout["zone"] = np.where(np.arange(N) < N - 10, "north", "south")
    result = fairness_gate(holdout, labels, outputs, regression, tmp_path / "f.html")
    assert not result.passed and "cannot measure zone" in result.summary


# ------------------------------------------------------------------------------------------ scoring


def test_binary_scoring_columns_are_unchanged() -> None:
    credit = get_config("credit_risk", MODELS).config
    columns = task_outputs(credit, np.array([0.2, 0.7]))
    assert list(columns) == ["score", "prediction"]
    assert columns["prediction"].tolist() == [0, 1] and columns["prediction"].dtype == np.int64


def test_multiclass_scoring_has_a_probability_per_class(multiclass: ModelConfig) -> None:
    outputs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    columns = task_outputs(multiclass, outputs)
    assert list(columns) == ["proba_low", "proba_medium", "proba_high", "prediction", "score"]
    assert list(columns["prediction"]) == ["low", "high"] and list(columns["score"]) == [0.7, 0.6]
    frame = pd.DataFrame(columns)
    np.testing.assert_array_equal(prediction_outputs(multiclass, frame), outputs)


def test_regression_scoring_outputs_the_value(regression: ModelConfig) -> None:
    columns = task_outputs(regression, np.array([31.5, 12.0]))
    assert list(columns["prediction"]) == [31.5, 12.0] and list(columns["score"]) == [31.5, 12.0]


def test_model_outputs_follow_config_class_order(multiclass: ModelConfig) -> None:
    class Fitted:
        classes_ = np.array([0, 2, 1])  # the estimator's own order

        def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
            return np.tile([0.5, 0.3, 0.2], (len(frame), 1))

    out = model_outputs(multiclass, Fitted(), pd.DataFrame({"x": [1, 2]}))
    np.testing.assert_array_equal(out[0], [0.5, 0.2, 0.3])


# ------------------------------------------------------------------------------------------ monitoring


def test_prediction_drift_per_task(multiclass: ModelConfig, regression: ModelConfig) -> None:
    same = np.tile([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]], (50, 1))
    ref = prediction_values(multiclass, same)
    assert prediction_drift_statistic(multiclass, ref, ref) == 0.0
    shifted = np.zeros(150)  # every ticket predicted low now
    assert prediction_drift_statistic(multiclass, ref, shifted) == pytest.approx(2 / 3)
    rng = np.random.default_rng(0)
    values = rng.normal(40, 5, 500)
    assert prediction_drift_statistic(regression, values, values + 20) > 0.9
    assert math.isnan(prediction_drift_statistic(regression, values, np.array([])))


def test_live_quality_breach_for_an_error_metric(regression: ModelConfig) -> None:
    from mlops.quality.monitoring import _judge_quality

    rng = np.random.default_rng(1)
    truth = rng.uniform(15, 90, 200)
    good = pd.DataFrame({"delivery_minutes": truth, "score": truth + rng.normal(0, 2, 200)})
    quality, breaches, n = _judge_quality(good, regression)
    assert n == 200 and quality is not None and quality["mae"] < 8 and breaches == []
    bad = good.assign(score=truth + 15)
    quality, breaches, _ = _judge_quality(bad, regression)
    assert breaches and breaches[0].startswith("mae 15") and "> 8" in breaches[0]


def test_data_gate_quarantines_a_regression_label_that_is_not_numeric(regression: ModelConfig, tmp_path: Path) -> None:
    from datetime import UTC, date, datetime, timedelta

    from mlops.data.validate import read_batch, validate_batch
    from mlops_dev.datagen import generate_delivery_batch

    start = datetime(2026, 3, 4, tzinfo=UTC)
    frame = generate_delivery_batch(date(2026, 3, 4), rows_per_batch=80)

    def run(batch: pd.DataFrame, name: str) -> Any:
        data = read_batch(batch.to_csv(index=False).encode(), "csv", name=f"{name}.csv", cfg=regression)
        return validate_batch(
            data,
            regression,
            batch_id=name,
            interval_start=start,
            interval_end=start + timedelta(days=1),
            gx_root=tmp_path / "gx",
            report_path=tmp_path / f"{name}.html",
        )

    assert run(frame, "clean").success
    frame["delivery_minutes"] = frame["delivery_minutes"].astype(object)
    frame.loc[3, "delivery_minutes"] = "soon"
    outcome = run(frame, "dirty")
    assert not outcome.success
    line = next(f for f in outcome.failures if f.startswith("delivery_minutes: numeric type"))
    assert "'soon'" in line
