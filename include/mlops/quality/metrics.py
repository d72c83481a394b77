"""Classification metrics: the one implementation that training, the gates, scoring and monitoring use.

Every caller passes the positive-class indicator (0/1 or boolean) and the probability of the positive
class; the decision threshold comes from the model's config (``label.decision_threshold``).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def predicted_positive(proba: Any, threshold: float) -> np.ndarray:
    """Rows predicted positive: probability at or above the decision threshold."""
    return np.asarray(proba, dtype="float64") >= threshold


def classification_metrics(y_positive: Any, proba: Any, threshold: float) -> dict[str, float]:
    """ROC AUC (NaN when the labels hold one class), accuracy, F1, precision and recall."""
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
