"""Small value helpers shared across packages: JSON-safe values, finite floats, SQL identifiers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def finite_or_none(value: float) -> float | None:
    """NaN and infinities become None (JSON has no such numbers)."""
    return float(value) if math.isfinite(value) else None


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: keys as strings, paths as text, numpy scalars as Python, NaN/inf as null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return finite_or_none(value)
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        return jsonable(value.item())
    return value


def quote_identifier(name: str) -> str:
    """A SQL identifier in double quotes (SQLite, DuckDB), embedded quotes doubled."""
    return '"' + name.replace('"', '""') + '"'
