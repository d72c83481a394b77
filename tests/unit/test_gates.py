"""The four model gates on small synthetic data: verdicts, summaries, metrics and report files."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlops.core.config import ModelConfig, get_config
from mlops.quality.gates import (
    DriftBaseline,
    GateResult,
    champion_gate,
    drift_gate,
    fairness_gate,
    feature_distance,
    quality_gate,
    write_html,
)

MODELS = Path(__file__).resolve().parents[2] / "include" / "models"


@pytest.fixture(scope="module")
def credit() -> ModelConfig:
    return get_config("credit_risk", MODELS).config


@pytest.fixture(scope="module")
def tumor() -> ModelConfig:
    return get_config("tumor_diagnosis", MODELS).config


def _features(cfg: ModelConfig, n: int, seed: int, shifted: list[str] | None = None) -> pd.DataFrame:
    """Credit-like features; columns in ``shifted`` move by one standard deviation / change mix."""
    rng = np.random.default_rng(seed)
    shifted = shifted or []
    data: dict[str, object] = {}
    for col in cfg.features.numeric:
        data[col] = rng.normal(1.0 if col in shifted else 0.0, 1.0, n) * 10 + 50
    for col in cfg.features.categorical:
        probs = [0.15, 0.25, 0.6] if col in shifted else [0.6, 0.25, 0.15]
        data[col] = rng.choice(["a", "b", "c"], n, p=probs)
    return pd.DataFrame(data)


def _assert_report(result: GateResult, verdict: str) -> str:
    """The report exists, is real standalone HTML and shows the verdict and the summary."""
    assert result.report_html.exists()
    page = result.report_html.read_text(encoding="utf-8")
    assert len(page) > 1000
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert f'data-verdict="{verdict}"' in page
    assert result.summary.split(":")[0] in page
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"?https?:", page), "report needs the network"
    json.dumps(result.to_dict())
    return page


# ---------------------------------------------------------------------------------------------- drift


def test_drift_gate_passes_on_same_distribution(credit: ModelConfig, tmp_path: Path) -> None:
    ref, cur = _features(credit, 1500, 1), _features(credit, 1500, 2)
    result = drift_gate(ref, cur, credit, tmp_path / "drift.html")
    assert result.passed and not result.skipped, result.summary
    assert result.summary.startswith("drift gate passed")
    assert result.metrics["columns"] == 12
    assert result.metrics["drifted_share"] <= credit.gates.drift.max_drifted_share
    assert set(result.details["scores"]) == set(credit.feature_columns)
    assert result.metrics["rows_reference_used"] == 1500 and result.metrics["sampled"] == 0
    _assert_report(result, "PASS")
    saved = json.loads((tmp_path / "drift.json").read_text())
    assert saved["gate"]["passed"] is True and saved["evidently"]["metrics"]


def test_drift_gate_fails_on_planted_shift(credit: ModelConfig, tmp_path: Path) -> None:
    shifted = [*credit.features.numeric[:6], *credit.features.categorical[:2]]  # 8 of 12
    ref, cur = _features(credit, 1500, 1), _features(credit, 1500, 2, shifted)
    result = drift_gate(ref, cur, credit, tmp_path / "drift.html")
    assert not result.passed
    assert set(shifted) <= set(result.details["drifted_columns"])
    assert result.metrics["drifted_count"] == len(result.details["drifted_columns"])
    share = result.metrics["drifted_share"]
    assert share > 0.5
    assert f"share {share:.2f} > max 0.50" in result.summary
    assert result.summary.startswith(f"drift gate failed: {int(result.metrics['drifted_count'])} of 12")
    assert shifted[0] in result.summary
    _assert_report(result, "FAIL")


def test_feature_distance_is_zero_for_the_same_rows_and_grows_with_the_shift(credit: ModelConfig) -> None:
    shifted = [*credit.features.numeric[:6], *credit.features.categorical[:2]]
    old, new = _features(credit, 1500, 1), _features(credit, 1500, 2, shifted)
    half = pd.concat([_features(credit, 750, 3), _features(credit, 750, 4, shifted)], ignore_index=True)
    assert feature_distance(old, old, credit) == 0.0
    same, mixed, far = (feature_distance(ref, new, credit) for ref in (_features(credit, 1500, 5, shifted), half, old))
    assert same < mixed < far, (same, mixed, far)


def test_drift_over_the_limit_passes_only_when_closer_than_the_champion(credit: ModelConfig, tmp_path: Path) -> None:
    """A retrain after drift: its window reaches the new data, the champion's does not."""
    shifted = [*credit.features.numeric[:6], *credit.features.categorical[:2]]
    old, cur = _features(credit, 1500, 1), _features(credit, 1500, 2, shifted)
    retrain = pd.concat([_features(credit, 1000, 3), _features(credit, 500, 4, shifted)], ignore_index=True)
    champion = DriftBaseline("3", feature_distance(old, cur, credit))
    calls: list[str] = []

    def baseline(found: DriftBaseline | None = champion) -> Callable[[], DriftBaseline | None]:
        def call() -> DriftBaseline | None:
            calls.append("called")
            return found

        return call

    closer = drift_gate(retrain, cur, credit, tmp_path / "closer.html", baseline=baseline())
    assert closer.passed and calls == ["called"], closer.summary
    assert closer.metrics["drifted_share"] > 0.5  # over the limit: only the champion comparison passes it
    assert closer.metrics["feature_distance"] <= 0.9 * closer.metrics["champion_feature_distance"]
    assert "> max 0.50), but closer to this batch than champion v3's training data" in closer.summary
    _assert_report(closer, "PASS")

    # The champion's own window again (no closer), or an older one: fails, and says what it compared.
    for ref in (old, _features(credit, 1500, 6)):
        same = drift_gate(ref, cur, credit, tmp_path / "same.html", baseline=baseline())
        assert not same.passed, same.summary
        assert "and not closer to this batch than champion v3's training data" in same.summary
    # No champion to compare with: the share alone decides.
    assert not drift_gate(retrain, cur, credit, tmp_path / "none.html", baseline=baseline(None)).passed
    # Within the limit the champion is never read; with the margin unset it is never read either.
    calls.clear()
    assert drift_gate(
        _features(credit, 1500, 7), _features(credit, 1500, 8), credit, tmp_path / "w.html", baseline=baseline()
    ).passed
    drift = credit.gates.drift.model_copy(update={"champion_margin": None})
    strict = credit.model_copy(update={"gates": credit.gates.model_copy(update={"drift": drift})})
    assert not drift_gate(retrain, cur, strict, tmp_path / "strict.html", baseline=baseline()).passed
    assert calls == []


def test_drift_gate_sampling_still_detects_shift(credit: ModelConfig, tmp_path: Path) -> None:
    shifted = credit.feature_columns[:9]
    ref, cur = _features(credit, 3000, 3), _features(credit, 2500, 4, shifted)
    result = drift_gate(ref, cur, credit, tmp_path / "drift.html", max_rows=400, seed=7)
    assert not result.passed, result.summary
    assert result.metrics["rows_reference_used"] == 400 and result.metrics["rows_current_used"] == 400
    assert result.metrics["rows_reference"] == 3000 and result.metrics["sampled"] == 1
    assert "sampled 400 of 3000 reference rows and 400 of 2500 current rows" in result.summary


def _training_set(cfg: ModelConfig, path: Path, days: int, per_day: int) -> pd.DataFrame:
    """A training-set-like parquet in row groups of 1,000 rows, rows not in timestamp order."""
    frame = _features(cfg, days * per_day, 11)
    start = pd.Timestamp("2026-03-01", tz="UTC")
    stamps = [start + pd.Timedelta(days=d, seconds=s) for d in range(days) for s in range(per_day)]
    frame[cfg.timestamp_column] = pd.Series(stamps).sample(frac=1.0, random_state=3).to_numpy()
    frame[cfg.label.column] = np.arange(len(frame)) % 2
    frame["row"] = np.arange(len(frame))  # not a feature: not read
    frame.to_parquet(path, index=False, row_group_size=1000)
    return frame


def test_drift_reference_samples_row_groups_without_loading_the_set(credit: ModelConfig, tmp_path: Path) -> None:
    from mlops.core.storage import LocalStore
    from mlops.model.train import time_split
    from mlops.quality.steps import drift_reference

    frame = _training_set(credit, tmp_path / "set.parquet", days=5, per_day=1200)  # 6 row groups
    store, ts = LocalStore(tmp_path), credit.timestamp_column
    key_of = [*credit.feature_columns, ts]

    whole, rows = drift_reference(store, "set.parquet", credit, max_rows=10_000)
    assert rows == len(frame) == len(whole) and list(whole.columns) == key_of
    pd.testing.assert_frame_equal(whole, frame[key_of])  # small sets: every row, in file order

    sample, rows = drift_reference(store, "set.parquet", credit, max_rows=2500, seed=4)
    assert rows == 6000 and len(sample) == 2500
    # Every sampled row is a real row of the set (timestamps are unique), each at most once, from
    # every row group, and the same seed draws the same rows while another seed does not.
    by_ts = frame.set_index(ts)
    assert sample[ts].is_unique and sample[ts].isin(frame[ts]).all()
    pd.testing.assert_frame_equal(
        sample[credit.feature_columns], by_ts.loc[sample[ts], credit.feature_columns].reset_index(drop=True)
    )
    groups = pd.Series(frame.index[frame[ts].isin(sample[ts])] // 1000).nunique()
    assert groups == 6
    again, _ = drift_reference(store, "set.parquet", credit, max_rows=2500, seed=4)
    other, _ = drift_reference(store, "set.parquet", credit, max_rows=2500, seed=5)
    pd.testing.assert_frame_equal(sample, again)
    assert not sample[ts].equals(other[ts])

    # Without the holdout: exactly the rows time_split trains on, sampled or not.
    train, _ = time_split(frame, credit, 2)
    kept, rows = drift_reference(store, "set.parquet", credit, exclude_holdout_days=2, max_rows=10_000)
    assert rows == len(train) == 3600
    assert set(kept[ts]) == set(train[ts])
    kept, rows = drift_reference(store, "set.parquet", credit, exclude_holdout_days=2, max_rows=1000)
    assert rows == 3600 and len(kept) == 1000 and kept[ts].isin(train[ts]).all()
    frame.drop(columns=[ts]).to_parquet(tmp_path / "no_ts.parquet", index=False)
    with pytest.raises(ValueError, match=f"no_ts.parquet has no timestamp column '{ts}'"):
        drift_reference(store, "no_ts.parquet", credit, exclude_holdout_days=2)


def test_drift_gate_reports_the_rows_a_presampled_reference_came_from(credit: ModelConfig, tmp_path: Path) -> None:
    ref, cur = _features(credit, 400, 3), _features(credit, 300, 4)
    result = drift_gate(ref, cur, credit, tmp_path / "drift.html", reference_rows=5000)
    assert result.metrics["rows_reference"] == 5000 and result.metrics["rows_reference_used"] == 400
    assert result.metrics["sampled"] == 1 and "sampled 400 of 5000 reference rows" in result.summary


def test_drift_gate_names_missing_columns(credit: ModelConfig, tmp_path: Path) -> None:
    ref = _features(credit, 50, 1)
    with pytest.raises(ValueError, match="age"):
        drift_gate(ref, ref.drop(columns=["age"]), credit, tmp_path / "drift.html")


# -------------------------------------------------------------------------------------------- quality


def _labels_and_scores(n: int, seed: int, signal: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    proba = np.clip(signal * y + (1 - signal) * rng.random(n) + rng.normal(0, 0.1, n), 0, 1)
    return y, proba


def test_quality_gate_passes_good_predictor(credit: ModelConfig, tmp_path: Path) -> None:
    y, proba = _labels_and_scores(600, 0, signal=0.4)
    holdout = _features(credit, 600, 0)
    result = quality_gate(holdout, pd.Series(y), proba, credit, tmp_path / "quality.html")
    assert result.passed, result.summary
    assert result.metrics["roc_auc"] == pytest.approx(roc_auc_score(y, proba))
    assert {"roc_auc", "accuracy", "f1", "precision", "recall"} <= set(result.metrics)
    assert "roc_auc" in result.summary and ">= 0.700" in result.summary
    _assert_report(result, "PASS")


def test_quality_gate_fails_random_predictor(credit: ModelConfig, tmp_path: Path) -> None:
    y, _ = _labels_and_scores(600, 1, signal=0.4)
    proba = np.random.default_rng(9).random(600)
    result = quality_gate(_features(credit, 600, 1), pd.Series(y), proba, credit, tmp_path / "q.html")
    assert not result.passed
    assert result.summary.startswith("quality gate failed: roc_auc 0.")
    assert "< min 0.700" in result.summary
    assert "roc_auc" in result.details["failing"]
    _assert_report(result, "FAIL")


def test_quality_gate_string_positive_class(tumor: ModelConfig, tmp_path: Path) -> None:
    y, proba = _labels_and_scores(400, 2, signal=0.5)
    labels = pd.Series(np.where(y == 1, "malignant", "benign"))
    holdout = pd.DataFrame({c: np.random.default_rng(2).normal(size=400) for c in tumor.features.numeric})
    holdout["imaging_device"] = "vendor_a"
    good = quality_gate(holdout, labels, proba, tumor, tmp_path / "good.html")
    assert good.passed, good.summary
    assert good.metrics["roc_auc"] == pytest.approx(roc_auc_score(y, proba))
    assert "evidently_error" not in good.details
    _assert_report(good, "PASS")
    # the probability of "benign" is not the probability of the positive class: the gate must notice
    flipped = quality_gate(holdout, labels, 1 - proba, tumor, tmp_path / "flipped.html")
    assert not flipped.passed and "roc_auc" in flipped.summary and "f1" in flipped.summary


def test_quality_gate_one_class_holdout_fails_readably(tumor: ModelConfig, tmp_path: Path) -> None:
    holdout = pd.DataFrame({"mean_radius": np.ones(30)})
    result = quality_gate(holdout, pd.Series(["benign"] * 30), np.full(30, 0.1), tumor, tmp_path / "q.html")
    assert not result.passed
    assert "roc_auc undefined" in result.summary
    _assert_report(result, "FAIL")


# ------------------------------------------------------------------------------------------- fairness


def _fairness_frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gender = np.array(["female", "male"] * (n // 2), dtype=object)
    frame = pd.DataFrame({"gender": gender, "age_band": rng.choice(["18-29", "30-49", "50+"], n)})
    y = (rng.random(n) < 0.3).astype(int)
    pred = (rng.random(n) < 0.3).astype(int)
    return frame, y, pred


def test_fairness_gate_passes_when_equal(credit: ModelConfig, tmp_path: Path) -> None:
    frame, y, _ = _fairness_frame(400, 0)
    pred = np.tile([1, 1, 0, 0, 0, 0, 0, 0], 50)  # 25% selected in every gender
    result = fairness_gate(frame, pd.Series(y), pred, credit, tmp_path / "fair.html")
    assert result.passed, result.summary
    assert result.metrics["disparity.gender"] == pytest.approx(0.0)
    assert result.summary.startswith("fairness gate passed: selection_rate disparity <= max 0.25")
    _assert_report(result, "PASS")


def test_fairness_gate_fails_on_skewed_group(credit: ModelConfig, tmp_path: Path) -> None:
    frame, y, pred = _fairness_frame(400, 1)
    pred = np.where(frame["gender"] == "female", 1, pred)  # every woman selected
    result = fairness_gate(frame, pd.Series(y), pred, credit, tmp_path / "fair.html")
    assert not result.passed
    assert "gender selection_rate disparity" in result.summary and "> max 0.250" in result.summary
    assert "female 1.000" in result.summary
    assert result.details["attributes"]["gender"]["passed"] is False
    page = _assert_report(result, "FAIL")
    assert "female" in page and "age_band" in page


def test_fairness_gate_ignores_tiny_group(credit: ModelConfig, tmp_path: Path) -> None:
    frame, y, pred = _fairness_frame(400, 2)
    frame.loc[:4, "gender"] = "<other>"  # 5 rows < min_group_size 30, and a name to escape
    pred[:5] = 1
    result = fairness_gate(frame, pd.Series(y), pred, credit, tmp_path / "fair.html")
    assert result.passed, result.summary
    groups = {g["group"]: g for g in result.details["attributes"]["gender"]["groups"]}
    assert groups["<other>"]["value"] == 1.0 and not groups["<other>"]["gated"]
    assert "1 group(s) under 30 rows not gated" in result.summary
    page = _assert_report(result, "PASS")
    assert "&lt;other&gt;" in page and "<other>" not in page


def test_fairness_gate_true_positive_rate_with_string_labels(tumor: ModelConfig, tmp_path: Path) -> None:
    n = 300
    frame = pd.DataFrame({"clinic_site": np.array(["north", "south", "east"] * (n // 3), dtype=object)})
    y = np.where(np.arange(n) % 2 == 0, "malignant", "benign")
    proba = np.where(frame["clinic_site"] == "east", 0.1, np.where(y == "malignant", 0.9, 0.1))  # east misses all
    result = fairness_gate(frame, pd.Series(y), proba, tumor, tmp_path / "fair.html")
    assert not result.passed
    assert result.metrics["disparity.clinic_site"] == pytest.approx(1.0)


def test_fairness_gate_skipped_without_attributes(credit: ModelConfig, tmp_path: Path) -> None:
    cfg = credit.model_copy(update={"sensitive_attributes": []})
    frame, y, pred = _fairness_frame(40, 3)
    result = fairness_gate(frame, pd.Series(y), pred, cfg, tmp_path / "fair.html")
    assert result.passed and result.skipped
    assert "no sensitive_attributes" in result.summary
    _assert_report(result, "SKIPPED")


# ------------------------------------------------------------------------------------------- champion


def test_champion_gate_skipped_without_champion(credit: ModelConfig, tmp_path: Path) -> None:
    result = champion_gate(0.8, None, credit, tmp_path / "c.html", champion_version=None)
    assert result.passed and result.skipped
    assert result.summary == "champion gate skipped: no champion yet"
    _assert_report(result, "SKIPPED")


def test_champion_gate_fails_beyond_tolerance(credit: ModelConfig, tmp_path: Path) -> None:
    result = champion_gate(0.75, 0.80, credit, tmp_path / "c.html", champion_version="3")
    assert not result.passed and not result.skipped
    assert "roc_auc 0.750 < 0.780" in result.summary and "champion v3 0.800" in result.summary
    assert result.metrics["delta"] == pytest.approx(-0.05)
    _assert_report(result, "FAIL")


def test_champion_gate_passes_within_tolerance(credit: ModelConfig, tmp_path: Path) -> None:
    result = champion_gate(0.785, 0.80, credit, tmp_path / "c.html", champion_version="3")
    assert result.passed, result.summary
    edge = champion_gate(0.78, 0.80, credit, tmp_path / "edge.html", champion_version="3")
    assert edge.passed, edge.summary  # exactly champion - tolerance counts as good enough
    _assert_report(result, "PASS")


def test_champion_gate_force(credit: ModelConfig, tmp_path: Path) -> None:
    result = champion_gate(0.60, 0.80, credit, tmp_path / "c.html", champion_version="3", force=True)
    assert result.passed and not result.skipped
    assert "forced" in result.summary and "0.600" in result.summary
    assert result.metrics["forced"] == 1.0 and result.details["would_pass"] is False
    _assert_report(result, "FORCED")


def test_write_html_escapes_title(tmp_path: Path) -> None:
    path = write_html(tmp_path / "sub" / "r.html", "a <b> title", "<p>x</p>", verdict="PASS", summary="1 < 2")
    page = path.read_text()
    assert "a &lt;b&gt; title" in page and "1 &lt; 2" in page and "<p>x</p>" in page
