"""Integration fixtures: a migrated Airflow metadata DB and a DagBag of the real dags/ folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def airflow_db() -> None:
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())


def _retire_other_tests_assets() -> None:
    """Make this test's Assets the active ones, and its DAGs the ones the in-process API serves.

    Asset URIs are the data's location, and each test has its own lake: Airflow activates an Asset only
    while no active one has its name. A scheduler retires the previous locations as orphans after a
    re-parse; ``dag.test()`` runs no scheduler. And a DAG version without task instances is rewritten in
    place, which the process's in-process execution API (cached for the process) sees only after
    ``[core] min_serialized_dag_update_interval``: its DAG cache is cleared here.
    """
    from airflow.models.asset import AssetActive
    from airflow.sdk.execution_time.supervisor import in_process_api_server
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(AssetActive))
    in_process_api_server().app.state.dag_bag.clear_cache()


@pytest.fixture
def run_dag(airflow_db: None, state_dir: Path) -> Callable[..., Any]:
    """Run a DAG of the real dags/ folder with dag.test() (what `airflow dags test` does)."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import timezone

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    _retire_other_tests_assets()

    def run(dag_id: str, day: date | None = None, conf: dict[str, Any] | None = None, full: bool = False) -> Any:
        """The run's state ('success'/'failed'), or the DagRun itself with ``full=True``."""
        dag = bag.dags[dag_id]
        if day is not None:
            logical = timezone.datetime(day.year, day.month, day.day) + timedelta(days=1)
            dag_run = dag.test(logical_date=logical, run_conf=conf)
        else:
            dag_run = dag.test(run_conf=conf)
        return dag_run if full else str(dag_run.state)

    return run
