"""Group labels for fairness: one readable label per row of a sensitive attribute, whatever its type.

A categorical attribute keeps its values; a numeric one without bins shows its numbers as written
(``0``/``1``, never ``0.0``/``1.0``); a binned numeric attribute (``sensitive_groups.<column>.edges`` or
``.quantiles``) becomes ranges such as ``age < 30``, ``age 30-45``, ``age ≥ 45``. Missing values are the
group ``(missing)``, so they are reported rather than silently dropped.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from mlops.core.config import ModelConfig

MISSING = "(missing)"


def number(value: float) -> str:
    """A number as a person writes it: ``1`` for 1.0, ``0.25`` for 0.25, ``1.5e+06`` for 1500000.5."""
    if math.isfinite(value) and float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


def quantile_edges(values: pd.Series, quantiles: int) -> list[float]:
    """Inner edges cutting ``values`` into ``quantiles`` equal-count bins (ties merge bins)."""
    numbers = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype="float64")
    if len(numbers) == 0:
        return []
    cuts = np.quantile(numbers, [k / quantiles for k in range(1, quantiles)])
    low, high = numbers.min(), numbers.max()
    return sorted({float(c) for c in cuts if low < c <= high})


def bin_labels(column: str, edges: list[float]) -> list[str]:
    """Labels of the bins that inner ``edges`` make: ``x < e0``, ``x e0-e1``, …, ``x ≥ en``."""
    if not edges:
        return [f"{column} (all)"]
    shown = [number(e) for e in edges]
    middle = [f"{column} {a}-{b}" for a, b in itertools.pairwise(shown)]
    return [f"{column} < {shown[0]}", *middle, f"{column} ≥ {shown[-1]}"]


def binned(values: pd.Series, column: str, edges: list[float]) -> pd.Series:
    """Each value's bin label (left-closed bins: 30 falls in ``30-45``); non-numbers are ``(missing)``."""
    numbers = pd.to_numeric(values, errors="coerce")
    labels = bin_labels(column, edges)
    index = np.searchsorted(np.asarray(edges, dtype="float64"), numbers.to_numpy(dtype="float64"), side="right")
    out = pd.Series([labels[i] for i in index], index=values.index, dtype=object)
    return out.where(numbers.notna(), MISSING)


def _plain(values: pd.Series) -> pd.Series:
    """Unbinned values as text; numbers (and numeric text like ``"1.0"``) without a trailing ``.0``."""

    def text(value: object) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            return MISSING
        if isinstance(value, bool | np.bool_):
            return str(bool(value)).lower()
        if isinstance(value, int | float | np.integer | np.floating):
            return number(float(value))
        return str(value)

    return pd.Series([text(v) for v in values.astype(object)], index=values.index, dtype=object)


def group_labels(values: pd.Series, cfg: ModelConfig, column: str) -> pd.Series:
    """The fairness group of every row for sensitive attribute ``column`` (see the module doc)."""
    spec = cfg.sensitive_groups.get(column)
    if spec is not None and spec.edges is not None:
        return binned(values, column, list(spec.edges))
    if spec is not None and spec.quantiles is not None:
        return binned(values, column, quantile_edges(values, spec.quantiles))
    return _plain(values)
