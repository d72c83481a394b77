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


@pytest.fixture
def run_dag(airflow_db: None, state_dir: Path) -> Callable[..., Any]:
    """Run a DAG of the real dags/ folder with dag.test() (what `airflow dags test` does)."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import timezone

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}

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
