"""Every gate can fail, whatever the label type: integer, string and boolean labels.

For each gate and each label type a model (or data) that must be rejected is fed in, and the test asserts
the failure and its one-line reason; a passing twin shows the rejection comes from the planted fault. The
fairness gate once compared 0/1 predictions with a string positive class, found no positive anywhere and
passed every model: ``test_fairness_gate_fails_a_skewed_model`` guards that for every label type.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.core.config import LabelConfig, ModelConfig, get_config
from mlops.core.labels import binary_target, positive_mask
from mlops.model.train import classification_metrics
from mlops.quality.gates import champion_gate, drift_gate, fairness_gate, quality_gate

MODELS = Path(__file__).resolve().parents[2] / "include" / "models"
N = 600

# label type -> (positive class, negative class, classes in the config)
LABEL_TYPES: dict[str, tuple[object, object]] = {
    "integer": (1, 0),
    "string": ("bad", "good"),
    "boolean": (True, False),
}


@pytest.fixture(scope="module")
def credit() -> ModelConfig:
    return get_config("credit_risk", MODELS).config


def _cfg(credit: ModelConfig, label_type: str) -> ModelConfig:
    positive, negative = LABEL_TYPES[label_type]
    label = LabelConfig(column="defaulted", positive_class=positive, classes=[negative, positive])  # type: ignore[arg-type]
    return credit.model_copy(update={"label": label})


def _labels(label_type: str, y01: np.ndarray) -> pd.Series:
    """The 0/1 truth in the label type's own values and dtype (as a validated batch holds them)."""
    positive, negative = LABEL_TYPES[label_type]
    if label_type == "boolean":
        return pd.Series(y01.astype(bool))
    if label_type == "integer":
        return pd.Series(y01.astype("int64"))
    return pd.Series(np.where(y01 == 1, positive, negative).astype(object))


def _holdout(seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Sensitive attributes, a 0/1 truth, and a good model's probabilities (same rate in every group)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "gender": rng.choice(["female", "male"], N),
            "age_band": rng.choice(["18-29", "30-49", "50+"], N),
        }
    )
    y01 = (rng.random(N) < 0.35).astype(int)
    proba = np.clip(np.where(y01 == 1, 0.75, 0.25) + rng.normal(0, 0.12, N), 0, 1)
    return frame, y01, proba


@pytest.mark.parametrize("label_type", LABEL_TYPES)
def test_positive_mask_reads_every_label_type(label_type: str) -> None:
    positive, _ = LABEL_TYPES[label_type]
    y01 = np.array([1, 0, 1, 1, 0])
    labels = _labels(label_type, y01)
    assert positive_mask(labels, positive).tolist() == [True, False, True, True, False]  # type: ignore[arg-type]
    # The same labels read back as text (a CSV) still match.
    assert positive_mask(labels.astype(str), positive).tolist() == [True, False, True, True, False]  # type: ignore[arg-type]
    assert binary_target(labels, positive).tolist() == y01.tolist()  # type: ignore[arg-type]
    assert not positive_mask(pd.Series([None, np.nan], dtype=object), positive).any()  # type: ignore[arg-type]


def test_positive_mask_does_not_confuse_classes() -> None:
    assert positive_mask(pd.Series(["benign", "malignant"]), "malignant").tolist() == [False, True]
    assert positive_mask(pd.Series([0, 1, 2]), 2).tolist() == [False, False, True]
    assert positive_mask(pd.Series(["0", "1"]), 1).tolist() == [False, True]
    assert positive_mask(pd.Series([True, False]), False).tolist() == [False, True]
    assert positive_mask(pd.Series(["yes", "no"]), True).tolist() == [False, False]  # no boolean reading: no match


@pytest.mark.parametrize("label_type", LABEL_TYPES)
def test_quality_gate_fails_a_random_model(label_type: str, credit: ModelConfig, tmp_path: Path) -> None:
    cfg = _cfg(credit, label_type)
    frame, y01, proba = _holdout(1)
    labels = _labels(label_type, y01)
    good = quality_gate(frame, labels, proba, cfg, tmp_path / "good.html")
    assert good.passed, good.summary
    assert good.metrics["roc_auc"] > 0.9 and good.metrics["positive_rate"] == pytest.approx(y01.mean())
    random = np.random.default_rng(2).random(N)
    bad = quality_gate(frame, labels, random, cfg, tmp_path / "bad.html")
    assert not bad.passed
    assert bad.summary.startswith("quality gate failed: roc_auc 0.") and "< min 0.700" in bad.summary
    assert "\n" not in bad.summary


@pytest.mark.parametrize("label_type", LABEL_TYPES)
def test_fairness_gate_fails_a_skewed_model(label_type: str, credit: ModelConfig, tmp_path: Path) -> None:
    cfg = _cfg(credit, label_type)
    frame, y01, proba = _holdout(3)
    labels = _labels(label_type, y01)
    fair = fairness_gate(frame, labels, proba, cfg, tmp_path / "fair.html")
    assert fair.passed, fair.summary
    assert 0.2 < fair.metrics["predicted_positive_rate"] < 0.5  # the gate saw positives: it measured something
    skewed = np.where(frame["gender"] == "female", np.maximum(proba, 0.9), proba)  # every woman selected
    result = fairness_gate(frame, labels, skewed, cfg, tmp_path / "skewed.html")
    assert not result.passed
    assert result.summary.startswith("fairness gate failed: gender selection_rate disparity")
    assert "female 1.000" in result.summary and "\n" not in result.summary
    assert result.metrics["group.gender.female.selection_rate"] == pytest.approx(1.0)


@pytest.mark.parametrize("label_type", LABEL_TYPES)
def test_fairness_gate_fails_on_unequal_true_positive_rates(
    label_type: str, credit: ModelConfig, tmp_path: Path
) -> None:
    base = _cfg(credit, label_type)
    cfg = base.model_copy(
        update={
            "gates": base.gates.model_copy(
                update={"fairness": base.gates.fairness.model_copy(update={"metric": "true_positive_rate"})}
            )
        }
    )
    frame, y01, proba = _holdout(4)
    labels = _labels(label_type, y01)
    missed = np.where(frame["age_band"] == "50+", 0.05, proba)  # the model never finds a positive over 50
    result = fairness_gate(frame, labels, missed, cfg, tmp_path / "tpr.html")
    assert not result.passed
    assert "age_band true_positive_rate disparity" in result.summary
    assert result.metrics["group.age_band.50_.true_positive_rate"] == pytest.approx(0.0)


@pytest.mark.parametrize("label_type", LABEL_TYPES)
def test_fairness_gate_that_cannot_measure_fails_and_says_why(
    label_type: str, credit: ModelConfig, tmp_path: Path
) -> None:
    cfg = _cfg(credit, label_type)
    frame, y01, _ = _holdout(5)
    labels = _labels(label_type, y01)
    nothing = fairness_gate(frame, labels, np.full(N, 0.1), cfg, tmp_path / "none.html")
    assert not nothing.passed
    assert "cannot measure selection_rate: the model predicts no positive on the 600 holdout rows" in nothing.summary
    everything = fairness_gate(frame, labels, np.full(N, 0.9), cfg, tmp_path / "all.html")
    assert not everything.passed and "predicts every one of the 600 holdout rows positive" in everything.summary
    tiny = cfg.model_copy(
        update={
            "gates": cfg.gates.model_copy(
                update={"fairness": cfg.gates.fairness.model_copy(update={"min_group_size": 400})}
            )
        }
    )
    _, _, proba = _holdout(5)
    small = fairness_gate(frame, labels, proba, tiny, tmp_path / "small.html")
    assert not small.passed
    assert "cannot measure gender: 0 group(s) with >= 400 rows" in small.summary
    assert 'data-verdict="FAIL"' in small.report_html.read_text()


def test_the_decision_threshold_is_the_configs(credit: ModelConfig, tmp_path: Path) -> None:
    """The gates predict positive at ``label.decision_threshold``: moving it changes the verdict."""
    frame, y01, proba = _holdout(1)
    labels = _labels("integer", y01)
    base = _cfg(credit, "integer")
    cfg = base.model_copy(update={"label": base.label.model_copy(update={"decision_threshold": 0.999})})
    strict = quality_gate(frame, labels, proba, cfg, tmp_path / "strict.html")
    default = quality_gate(frame, labels, proba, base, tmp_path / "default.html")
    assert strict.metrics["decision_threshold"] == 0.999 and default.metrics["decision_threshold"] == 0.5
    assert strict.metrics["recall"] < default.metrics["recall"]
    blind = fairness_gate(frame, labels, proba, cfg, tmp_path / "blind.html")
    assert blind.metrics["decision_threshold"] == 0.999
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match="decision_threshold"):
            base.label.model_validate({**base.label.model_dump(), "decision_threshold": bad})


@pytest.mark.parametrize("label_type", LABEL_TYPES)
def test_champion_gate_fails_a_worse_challenger(label_type: str, credit: ModelConfig, tmp_path: Path) -> None:
    cfg = _cfg(credit, label_type)
    _, y01, proba = _holdout(6)
    y = binary_target(_labels(label_type, y01), cfg.label.positive_class).to_numpy()  # type: ignore[arg-type]
    champion = classification_metrics(y, proba, cfg)["roc_auc"]
    noisy = np.clip(proba + np.random.default_rng(7).normal(0, 0.5, N), 0, 1)
    challenger = classification_metrics(y, noisy, cfg)["roc_auc"]
    assert champion > 0.9 and challenger < champion - 0.1  # measured on real positives, not an undefined AUC
    result = champion_gate(challenger, champion, cfg, tmp_path / "c.html", champion_version="3")
    assert not result.passed
    assert result.summary.startswith("champion gate failed: roc_auc 0.") and "champion v3" in result.summary
    same = champion_gate(champion, champion, cfg, tmp_path / "same.html", champion_version="3")
    assert same.passed, same.summary


@pytest.mark.parametrize("label_type", LABEL_TYPES)
def test_drift_gate_fails_a_shifted_batch(label_type: str, credit: ModelConfig, tmp_path: Path) -> None:
    cfg = _cfg(credit, label_type)
    rng = np.random.default_rng(8)
    reference = pd.DataFrame({c: rng.normal(50, 10, 800) for c in cfg.features.numeric})
    for col in cfg.features.categorical:
        reference[col] = rng.choice(["a", "b", "c"], 800, p=[0.6, 0.3, 0.1])
    current = reference.sample(frac=1.0, random_state=1).reset_index(drop=True)
    for col in cfg.features.numeric:
        current[col] = current[col] + 25
    result = drift_gate(reference, current, cfg, tmp_path / "drift.html")
    assert not result.passed
    assert result.summary.startswith("drift gate failed: 9 of 12 features drifted")
    same = drift_gate(reference, reference.sample(frac=1.0, random_state=2), cfg, tmp_path / "same.html")
    assert same.passed, same.summary
