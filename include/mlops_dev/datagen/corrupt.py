"""Planted bad rows, shared by every generator: each corrupted row breaks one data-quality rule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def corrupt_rows(
    frame: pd.DataFrame, bad_rows: int, rng: np.random.Generator, corruptions: Sequence[tuple[str, object]]
) -> pd.DataFrame:
    """A copy of ``frame`` with ``bad_rows`` distinct rows (chosen by ``rng``) each set to the next of
    ``corruptions`` (column, value) in turn; ``frame`` itself when ``bad_rows`` is 0."""
    if bad_rows <= 0:
        return frame
    if bad_rows > len(frame):
        raise ValueError(f"bad_rows={bad_rows} exceeds the batch size {len(frame)}")
    frame = frame.copy()
    for k, row in enumerate(rng.choice(len(frame), bad_rows, replace=False)):
        column, value = corruptions[k % len(corruptions)]
        frame.iloc[row, frame.columns.get_loc(column)] = value
    return frame
