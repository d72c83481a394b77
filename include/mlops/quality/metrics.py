"""Model metrics: the one implementation that training, the gates, scoring and monitoring use.

A model's ``task`` (``binary``, ``multiclass`` or ``regression``) decides its metrics:

* binary: the caller passes the positive-class indicator (0/1 or boolean) and the probability of the
  positive class; the decision threshold comes from the model's config (``label.decision_threshold``).
* multiclass: class indices (positions in ``label.classes``) and one probability column per class.
* regression: numeric labels and predicted values.

The tables below (which metrics a task has, which are better when lower) are plain data so that the
config loader can check a YAML without importing numpy or scikit-learn.
"""

from __future__ import annotations

import math
from typing import Any, Literal

Task = Literal["binary", "multiclass", "regression"]

TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("roc_auc", "accuracy", "f1", "precision", "recall"),
    "multiclass": ("macro_f1", "accuracy", "log_loss", "roc_auc_ovr"),
    "regression": ("rmse", "mae", "r2"),
}
# Better when lower: a quality threshold on them is a maximum and the champion must not exceed them.
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
# Bounded in [0, 1] (the others are in the label's units or unbounded).
UNIT_METRICS = frozenset({"roc_auc", "accuracy", "f1", "precision", "recall", "macro_f1", "roc_auc_ovr"})


def lower_is_better(metric: str) -> bool:
    """True for error metrics (RMSE, MAE, log loss): the champion comparison and thresholds flip."""
    return metric in LOWER_IS_BETTER


def predicted_positive(proba: Any, threshold: float) -> Any:
    """Rows predicted positive: probability at or above the decision threshold."""
    import numpy as np

    return np.asarray(proba, dtype="float64") >= threshold


def classification_metrics(y_positive: Any, proba: Any, threshold: float) -> dict[str, float]:
    """ROC AUC (NaN when the labels hold one class), accuracy, F1, precision and recall."""
    import numpy as np
    from sklearn import metrics

    y = np.asarray(y_positive).astype(bool)
    pred = predicted_positive(proba, threshold)
    both_classes = 0 < int(y.sum()) < len(y)
    return {
        "roc_auc": float(metrics.roc_auc_score(y, proba)) if both_classes else float("nan"),
        "accuracy": float(metrics.accuracy_score(y, pred)),
        "f1": float(metrics.f1_score(y, pred, zero_division=0)),
        "precision": float(metrics.precision_score(y, pred, zero_division=0)),
        "recall": float(metrics.recall_score(y, pred, zero_division=0)),
    }


def multiclass_metrics(y_index: Any, proba: Any) -> dict[str, float]:
    """Macro F1, accuracy, log loss and macro one-vs-rest ROC AUC (NaN unless every class occurs).

    ``y_index`` holds class positions 0..K-1; ``proba`` is (rows, K), one column per class in that order.
    The prediction is the most probable class.
    """
    import numpy as np
    from sklearn import metrics

    y = np.asarray(y_index, dtype="int64")
    p = np.asarray(proba, dtype="float64")
    if p.ndim != 2 or p.shape[1] < 3:
        raise ValueError(f"multiclass metrics need one probability column per class (>= 3), got shape {p.shape}")
    labels = list(range(p.shape[1]))
    pred = p.argmax(axis=1)
    every_class = len(np.unique(y)) == p.shape[1]
    clipped = np.clip(p, 1e-15, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return {
        "macro_f1": float(metrics.f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "accuracy": float(metrics.accuracy_score(y, pred)),
        "log_loss": float(metrics.log_loss(y, clipped, labels=labels)),
        "roc_auc_ovr": float(metrics.roc_auc_score(y, clipped, multi_class="ovr", average="macro", labels=labels))
        if every_class
        else float("nan"),
    }


def regression_metrics(y_true: Any, predicted: Any) -> dict[str, float]:
    """RMSE, MAE and R² (NaN with fewer than two rows or a constant label)."""
    import numpy as np
    from sklearn import metrics

    y = np.asarray(y_true, dtype="float64")
    p = np.asarray(predicted, dtype="float64")
    r2 = float(metrics.r2_score(y, p)) if len(y) >= 2 and np.ptp(y) > 0 else float("nan")
    return {
        "rmse": float(math.sqrt(metrics.mean_squared_error(y, p))),
        "mae": float(metrics.mean_absolute_error(y, p)),
        "r2": r2,
    }


def task_metrics(task: str, y: Any, outputs: Any, threshold: float = 0.5) -> dict[str, float]:
    """The task's metrics from its encoded labels and model outputs (see the module doc for shapes)."""
    if task == "binary":
        return classification_metrics(y, outputs, threshold)
    if task == "multiclass":
        return multiclass_metrics(y, outputs)
    if task == "regression":
        return regression_metrics(y, outputs)
    raise ValueError(f"unknown task {task!r}; one of {', '.join(TASK_METRICS)}")


def meets(metric: str, value: float, bound: float) -> bool:
    """``value`` satisfies the threshold ``bound``: at least it, or at most it for an error metric."""
    if not math.isfinite(value):
        return False
    return value <= bound if lower_is_better(metric) else value >= bound
