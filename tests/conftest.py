"""Shared test set-up: every test gets its own state folder; Airflow points at the repo's dags/."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))
sys.path.insert(0, str(REPO / "deploy"))  # deploycheck: the deployment's rule checkers, run by tests and compose

# Before anything imports Airflow: a fresh AIRFLOW_HOME of this session's own, never the demo's (which
# `make` exports) nor an earlier session's, whose rows (e.g. encrypted watcher triggers) would leak in.
_SESSION_STATE = Path(os.environ.get("MLOPS_TEST_STATE", REPO / ".mlops" / "test-session")) / f"pid-{os.getpid()}"
shutil.rmtree(_SESSION_STATE, ignore_errors=True)
(_SESSION_STATE / "airflow").mkdir(parents=True)
atexit.register(shutil.rmtree, _SESSION_STATE, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = str(_SESSION_STATE / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_SESSION_STATE / 'airflow' / 'airflow.db'}"
os.environ["GX_ANALYTICS_ENABLED"] = "False"
# dag.test() writes the DAG it runs, but by default not within 30 s of the last write: a test's DAG (its
# Assets located in that test's lake) must replace the previous test's at once, or its tasks would emit
# to the previous test's (inactive) Asset locations.
os.environ["AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL"] = "0"
# OpenLineage: the provider's listener writes the session's events to a file, one JSON line each (the
# production transport is an HTTP endpoint set in docker-compose.yaml). Set before any plugin loads.
OPENLINEAGE_EVENTS = _SESSION_STATE / "openlineage" / "events.jsonl"
OPENLINEAGE_EVENTS.parent.mkdir()
os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
    {"type": "file", "log_file_path": str(OPENLINEAGE_EVENTS), "append": True}
)
os.environ["AIRFLOW__OPENLINEAGE__NAMESPACE"] = "mlops-tests"
os.environ["AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD"] = "True"  # no fork per event in the test process
os.environ["DO_NOT_TRACK"] = "1"

pytest_plugins = ["production_stack"]


def pytest_configure(config: pytest.Config) -> None:
    """Feast without typeguard's import-time recompilation in this process (see mlops.features.boot)."""
    from mlops.features import boot

    boot.install()


MODELS = ["credit_risk", "tumor_diagnosis"]


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An isolated embedded environment: lake, landing, MLflow, Feast and reports under tmp_path."""
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("MLOPS_ENV", "local")
    monkeypatch.setenv("MLOPS_STATE_DIR", str(state))
    names = (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "MLOPS_LANDING_URI",
        "MLOPS_LAKE_URI",
        "MLOPS_MODELS_DIR",
        "MLOPS_TRAINING_BACKEND",
    )
    before = {name: os.environ.get(name) for name in names}
    for name in names:
        monkeypatch.delenv(name, raising=False)
    yield state
    # mlflow.set_tracking_uri/set_registry_uri also export MLFLOW_*_URI: never let them outlive the test.
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests on the production stack last and together, so its services live only as long as needed.

    A test is on the stack when it requests the ``production_stack`` fixture (directly or through another),
    or carries the ``production_stack`` mark (a parameter of a fixture that requests the stack at run time).

    Under pytest-xdist (``make test`` runs two workers with ``--dist loadgroup``) they form one group, so one
    worker starts the stack once and runs them all while the other worker takes the embedded-default tests.
    ``tryfirst``: a worker's xdist plugin, registered after this file, turns the ``xdist_group`` mark into the
    group suffix of the node id in its own ``pytest_collection_modifyitems``, which must see the mark.
    """
    on_stack = [
        item
        for item in items
        if "production_stack" in getattr(item, "fixturenames", ()) or item.get_closest_marker("production_stack")
    ]
    for item in on_stack:
        item.add_marker(pytest.mark.xdist_group("production_stack"))
    for item in items:  # a module-scoped fixture (a server, a landed folder) is set up by one worker, once
        if not item.get_closest_marker("xdist_group") and _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(f"module:{item.nodeid.split('::')[0]}"))
    for item in items:  # every group, also those a test file marks itself (tests that share a Redis database)
        names = sorted(
            {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
        )
        if names:
            _xdist_group(item, "_".join(names))
    if on_stack:
        items[:] = [item for item in items if item not in on_stack] + on_stack


def _uses_module_fixture(item: pytest.Item) -> bool:
    """Whether ``item`` requests a module-scoped fixture (without the fixture info: no grouping)."""
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", {}) or {}
    return any(getattr(d, "scope", "") == "module" for chain in defs.values() for d in chain)


def _xdist_group(item: pytest.Item, group: str) -> None:
    """Put ``item`` (already marked ``xdist_group``) into that pytest-xdist ``--dist loadgroup`` group.

    pytest-xdist 3.8 marks the group by appending ``@<group>`` to ``item._nodeid``, which pytest 9.2's
    ``Node.nodeid`` no longer reads (it is ``str(item._id)``): without the suffix in the node id the
    controller schedules every test on its own, and two workers would each start a production stack.
    """
    if getattr(item.config.option, "loadgroup", False) and not item.nodeid.endswith(f"@{group}"):
        from _pytest.nodeid import coerce_node_id

        item._id = coerce_node_id(f"{item.nodeid}@{group}")
