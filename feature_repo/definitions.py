"""Feast objects of every model config, for the ``feast`` CLI run in this folder.

The platform itself never imports this file: tasks call ``mlops.features.store.apply`` per model. The CLI
(``feast plan`` / ``feast apply``) collects module-level Feast objects, so each object is bound to a
module global here. A broken model YAML fails the CLI rather than being skipped, because a full
``feast apply`` deletes registry objects that are missing from the repo.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

_INCLUDE = Path(__file__).resolve().parents[1] / "include"
if str(_INCLUDE) not in sys.path:  # the CLI does not load the project's .pth in every setup
    sys.path.insert(0, str(_INCLUDE))

from mlops.core.config import discover  # noqa: E402
from mlops.core.settings import get_settings  # noqa: E402
from mlops.features.store import repo_objects, validated_root  # noqa: E402


def _objects() -> list[Any]:
    settings = get_settings()
    loaded, errors = discover(settings.models_dir)
    if errors:
        raise RuntimeError("invalid model configs:\n" + "\n".join(str(e) for e in errors))
    return repo_objects([item.config for item in loaded], validated_root(settings))


for _obj in _objects():
    globals()[f"{type(_obj).__name__.lower()}__{_obj.name}"] = _obj
