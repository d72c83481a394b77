"""The preloading LocalExecutor: what it imports, when, and what a failed import does.

The scheduler-driven tests (tests/integration/test_scheduler_loop.py) run every task through it and
check the scheduler's log line; these tests pin the pieces without a scheduler.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from airflow.executors.executor_loader import ExecutorLoader
from airflow.executors.executor_utils import ExecutorName
from airflow.executors.local_executor import LocalExecutor

from mlops.orchestration import executor


def test_preload_list_is_config_as_data() -> None:
    assert executor.preload_modules({}) == executor.DEFAULT_PRELOAD
    assert executor.preload_modules({executor.PRELOAD_ENV: " pandas , ,mlops.model.train"}) == (
        "pandas",
        "mlops.model.train",
    )
    assert executor.preload_modules({executor.PRELOAD_ENV: ""}) == ()
    # A setting never chooses arbitrary code to import: a module outside the allowed packages is refused.
    with pytest.raises(ValueError, match=r"outside the allowed packages: os\.path, antigravity; allowed: .*mlops"):
        executor.preload_modules({executor.PRELOAD_ENV: "pandas,os.path,antigravity"})
    # Every default names a module that exists in this environment (a typo would only be logged).
    from importlib.util import find_spec

    assert all(find_spec(name) is not None for name in executor.DEFAULT_PRELOAD)


def test_a_failed_import_is_reported_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"preload_broken_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    failed = executor.preload(("json", name, "no_such_module_xyz"))
    assert set(failed) == {name, "no_such_module_xyz"}
    assert failed[name] == "RuntimeError: boom"
    assert failed["no_such_module_xyz"].startswith("ModuleNotFoundError")


def test_modules_are_imported_before_the_workers_are_forked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"preload_probe_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(executor.PRELOAD_ENV, name)
    monkeypatch.setattr(executor, "PRELOAD_PACKAGES", executor.PRELOAD_PACKAGES | {name})  # a probe of its own
    seen: list[bool] = []
    # Record, at each fork, whether the module is already there; fork nothing.
    monkeypatch.setattr(LocalExecutor, "_spawn_worker", lambda self: seen.append(name in sys.modules))
    # As the scheduler resolves AIRFLOW__CORE__EXECUTOR=mlops.orchestration.executor.PreloadingLocalExecutor.
    loaded = ExecutorLoader.load_executor(ExecutorName("mlops.orchestration.executor.PreloadingLocalExecutor"))
    assert isinstance(loaded, LocalExecutor) and loaded.is_mp_using_fork
    loaded.parallelism = 2
    try:
        loaded.start()
        assert seen == [True, True]
    finally:
        sys.modules.pop(name, None)
