"""Which label values are the positive class: one rule for training, the gates, scoring and monitoring.

Labels arrive as integers, strings or booleans (``1``, ``"malignant"``, ``True``) and may be read back in
another type than the config names (a CSV's ``"1"``, a parquet's ``bool``). Every comparison goes through
:func:`positive_mask`, so a label type can never silently turn every row into the negative class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

_TRUE_STRINGS = {"true", "1"}
_FALSE_STRINGS = {"false", "0"}


def _as_bool(value: Any) -> bool | None:
    """A boolean reading of a label value, or None when it has none (e.g. ``"malignant"``, ``7``)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE_STRINGS | _FALSE_STRINGS:
        return value.strip().lower() in _TRUE_STRINGS
    return None


def positive_mask(values: Any, positive_class: bool | int | str) -> np.ndarray:
    """Boolean array: which ``values`` equal the configured positive class.

    Booleans compare as booleans (``True`` matches ``1`` and ``"true"``), numbers as numbers (``1`` matches
    ``1.0`` and ``"1"``), anything else as its string. Missing values are never positive.
    """
    series = pd.Series(values) if not isinstance(values, pd.Series) else values
    missing = series.isna().to_numpy()
    kind = series.dtype.kind
    if kind == "b" or isinstance(positive_class, bool):
        wanted = _as_bool(positive_class)
        if wanted is not None:
            readings = series.map(_as_bool) if kind != "b" else series
            return np.asarray(readings == wanted, dtype=bool) & ~missing
    if kind in "iuf" and isinstance(positive_class, int | float) and not isinstance(positive_class, bool):
        return np.asarray(series.to_numpy() == positive_class, dtype=bool) & ~missing
    if isinstance(positive_class, int) and not isinstance(positive_class, bool):
        numbers = pd.to_numeric(series, errors="coerce")
        return np.asarray(numbers == positive_class, dtype=bool) & ~missing
    return np.asarray(series.astype(str).to_numpy() == str(positive_class), dtype=bool) & ~missing


def binary_target(values: pd.Series, positive_class: bool | int | str) -> pd.Series:
    """1 for the positive class, else 0, as the integer target the estimators are fitted on."""
    return pd.Series(positive_mask(values, positive_class).astype("int64"), index=values.index, name=values.name)
