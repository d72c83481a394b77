"""The four model gates: drift, quality, fairness and champion.

Each gate is a pure function of DataFrames/arrays and the model config: it writes one standalone HTML
report a person can open (no network needed to render it), and returns a :class:`GateResult` whose
one-line summary names the gate, the number and the threshold. Nothing here talks to MLflow or
Airflow; the caller logs ``report_html`` and ``metrics``.

Heavy libraries (Evidently, fairlearn, scikit-learn) are imported inside the functions so that
importing this module stays cheap for DAG parsing.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlops.core.config import ModelConfig
from mlops.core.labels import positive_mask
from mlops.core.util import finite_or_none as _json_float
from mlops.core.util import jsonable as _jsonable
from mlops.quality.metrics import classification_metrics, lower_is_better, meets, predicted_positive
from mlops.quality.reports import Verdict, write_html
from mlops.quality.reports import fmt_vs as _fmt_vs
from mlops.quality.reports import num_cell as _num_cell
from mlops.quality.reports import table as _table
from mlops.quality.reports import tag as _tag
from mlops.quality.reports import write_evidently_html as _write_evidently_html

GateName = Literal["drift", "quality", "fairness", "champion"]

_MAX_NAMES_IN_SUMMARY = 6
DRIFT_SAMPLE_ROWS = 200_000  # rows a side at most: drift statistics on 200k rows already resolve tiny shifts


@dataclass(frozen=True)
class GateResult:
    """Outcome of one gate; ``summary`` is the single line a person reads to know what to do."""

    gate: GateName
    passed: bool
    skipped: bool
    summary: str
    metrics: dict[str, float]
    report_html: Path
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        if self.skipped:
            return "SKIPPED"
        return "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for XCom and the run's gate summary)."""
        return {
            "gate": self.gate,
            "passed": self.passed,
            "skipped": self.skipped,
            "summary": self.summary,
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "report_html": str(self.report_html),
            "details": _jsonable(self.details),
        }


# --------------------------------------------------------------------------------------------------
# HTML


# --------------------------------------------------------------------------------------------------
# small helpers


def _name_list(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_IN_SUMMARY])
    extra = len(names) - _MAX_NAMES_IN_SUMMARY
    return f"{shown}, ... (+{extra} more)" if extra > 0 else shown


def _negative_label(y_true: Any, positive_class: int | str) -> int | str:
    """The label shown for the negative class in the Evidently report."""
    others = [v for v in pd.unique(np.asarray(y_true)) if not positive_mask([v], positive_class)[0]]
    if others:
        other = others[0]
        return other.item() if isinstance(other, np.generic) else other  # type: ignore[no-any-return]
    if isinstance(positive_class, str):
        return f"not_{positive_class}"
    return 0 if positive_class != 0 else 1


def _positive(cfg: ModelConfig) -> bool | int | str:
    """The binary model's positive class (the config loader requires one for task binary)."""
    return cfg.label.positive


def _check_lengths(n: int, **arrays: Any) -> None:
    bad = {name: len(a) for name, a in arrays.items() if len(a) != n}
    if bad:
        raise ValueError(f"lengths differ from the holdout's {n} rows: {bad}")


def _missing_columns(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c not in frame.columns]


# --------------------------------------------------------------------------------------------------
# drift gate


def _sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """Uniform sample without replacement (seeded)."""
    if len(frame) <= max_rows:
        return frame
    return frame.sample(n=max_rows, random_state=seed)


def _drift_frame(frame: pd.DataFrame, cfg: ModelConfig) -> pd.DataFrame:
    """Only the model's features, with categoricals as strings so both frames share one vocabulary."""
    out = frame.loc[:, cfg.feature_columns].copy()
    for col in cfg.features.categorical:
        out[col] = out[col].astype("string").astype(object).where(out[col].notna(), None)
    for col in cfg.features.numeric:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    return out.reset_index(drop=True)


def _parse_drift_snapshot(snapshot_dict: dict[str, Any]) -> tuple[float, float, dict[str, dict[str, Any]]]:
    """(drifted count, drifted share, per-column {score, method, threshold, drifted}) from ``dict()``."""
    count = share = float("nan")
    columns: dict[str, dict[str, Any]] = {}
    by_id: dict[str, str] = {}
    for metric in snapshot_dict["metrics"]:
        config = metric.get("config", {})
        kind = config.get("type", "")
        if kind.endswith(":DriftedColumnsCount"):
            count = float(metric["value"]["count"])
            share = float(metric["value"]["share"])
        elif kind.endswith(":ValueDrift"):
            col = str(config["column"])
            by_id[metric["id"]] = col
            columns[col] = {
                "score": float(metric["value"]),
                "method": config.get("method"),
                "threshold": config.get("threshold"),
                "drifted": None,
            }
    for test in snapshot_dict["tests"]:
        col_name = by_id.get(test.get("metric_config", {}).get("metric_id", ""))
        if col_name is not None:
            columns[col_name]["drifted"] = test["status"] == "FAIL"
    return count, share, columns


@dataclass(frozen=True)
class DriftBaseline:
    """The champion's own training data against the batch a drift gate checks."""

    version: str
    distance: float  # feature_distance(champion's training rows, the batch)


def feature_distance(reference: pd.DataFrame, current: pd.DataFrame, cfg: ModelConfig) -> float:
    """How far ``current`` is from ``reference``: the mean over the model's features of the Wasserstein
    distance in units of the reference's standard deviation (numeric) and the Jensen-Shannon distance of
    the category frequencies, base 2 (categorical, missing values a category). 0 for the same sample;
    comparable between two references against one batch, which is what the drift gate uses it for."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    ref, cur = _drift_frame(reference, cfg), _drift_frame(current, cfg)
    distances: list[float] = []
    for col in cfg.features.numeric:
        a, b = ref[col].dropna().to_numpy(), cur[col].dropna().to_numpy()
        if len(a) and len(b):
            scale = float(np.std(a)) or 1.0
            distances.append(float(wasserstein_distance(a, b)) / scale)
    for col in cfg.features.categorical:
        a_freq = ref[col].fillna("<missing>").value_counts(normalize=True)
        b_freq = cur[col].fillna("<missing>").value_counts(normalize=True)
        values = a_freq.index.union(b_freq.index)
        a_p, b_p = a_freq.reindex(values, fill_value=0), b_freq.reindex(values, fill_value=0)
        distances.append(float(jensenshannon(a_p, b_p, base=2)))
    return float(np.mean(distances)) if distances else 0.0


def drift_gate(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: ModelConfig,
    report_path: Path,
    *,
    max_rows: int = DRIFT_SAMPLE_ROWS,
    seed: int = 0,
    max_share: float | None = None,
    reference_rows: int | None = None,
    baseline: Callable[[], DriftBaseline | None] | None = None,
) -> GateResult:
    """Evidently data drift over the model's features; fails when too large a share of them drift.

    ``baseline``, called only when the share is over the limit: the champion's own training data against the
    same batch (:class:`DriftBaseline`). Over the limit, a version still passes when its training data is
    closer to the batch than the champion's, by ``gates.drift.champion_margin`` of the champion's mean
    feature distance (:func:`feature_distance`): after drift, a retrain on a window that reaches the new
    data is nearer to it than the champion it would replace, and failing it would keep the model further
    away. It fails when it is not that much closer, when there is no champion, or with the margin unset.

    Frames larger than ``max_rows`` are sampled uniformly (seeded) to bound time and memory; the
    summary and metrics say so. Writes ``report_path`` (HTML) and the same stem with ``.json``.
    ``max_share`` overrides ``gates.drift.max_drifted_share`` (live monitoring has its own threshold).
    ``reference_rows``: the rows ``reference`` was drawn from, where the caller already sampled it
    (:func:`mlops.quality.steps.drift_reference` reads a sample without loading the whole training set).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    features = cfg.feature_columns
    for label, frame in (("reference", reference), ("current", current)):
        missing = _missing_columns(frame, features)
        if missing:
            raise ValueError(f"drift gate: {label} data lacks feature columns {missing}")
        if frame.empty:
            raise ValueError(f"drift gate: {label} data has no rows")
    if max_share is None:
        max_share = cfg.gates.drift.max_drifted_share

    ref = _drift_frame(_sample(reference, max_rows, seed), cfg)
    cur = _drift_frame(_sample(current, max_rows, seed + 1), cfg)
    definition = DataDefinition(
        numerical_columns=list(cfg.features.numeric), categorical_columns=list(cfg.features.categorical)
    )
    report = Report([DataDriftPreset(columns=features, drift_share=max_share)], include_tests=True)
    snapshot = report.run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    snap_dict: dict[str, Any] = json.loads(snapshot.json())
    count, share, per_column = _parse_drift_snapshot(snap_dict)
    drifted = [c for c in features if per_column.get(c, {}).get("drifted")]
    if math.isnan(share):  # Evidently changed shape: fall back to the per-column verdicts
        count, share = float(len(drifted)), len(drifted) / len(features)

    within = share <= max_share
    margin = cfg.gates.drift.champion_margin
    champion = baseline() if (baseline is not None and not within and margin is not None) else None
    distance = feature_distance(ref, cur, cfg) if champion is not None else math.nan
    closer = champion is not None and margin is not None and distance <= champion.distance * (1 - margin)
    passed = within or closer
    share_s, max_s = _fmt_vs(share, max_share, digits=2)
    summary = (
        f"drift gate {'passed' if passed else 'failed'}: {int(count)} of {len(features)} features "
        f"drifted (share {share_s} {'<=' if within else '>'} max {max_s})"
    )
    if champion is not None:
        summary += (
            f", {'but' if closer else 'and'} {'' if closer else 'not '}closer to this batch than champion "
            f"v{champion.version}'s training data (mean feature distance {distance:.3f} "
            f"{'<=' if closer else '>'} {champion.distance:.3f} x {1 - (margin or 0):.2f})"
        )
    if drifted:
        summary += f": {_name_list(drifted)}"
    reference_total = max(reference_rows or 0, len(reference))
    sampled = []
    if len(ref) < reference_total:
        sampled.append(f"{len(ref)} of {reference_total} reference rows")
    if len(cur) < len(current):
        sampled.append(f"{len(cur)} of {len(current)} current rows")
    if sampled:
        summary += f" [sampled {' and '.join(sampled)}, seed {seed}]"

    json_path = report_path.with_suffix(".json")
    metrics = {
        "drifted_count": count,
        "drifted_share": share,
        "max_drifted_share": max_share,
        "columns": float(len(features)),
        "rows_reference": float(reference_total),
        "rows_current": float(len(current)),
        "rows_reference_used": float(len(ref)),
        "rows_current_used": float(len(cur)),
        "sampled": 1.0 if sampled else 0.0,
    }
    if champion is not None:
        metrics["feature_distance"] = distance
        metrics["champion_feature_distance"] = champion.distance
    details: dict[str, Any] = {
        "champion_version": champion.version if champion is not None else None,
        "drifted_columns": drifted,
        "scores": {c: per_column[c]["score"] for c in features if c in per_column},
        "columns": per_column,
        "report_json": str(json_path),
        "seed": seed,
    }
    result = GateResult("drift", passed, False, summary, metrics, report_path, details)
    _write_evidently_html(snapshot, report_path, result.verdict, summary)
    json_path.write_text(json.dumps({"gate": result.to_dict(), "evidently": snap_dict}, indent=1), encoding="utf-8")
    return result


# --------------------------------------------------------------------------------------------------
# quality gate


_EVIDENTLY_TEST_ARGS = {
    "roc_auc": "rocauc_tests",
    "accuracy": "accuracy_tests",
    "f1": "f1score_tests",
    "precision": "precision_tests",
    "recall": "recall_tests",
}


def _quality_snapshot(
    holdout: pd.DataFrame,
    y_true: np.ndarray,
    cfg: ModelConfig,
    *,
    y_pos: np.ndarray,
    proba: np.ndarray,
    pred_pos: np.ndarray,
    threshold: float,
) -> Any:
    """Evidently ClassificationPreset on the holdout, its tests set to the gate's minimums."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset
    from evidently.tests import gte

    pos = _positive(cfg)
    neg = _negative_label(y_true, pos)
    frame = pd.DataFrame(
        {
            "target": np.where(y_pos, pos, neg),
            "prediction": np.where(pred_pos, pos, neg),
            "prediction_proba": proba,
        }
    )
    if isinstance(pos, int) and isinstance(neg, int):
        frame["target"] = frame["target"].astype("int64")
        frame["prediction"] = frame["prediction"].astype("int64")
    numeric = [c for c in cfg.features.numeric if c in holdout.columns]
    categorical = [c for c in cfg.features.categorical if c in holdout.columns]
    for col in [*numeric, *categorical]:
        frame[col] = holdout[col].to_numpy()
    definition = DataDefinition(
        numerical_columns=numeric,
        categorical_columns=categorical,
        classification=[
            BinaryClassification(
                target="target",
                prediction_labels="prediction",
                prediction_probas="prediction_proba",
                pos_label=pos,  # type: ignore[arg-type]
            )
        ],
    )
    test_args = {_EVIDENTLY_TEST_ARGS[name]: [gte(minimum)] for name, minimum in cfg.gates.quality.min_metrics.items()}
    preset = ClassificationPreset(probas_threshold=threshold, **test_args)
    return Report([preset], include_tests=True).run(
        current_data=Dataset.from_pandas(frame, data_definition=definition), reference_data=None
    )


def _binary_inputs(
    gate: str, holdout: pd.DataFrame, y_true: Any, y_proba: Any, cfg: ModelConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A binary gate's checked inputs: the positive-class probabilities, which rows are positive, which
    are predicted positive, and the decision threshold."""
    proba = np.asarray(y_proba, dtype="float64")
    if proba.ndim != 1:
        raise ValueError(
            f"{gate} gate: y_proba must be the 1-D probability of the positive class, got shape {proba.shape}"
        )
    y_arr = np.asarray(y_true)
    _check_lengths(len(holdout), y_true=y_arr, y_proba=proba)
    if len(y_arr) == 0:
        raise ValueError(f"{gate} gate: the holdout has no rows")
    threshold = cfg.label.decision_threshold
    return proba, positive_mask(y_arr, _positive(cfg)), predicted_positive(proba, threshold), threshold


def quality_gate(
    holdout: pd.DataFrame,
    y_true: pd.Series,
    y_proba: np.ndarray,
    cfg: ModelConfig,
    report_path: Path,
) -> GateResult:
    """Holdout quality: every configured minimum (roc_auc, accuracy, f1, precision, recall) must hold.

    ``y_proba`` is the 1-D probability of ``cfg.label.positive_class``; labels are predicted as
    ``proba >= label.decision_threshold``. Numbers come from scikit-learn (exact); the HTML is Evidently's
    classification report with the same minimums as its tests. A multiclass or regression model goes
    through :func:`task_quality_gate`.
    """
    if cfg.task != "binary":
        return task_quality_gate(holdout, y_true, y_proba, cfg, report_path)
    proba, y_pos, pred_pos, threshold = _binary_inputs("quality", holdout, y_true, y_proba, cfg)
    y_arr = np.asarray(y_true)
    values = classification_metrics(y_pos, proba, threshold)
    minimums = {str(k): float(v) for k, v in cfg.gates.quality.min_metrics.items()}

    failing: list[str] = []
    for name, minimum in minimums.items():
        value = values[name]
        if math.isnan(value):
            failing.append(f"{name} undefined (holdout has one class), min {minimum:.3f}")
        elif value < minimum:
            v_s, m_s = _fmt_vs(value, minimum)
            failing.append(f"{name} {v_s} < min {m_s}")
    passed = not failing
    if passed:
        checks = ", ".join("{} {} >= {}".format(n, *_fmt_vs(values[n], m)) for n, m in minimums.items())
        summary = f"quality gate passed: {checks}"
    else:
        summary = f"quality gate failed: {'; '.join(failing)}"
    summary += f" (n={len(y_arr)}, threshold {threshold:g})"

    metrics = {
        **values,
        "rows": float(len(y_arr)),
        "positive_rate": float(y_pos.mean()),
        "predicted_positive_rate": float(pred_pos.mean()),
        "decision_threshold": float(threshold),
    }
    details: dict[str, Any] = {
        "min_metrics": minimums,
        "failing": [n for n in minimums if not (values[n] >= minimums[n])],
        "positive_class": cfg.label.positive_class,
    }
    result = GateResult("quality", passed, False, summary, metrics, report_path, details)
    try:
        snapshot = _quality_snapshot(
            holdout, y_arr, cfg, y_pos=y_pos, proba=proba, pred_pos=pred_pos, threshold=threshold
        )
    except Exception as exc:  # a report rendering problem must not hide the verdict
        details["evidently_error"] = f"{type(exc).__name__}: {exc}"
        _write_quality_fallback(result, values, minimums, details["evidently_error"])
    else:
        _write_evidently_html(snapshot, report_path, result.verdict, summary)
    return result


def _write_quality_fallback(
    result: GateResult, values: dict[str, float], minimums: dict[str, float], error: str
) -> None:
    """Our own table when Evidently cannot build its report (e.g. a one-class holdout)."""
    rows = []
    for name, value in values.items():
        minimum = minimums.get(name)
        ok = minimum is None or value >= minimum
        rows.append([html.escape(name), _num_cell(value), _num_cell(minimum), _tag(ok) if minimum is not None else ""])
    body = _table(["metric", "value", "minimum", "check"], rows)
    body += f'<p class="meta">Evidently report unavailable: {html.escape(error)}</p>'
    write_html(result.report_html, "Quality gate", body, verdict=result.verdict, summary=result.summary)


# --------------------------------------------------------------------------------------------------
# fairness gate


def _fairness_metric(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """The per-group metric on 0/1 arrays; rates with an empty denominator are NaN, not 0."""
    from fairlearn.metrics import false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score

    def tpr(y: np.ndarray, p: np.ndarray) -> float:
        return float(true_positive_rate(y, p, pos_label=1)) if np.asarray(y).sum() > 0 else float("nan")

    def fpr(y: np.ndarray, p: np.ndarray) -> float:
        y = np.asarray(y)
        return float(false_positive_rate(y, p, pos_label=1)) if (y == 0).sum() > 0 else float("nan")

    def sel(y: np.ndarray, p: np.ndarray) -> float:
        return float(selection_rate(y, p, pos_label=1))

    def acc(y: np.ndarray, p: np.ndarray) -> float:
        return float(accuracy_score(y, p))

    table: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "selection_rate": sel,
        "true_positive_rate": tpr,
        "false_positive_rate": fpr,
        "accuracy": acc,
    }
    return table[name]


def _metric_key(text: str) -> str:
    """``text`` made safe for an MLflow metric key (``50+`` -> ``50_``, ``age ≥ 45`` -> ``age ge 45``)."""
    text = text.replace("≥", "ge").replace("<", "lt")
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", text)[:60] or "_"


def _unmeasurable(metric: str, y_pos: np.ndarray, pred_pos: np.ndarray, threshold: float) -> str | None:
    """Why the configured metric cannot tell groups apart on this holdout at all, or None."""
    if metric == "accuracy":
        return None
    n = len(pred_pos)
    if not pred_pos.any():
        return f"the model predicts no positive on the {n} holdout rows at threshold {threshold:g}"
    if pred_pos.all():
        return f"the model predicts every one of the {n} holdout rows positive at threshold {threshold:g}"
    if metric == "true_positive_rate" and not y_pos.any():
        return f"the holdout's {n} rows have no positive label"
    if metric == "false_positive_rate" and y_pos.all():
        return f"the holdout's {n} rows have no negative label"
    return None


def fairness_gate(  # noqa: C901, PLR0912, PLR0915 -- split once the parallel gate changes have landed
    holdout: pd.DataFrame,
    y_true: pd.Series,
    y_proba: np.ndarray,
    cfg: ModelConfig,
    report_path: Path,
) -> GateResult:
    """Group fairness per sensitive attribute with fairlearn's MetricFrame.

    ``y_proba`` is the 1-D probability of ``cfg.label.positive_class`` (as for the quality gate); a row is
    predicted positive when it is at least ``label.decision_threshold``. Comparing in the positive-class space, never in
    the label space, is what keeps the gate measuring whatever the label type (int, string, boolean).

    Disparity is max - min of the configured metric over groups with at least ``min_group_size`` rows;
    smaller groups are shown and flagged but not gated, because a handful of rows makes any rate noisy.
    A gate that cannot measure (constant predictions, fewer than two comparable groups for an attribute)
    fails and says why: it never passes on a figure it could not compute. Evidently has no tabular
    fairness metrics, hence our own HTML.
    """
    from fairlearn.metrics import MetricFrame, count

    from mlops.quality.groups import group_labels

    fcfg = cfg.gates.fairness
    attrs = list(cfg.sensitive_attributes)
    if not attrs:
        summary = "fairness gate skipped: no sensitive_attributes configured for this model"
        body = "<p>This model has no sensitive attributes; nothing to compare.</p>"
        write_html(report_path, "Fairness gate", body, verdict="SKIPPED", summary=summary)
        return GateResult("fairness", True, True, summary, {}, report_path, {"attributes": {}})
    missing = _missing_columns(holdout, attrs)
    if missing:
        raise ValueError(f"fairness gate: holdout lacks sensitive attribute columns {missing}")
    if cfg.task != "binary":
        return task_fairness_gate(holdout, y_true, y_proba, cfg, report_path)
    _, y_pos, pred_pos, threshold = _binary_inputs("fairness", holdout, y_true, y_proba, cfg)
    y01, p01 = y_pos.astype(int), pred_pos.astype(int)
    metric_fn = _fairness_metric(fcfg.metric)

    attributes: dict[str, dict[str, Any]] = {}
    metrics: dict[str, float] = {
        "predicted_positive_rate": float(pred_pos.mean()),
        "positive_rate": float(y_pos.mean()),
        "decision_threshold": float(threshold),
    }
    problems: list[str] = []
    passing: list[str] = []
    notes: list[str] = []
    blind = _unmeasurable(fcfg.metric, y_pos, pred_pos, threshold)
    if blind:
        problems.append(f"cannot measure {fcfg.metric}: {blind}")
    for attr in attrs:
        groups_s = group_labels(holdout[attr], cfg, attr).to_numpy()
        frame = MetricFrame(
            metrics={"value": metric_fn, "count": count},
            y_true=y01,
            y_pred=p01,
            sensitive_features=pd.Series(groups_s, name=attr),
        )
        groups: list[dict[str, Any]] = []
        for group, row in frame.by_group.iterrows():
            n = int(row["count"])
            value = float(row["value"])
            groups.append(
                {
                    "group": str(group),
                    "count": n,
                    "value": value,
                    "gated": n >= fcfg.min_group_size and not math.isnan(value),
                    "small": n < fcfg.min_group_size,
                }
            )
        gated = [g for g in groups if g["gated"]]
        hi = max(gated, key=lambda g: g["value"]) if gated else None
        lo = min(gated, key=lambda g: g["value"]) if gated else None
        disparity = hi["value"] - lo["value"] if hi and lo else float("nan")
        measurable = len(gated) >= 2 and not blind
        ok = measurable and disparity <= fcfg.max_disparity + 1e-12
        small = [g["group"] for g in groups if g["small"]]
        attributes[attr] = {
            "disparity": disparity,
            "passed": ok,
            "measurable": measurable,
            "highest": hi["group"] if hi else None,
            "lowest": lo["group"] if lo else None,
            "groups": groups,
            "small_groups": small,
        }
        metrics[f"disparity.{attr}"] = disparity
        for g in groups:  # per-group figures reach MLflow too (its metric keys allow a narrow alphabet)
            key = f"group.{_metric_key(attr)}.{_metric_key(g['group'])}"
            metrics[f"{key}.{fcfg.metric}"] = g["value"]
            metrics[f"{key}.rows"] = float(g["count"])
        if blind:
            continue
        if len(gated) < 2:
            problems.append(
                f"cannot measure {attr}: {len(gated)} group(s) with >= {fcfg.min_group_size} rows and a defined "
                f"{fcfg.metric} (need 2; groups: " + ", ".join(f"{g['group']} n={g['count']}" for g in groups) + ")"
            )
            continue
        d_s, m_s = _fmt_vs(disparity, fcfg.max_disparity)
        if not ok and hi and lo:
            problems.append(
                f"{attr} {fcfg.metric} disparity {d_s} > max {m_s} "
                f"({hi['group']} {hi['value']:.3f} vs {lo['group']} {lo['value']:.3f})"
            )
        else:
            passing.append(f"{attr} {d_s}")
        if small:
            notes.append(f"{attr}: {len(small)} group(s) under {fcfg.min_group_size} rows not gated")

    passed = not problems
    measured = [a["disparity"] for a in attributes.values() if not math.isnan(a["disparity"])]
    metrics["disparity"] = max(measured) if measured else float("nan")
    metrics["max_disparity"] = fcfg.max_disparity
    if passed:
        summary = f"fairness gate passed: {fcfg.metric} disparity <= max {fcfg.max_disparity:g} for " + ", ".join(
            passing
        )
    else:
        summary = "fairness gate failed: " + "; ".join(problems)
    if notes:
        summary += "; " + "; ".join(notes)
    details: dict[str, Any] = {
        "metric": fcfg.metric,
        "max_disparity": fcfg.max_disparity,
        "min_group_size": fcfg.min_group_size,
        "attributes": attributes,
        "threshold": threshold,
        "positive_class": cfg.label.positive_class,
    }
    result = GateResult("fairness", passed, False, summary, metrics, report_path, details)
    _write_fairness_html(result, details)
    return result


def _write_fairness_html(result: GateResult, details: dict[str, Any]) -> None:
    metric = str(details["metric"])
    max_disparity = float(details["max_disparity"])
    min_size = int(details["min_group_size"])
    parts = [
        f"<p>Metric <b>{html.escape(metric)}</b> per group (fairlearn MetricFrame). Disparity is the "
        f"largest minus the smallest value over groups with at least {min_size} rows; it must be at "
        f"most <b>{max_disparity:g}</b>. Smaller groups are shown in grey and not gated.</p>"
    ]
    for attr, info in details["attributes"].items():
        rows: list[list[str]] = []
        classes: list[str] = []
        for g in info["groups"]:
            note = ""
            if not g["gated"]:
                why = "too small" if g["small"] else "undefined"
                note = f'<span class="tag note">{why}, not gated</span>'
            rows.append([html.escape(g["group"]), str(g["count"]), _num_cell(g["value"]), note])
            classes.append("" if g["gated"] else "small")
        parts.append(f"<h2>{html.escape(attr)} {_tag(bool(info['passed']))}</h2>")
        parts.append(
            f"<p>disparity <b>{_num_cell(info['disparity'])}</b> vs max {max_disparity:g}"
            + ("" if info.get("measurable", True) else " (cannot measure: see the verdict)")
            + (
                f" (highest {html.escape(str(info['highest']))}, lowest {html.escape(str(info['lowest']))})"
                if info["highest"] is not None and info["highest"] != info["lowest"]
                else ""
            )
            + "</p>"
        )
        parts.append(_table(["group", "rows", metric, "note"], rows, classes))
    write_html(result.report_html, "Fairness gate", "\n".join(parts), verdict=result.verdict, summary=result.summary)


# --------------------------------------------------------------------------------------------------
# champion gate


def champion_gate(
    challenger_metric: float | None,
    champion_metric: float | None,
    cfg: ModelConfig,
    report_path: Path,
    *,
    champion_version: str | None,
    force: bool = False,
) -> GateResult:
    """The challenger may not be worse than the champion by more than the tolerance.

    No champion yet: skipped (and passed), so the first model can be promoted. ``force`` passes
    whatever the numbers say, and the summary records that it was forced.
    """
    ccfg = cfg.gates.champion
    name, tol = ccfg.metric, ccfg.tolerance
    champ_label = f"champion v{champion_version}" if champion_version else "champion"
    metrics: dict[str, float] = {"tolerance": tol, "forced": 1.0 if force else 0.0}
    if challenger_metric is not None:
        metrics["challenger"] = float(challenger_metric)
    details: dict[str, Any] = {
        "metric": name,
        "tolerance": tol,
        "champion_version": champion_version,
        "forced": force,
    }
    rows = [
        ["metric", html.escape(name)],
        ["challenger", _num_cell(challenger_metric, 4)],
        [html.escape(champ_label), _num_cell(champion_metric, 4)],
        ["tolerance", f"{tol:g}"],
    ]

    if champion_metric is None:
        summary = "champion gate skipped: no champion yet"
        write_html(report_path, "Champion gate", _table(["", ""], rows), verdict="SKIPPED", summary=summary)
        return GateResult("champion", True, True, summary, metrics, report_path, details)

    lower = lower_is_better(name)  # an error metric: the challenger may exceed the champion by the tolerance
    required = float(champion_metric) + tol if lower else float(champion_metric) - tol
    metrics["champion"] = float(champion_metric)
    metrics["required"] = required
    valid = challenger_metric is not None and math.isfinite(challenger_metric)
    if valid and lower:
        would_pass = float(challenger_metric) <= required + 1e-12  # type: ignore[arg-type]
        ops = ("<=", ">", "+")
    else:
        would_pass = valid and float(challenger_metric) >= required - 1e-12  # type: ignore[arg-type]
        ops = (">=", "<", "-")
    details["lower_is_better"] = lower
    if valid:
        metrics["delta"] = float(challenger_metric) - float(champion_metric)  # type: ignore[arg-type]
        c_s, r_s = _fmt_vs(float(challenger_metric), required)  # type: ignore[arg-type]
        comparison = (
            f"{name} {c_s} {ops[0] if would_pass else ops[1]} {r_s} "
            f"({champ_label} {float(champion_metric):.3f} {ops[2]} tolerance {tol:g})"
        )
    else:
        comparison = f"challenger has no {name} (required {ops[0]} {required:.3f}, {champ_label} {champion_metric:.3f})"
    details["would_pass"] = would_pass
    rows.append([f"required (champion {ops[2]} tolerance)", _num_cell(required, 4)])

    if force:
        if would_pass:
            summary = f"champion gate forced (would have passed anyway): {comparison}"
        else:
            summary = f"champion gate forced: passed by force although {comparison}"
        verdict: Verdict = "FORCED"
        passed = True
    else:
        passed = would_pass
        summary = f"champion gate {'passed' if passed else 'failed'}: {comparison}"
        verdict = "PASS" if passed else "FAIL"
    write_html(report_path, "Champion gate", _table(["", ""], rows), verdict=verdict, summary=summary)
    return GateResult("champion", passed, False, summary, metrics, report_path, details)


# --------------------------------------------------------------------------------------------------
# multiclass and regression


def _task_labels_and_outputs(
    gate: str, holdout: pd.DataFrame, y_true: Any, outputs: Any, cfg: ModelConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Encoded labels (class positions or numbers) and model outputs of the right shape for the task."""
    from mlops.model.train import encode_target

    out = np.asarray(outputs, dtype="float64")
    classes = len(cfg.label.classes or [])
    if cfg.task == "multiclass" and (out.ndim != 2 or out.shape[1] != classes):
        raise ValueError(f"{gate} gate: outputs must be (rows, {classes}) class probabilities, got shape {out.shape}")
    if cfg.task == "regression" and out.ndim != 1:
        raise ValueError(f"{gate} gate: outputs must be the 1-D predicted values, got shape {out.shape}")
    y_arr = np.asarray(y_true)
    _check_lengths(len(holdout), y_true=y_arr, outputs=out)
    if len(y_arr) == 0:
        raise ValueError(f"{gate} gate: the holdout has no rows")
    return encode_target(pd.Series(y_arr), cfg).to_numpy(), out


def task_quality_gate(
    holdout: pd.DataFrame, y_true: Any, outputs: Any, cfg: ModelConfig, report_path: Path
) -> GateResult:
    """Holdout quality of a multiclass or regression model: every minimum (macro F1, accuracy, ROC AUC
    one-vs-rest, R²) and maximum (log loss, RMSE, MAE) must hold; an undefined metric fails."""
    from mlops.quality.metrics import task_metrics

    y, out = _task_labels_and_outputs("quality", holdout, y_true, outputs, cfg)
    values = task_metrics(cfg.task, y, out)
    bounds = {
        **{str(k): float(v) for k, v in cfg.gates.quality.min_metrics.items()},
        **{str(k): float(v) for k, v in cfg.gates.quality.max_metrics.items()},
    }
    failing: list[str] = []
    checks: list[str] = []
    for name, bound in bounds.items():
        value = values[name]
        op = "<=" if lower_is_better(name) else ">="
        v_s, b_s = _fmt_vs(value, bound)
        if math.isnan(value):
            failing.append(f"{name} undefined on this holdout, {'max' if op == '<=' else 'min'} {bound:.3f}")
        elif not meets(name, value, bound):
            failing.append(f"{name} {v_s} {'>' if op == '<=' else '<'} {'max' if op == '<=' else 'min'} {b_s}")
        else:
            checks.append(f"{name} {v_s} {op} {b_s}")
    passed = not failing
    summary = f"quality gate passed: {', '.join(checks)}" if passed else f"quality gate failed: {'; '.join(failing)}"
    summary += f" (n={len(y)}, task {cfg.task})"
    metrics = {**values, "rows": float(len(y))}
    details: dict[str, Any] = {
        "task": cfg.task,
        "min_metrics": dict(cfg.gates.quality.min_metrics),
        "max_metrics": dict(cfg.gates.quality.max_metrics),
        "failing": [n for n, b in bounds.items() if not meets(n, values[n], b)],
    }
    result = GateResult("quality", passed, False, summary, metrics, report_path, details)
    rows = []
    for name, value in values.items():
        limit = bounds.get(name)
        check = _tag(meets(name, value, limit)) if limit is not None else ""
        direction = "max" if lower_is_better(name) else "min"
        rows.append([html.escape(name), _num_cell(value), "" if limit is None else f"{direction} {limit:g}", check])
    body = f"<p>Task <b>{html.escape(cfg.task)}</b>, {len(y)} holdout rows (scikit-learn metrics).</p>"
    body += _table(["metric", "value", "threshold", "check"], rows)
    write_html(report_path, "Quality gate", body, verdict=result.verdict, summary=summary)
    return result


def _group_metric(cfg: ModelConfig) -> Callable[[np.ndarray, np.ndarray], float]:
    """Per-group metric of a multiclass (accuracy, macro recall) or regression (MAE) model."""
    from sklearn.metrics import accuracy_score, mean_absolute_error, recall_score

    metric = cfg.gates.fairness.metric
    if metric == "mae":
        return lambda y, p: float(mean_absolute_error(y, p))
    if metric == "macro_recall":
        return lambda y, p: float(recall_score(y, p, labels=np.unique(y), average="macro", zero_division=0))
    return lambda y, p: float(accuracy_score(y, p))


def task_fairness_gate(  # noqa: PLR0915 -- one table per attribute, built in one pass
    holdout: pd.DataFrame, y_true: Any, outputs: Any, cfg: ModelConfig, report_path: Path
) -> GateResult:
    """Group fairness of a multiclass (per-group accuracy or macro recall of the most probable class) or
    regression model (per-group MAE), with fairlearn's MetricFrame.

    Disparity is max - min over groups of at least ``min_group_size`` rows; for MAE it is relative to the
    overall MAE, so ``max_disparity`` stays unitless. Fewer than two comparable groups fails, as for binary.
    """
    from fairlearn.metrics import MetricFrame, count

    from mlops.quality.groups import group_labels

    fcfg = cfg.gates.fairness
    y, out = _task_labels_and_outputs("fairness", holdout, y_true, outputs, cfg)
    pred = out.argmax(axis=1) if cfg.task == "multiclass" else out
    metric_fn = _group_metric(cfg)
    relative = fcfg.metric == "mae"
    overall = metric_fn(y, pred)
    metrics: dict[str, float] = {f"overall.{fcfg.metric}": overall}
    attributes: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    passing: list[str] = []
    for attr in cfg.sensitive_attributes:
        groups_s = group_labels(holdout[attr], cfg, attr).to_numpy()
        frame = MetricFrame(
            metrics={"value": metric_fn, "count": count},
            y_true=y,
            y_pred=pred,
            sensitive_features=pd.Series(groups_s, name=attr),
        )
        groups: list[dict[str, Any]] = []
        for group, row in frame.by_group.iterrows():
            n, value = int(row["count"]), float(row["value"])
            comparable = n >= fcfg.min_group_size and not math.isnan(value)
            groups.append(
                {"group": str(group), "count": n, "value": value, "gated": comparable, "small": n < fcfg.min_group_size}
            )
        gated = [g for g in groups if g["gated"]]
        hi = max(gated, key=lambda g: g["value"]) if gated else None
        lo = min(gated, key=lambda g: g["value"]) if gated else None
        disparity = float("nan")
        if hi and lo:
            gap = hi["value"] - lo["value"]
            disparity = (gap / overall if overall > 0 else (0.0 if gap == 0 else math.inf)) if relative else gap
        measurable = len(gated) >= 2
        ok = measurable and disparity <= fcfg.max_disparity + 1e-12
        attributes[attr] = {
            "disparity": disparity,
            "passed": ok,
            "measurable": measurable,
            "highest": hi["group"] if hi else None,
            "lowest": lo["group"] if lo else None,
            "groups": groups,
            "small_groups": [g["group"] for g in groups if g["small"]],
        }
        metrics[f"disparity.{attr}"] = disparity
        for g in groups:
            key = f"group.{_metric_key(attr)}.{_metric_key(g['group'])}"
            metrics[f"{key}.{fcfg.metric}"] = g["value"]
            metrics[f"{key}.rows"] = float(g["count"])
        if not measurable:
            problems.append(
                f"cannot measure {attr}: {len(gated)} group(s) with >= {fcfg.min_group_size} rows (need 2; groups: "
                + ", ".join(f"{g['group']} n={g['count']}" for g in groups)
                + ")"
            )
        elif not ok and hi and lo:
            what = " relative to overall" if relative else ""
            problems.append(
                f"{attr} {fcfg.metric} disparity{what} {disparity:.3f} > max {fcfg.max_disparity:g} "
                f"({hi['group']} {hi['value']:.3f} vs {lo['group']} {lo['value']:.3f})"
            )
        else:
            passing.append(f"{attr} {disparity:.3f}")
    passed = not problems
    measured = [a["disparity"] for a in attributes.values() if not math.isnan(a["disparity"])]
    metrics["disparity"] = max(measured) if measured else float("nan")
    metrics["max_disparity"] = fcfg.max_disparity
    if passed:
        scale = " (relative to overall MAE)" if relative else ""
        summary = f"fairness gate passed: {fcfg.metric} disparity{scale} <= max {fcfg.max_disparity:g} for "
        summary += ", ".join(passing)
    else:
        summary = "fairness gate failed: " + "; ".join(problems)
    details: dict[str, Any] = {
        "metric": f"{fcfg.metric} (disparity relative to overall {overall:.4g})" if relative else fcfg.metric,
        "max_disparity": fcfg.max_disparity,
        "min_group_size": fcfg.min_group_size,
        "attributes": attributes,
        "task": cfg.task,
        "overall": overall,
    }
    result = GateResult("fairness", passed, False, summary, metrics, report_path, details)
    _write_fairness_html(result, details)
    return result
