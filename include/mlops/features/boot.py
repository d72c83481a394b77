"""Import Feast without typeguard's import-time instrumentation.

Feast decorates its classes with typeguard's ``@typechecked``, which re-parses and recompiles the
source of every decorated class while Feast is imported: about 4 of the ~9 s an ``import feast``
took here, paid again by every Airflow task process that touches the feature store. The checks it
adds are run-time checks of the arguments of Feast's own constructors; our calls are type-checked
statically and covered by the tests, so the decorator is made a no-op for objects of the ``feast``
package only, and everything else that uses ``@typechecked`` keeps it.

:func:`install` adds an import hook that does this at the moment ``feast`` is first imported. It is
called explicitly where a process starts (the preloading executor, the demo, the benchmarks, the
test session); importing :mod:`mlops` changes nothing. ``MLOPS_FEAST_TYPECHECKS=1`` keeps Feast's
checks (e.g. while debugging a Feast definition).
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any


def _in_feast(target: Any) -> bool:
    module = getattr(target, "__module__", None) or ""
    return module == "feast" or module.startswith("feast.")


def filtered(original: Callable[..., Any]) -> Callable[..., Any]:
    """``typeguard.typechecked`` that leaves objects defined in ``feast`` alone."""

    def typechecked(target: Any = None, **options: Any) -> Any:
        if target is None:
            return lambda inner: typechecked(inner, **options)
        if _in_feast(target):
            return target
        return original(target, **options)

    typechecked.__wrapped__ = original  # type: ignore[attr-defined]
    return typechecked


class _FeastImportHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself: on the first ``import feast`` it filters typeguard, then leaves."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: object = None) -> None:
        if fullname == "feast":
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _FeastImportHook)]
            import typeguard

            if not hasattr(typeguard.typechecked, "__wrapped__"):
                typeguard.typechecked = filtered(typeguard.typechecked)


def install() -> bool:
    """Add the import hook unless turned off or Feast is already imported; True when added."""
    if os.environ.get("MLOPS_FEAST_TYPECHECKS") == "1" or "feast" in sys.modules:
        return False
    if not any(isinstance(f, _FeastImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _FeastImportHook())
    return True
