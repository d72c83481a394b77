"""LocalExecutor whose task processes start with the ML stack already imported.

Airflow's LocalExecutor forks its worker processes from the scheduler, and each worker forks one
process per task (``os.fork`` on Linux). Every task of ours then imported the same heavy libraries
again: Evidently ~17 s, Great Expectations ~15 s, Feast ~9 s, MLflow ~9 s and scikit-learn ~7 s of
CPU on a 2-core machine, paid per task and larger than most tasks' own work. This executor imports
them once, in the scheduler, just before the workers are forked; the workers and every task process
share those pages copy-on-write and find the modules in ``sys.modules``.

Only modules are imported, nothing is called: no settings are read, no connection or client is made,
so nothing process-specific crosses the fork. A module that fails to import is logged and skipped
(the task that needs it then reports the error itself); the scheduler never fails because of it.

Select it with ``AIRFLOW__CORE__EXECUTOR=mlops.orchestration.executor.PreloadingLocalExecutor``. The modules are
config as data: ``MLOPS_EXECUTOR_PRELOAD`` is a comma-separated list replacing ``DEFAULT_PRELOAD``
(empty: preload nothing, i.e. plain LocalExecutor behaviour).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time

from airflow.executors.local_executor import LocalExecutor

log = logging.getLogger(__name__)

PRELOAD_ENV = "MLOPS_EXECUTOR_PRELOAD"

# What our tasks import, heaviest first. The `mlops.*` modules import their libraries lazily, so the
# libraries are named here themselves.
DEFAULT_PRELOAD: tuple[str, ...] = (
    "evidently",
    "evidently.presets",
    "evidently.tests",
    "great_expectations",
    "mlops.features.store",
    "mlflow",
    "mlflow.sklearn",
    "sklearn.metrics",
    "fairlearn.metrics",
    "scipy.stats",
    "duckdb",
    "pyarrow.parquet",
    "mlops.data.steps",
    "mlops.features.steps",
    "mlops.model.launch",
    "mlops.model.steps",
    "mlops.quality.steps",
    "mlops.data.validate",
    "mlops.quality.gates",
    "mlops.quality.monitoring",
    "mlops.model.registry",
    "mlops.model.scoring",
    "mlops.model.train",
)


# The packages a configured list may name modules of: a setting chooses among these, never what code runs.
PRELOAD_PACKAGES = frozenset({*(name.split(".")[0] for name in DEFAULT_PRELOAD), "pandas", "numpy", "xgboost", "feast"})


def preload_modules(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The modules to import before forking: ``MLOPS_EXECUTOR_PRELOAD`` if set, else the default.

    A configured module outside :data:`PRELOAD_PACKAGES` is refused (ValueError naming it and the allowed
    packages): a setting must not choose what code the scheduler imports.
    """
    raw = (os.environ if environ is None else environ).get(PRELOAD_ENV)
    if raw is None:
        return DEFAULT_PRELOAD
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    refused = [name for name in names if name.split(".")[0] not in PRELOAD_PACKAGES]
    if refused:
        raise ValueError(
            f"{PRELOAD_ENV} names modules outside the allowed packages: {', '.join(refused)}; "
            f"allowed: {', '.join(sorted(PRELOAD_PACKAGES))}"
        )
    return names


def preload(names: tuple[str, ...]) -> dict[str, str]:
    """Import ``names``; returns the ones that failed with their error (they are logged, not raised)."""
    from mlops.features import boot

    boot.install()  # before anything imports Feast (see mlops.features.boot)
    failed: dict[str, str] = {}
    started = time.perf_counter()
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a task needing it reports the error itself; the scheduler must run
            failed[name] = f"{type(exc).__name__}: {exc}"
            log.warning("preload of %s failed: %s", name, failed[name])
    extra = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    log.info(
        "preloaded %d of %d modules in %.1f s before forking workers; other threads: %s",
        len(names) - len(failed),
        len(names),
        time.perf_counter() - started,
        extra or "none",
    )
    return failed


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor that imports the ML stack once before it forks its workers."""

    def start(self) -> None:
        if self.is_mp_using_fork:  # with spawn nothing is inherited, so importing here would only cost
            preload(preload_modules())
        super().start()
