"""Airflow's own processes on the embedded default, for the demo and the scheduler-driven tests.

Starts the scheduler, dag-processor, triggerer and api-server (LocalExecutor, SQLite) as background
processes in their own process groups, and always stops them by pid. Runs are triggered and read
through Airflow's own API functions on the same metadata DB, so nothing here re-implements scheduling.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops.core.settings import Settings, airflow_env
from mlops_dev.processes import free_port, spawn, stop_all

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
TERMINAL = {"success", "failed"}


def scheduler_env(settings: Settings, port: int) -> dict[str, str]:
    """Airflow settings for a small, quick local deployment on this state folder."""
    return {
        **airflow_env(settings),
        # LocalExecutor whose task processes inherit the ML stack already imported (see mlops.orchestration.executor).
        "AIRFLOW__CORE__EXECUTOR": "mlops.orchestration.executor.PreloadingLocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__WORKERS": "1",
        # React quickly: the loop's latency is what the demo reports.
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__SIMPLE_AUTH_MANAGER__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    }


@dataclass
class RunInfo:
    dag_id: str
    run_id: str
    state: str
    run_type: str
    start: datetime | None
    end: datetime | None
    conf: dict[str, Any]
    consumed_event_ids: list[int]


class AirflowServices:
    """The four Airflow processes, started in the background and stopped by pid."""

    def __init__(self, settings: Settings, log_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # A clean Airflow configuration: inherited AIRFLOW* settings (a test runner's unit-test mode, another
        # deployment's DB) must not leak into these processes; MLOPS_* settings do carry over. ``extra_env``
        # (e.g. a Postgres metadata DB, real auth) is applied last.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env = {**inherited, **scheduler_env(settings, self.port), **(extra_env or {})}
        # Rows this process wrote to the same metadata DB (e.g. the triggers of Asset watchers, synced by an
        # in-process dag.test) are encrypted with its Fernet key: the processes must be able to read them.
        from airflow.configuration import conf

        fernet_key = conf.get("core", "fernet_key", fallback="")
        if fernet_key and "AIRFLOW__CORE__FERNET_KEY" not in (extra_env or {}):
            self.env["AIRFLOW__CORE__FERNET_KEY"] = fernet_key
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> AirflowServices:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 180) -> None:
        airflow = str(Path(sys.executable).with_name("airflow"))
        subprocess.run([airflow, "db", "migrate"], env=self.env, check=True, capture_output=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in COMPONENTS:
            self.procs[name] = spawn([airflow, name], self.env, self.log_dir / f"{name}.log")
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()  # never leave half a deployment running
            raise

    def _wait_healthy(self, timeout: float) -> None:
        """Every component healthy, and the scheduler loop running.

        ``/health`` calls the scheduler healthy from the heartbeat it writes when it starts, before its
        executor has started (which imports the ML stack, ~30 s: see ``mlops.orchestration.executor``), so a second
        heartbeat, written by the scheduling loop itself, is awaited too.
        """
        import json
        import urllib.request

        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/api/v2/monitor/health"
        last = ""
        first_beat: str | None = None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited with {proc.returncode}; see {self.log_dir}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    health = json.load(response)
                if all(
                    health.get(c, {}).get("status") == "healthy" for c in ("scheduler", "triggerer", "dag_processor")
                ):
                    beat = str(health["scheduler"].get("latest_scheduler_heartbeat"))
                    if first_beat is None:
                        first_beat = beat
                    elif beat != first_beat:
                        return
                last = str(health)
            except OSError as exc:
                last = str(exc)
            time.sleep(1)
        raise TimeoutError(f"Airflow did not become healthy in {timeout:.0f} s: {last}")

    def stop(self) -> None:
        stop_all(self.procs.values(), grace=10)
        self.procs.clear()

    # ------------------------------------------------------------------ runs, through Airflow's API

    def trigger(self, dag_id: str, *, conf: dict[str, Any] | None = None, logical_date: datetime | None = None) -> str:
        from airflow.api.common.trigger_dag import trigger_dag
        from airflow.utils.types import DagRunTriggeredByType

        # The data interval of a manual run is inferred from run_after, not from the logical date.
        run = trigger_dag(
            dag_id,
            conf=conf or {},
            logical_date=logical_date,
            run_after=logical_date,
            triggered_by=DagRunTriggeredByType.CLI,
        )
        if run is None:
            raise RuntimeError(f"could not trigger {dag_id}")
        return str(run.run_id)

    def runs(self, dag_id: str) -> list[RunInfo]:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        with create_session() as session:
            found = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.id).all()
            return [
                RunInfo(
                    dag_id=r.dag_id,
                    run_id=r.run_id,
                    state=str(r.state),
                    run_type=str(r.run_type),
                    start=r.start_date,
                    end=r.end_date,
                    conf=dict(r.conf or {}),
                    consumed_event_ids=[e.id for e in r.consumed_asset_events],
                )
                for r in found
            ]

    def task_start(self, dag_id: str, run_id: str, task_id: str) -> datetime | None:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            ti = (
                session.query(TaskInstance)
                .filter(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.run_id == run_id,
                    TaskInstance.task_id == task_id,
                )
                .one_or_none()
            )
            return ti.start_date if ti else None

    def _task_instances(self, dag_id: str, run_id: str) -> list[tuple[str, str, int]]:
        """(task_id, state, try_number) of every task instance of the run."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id).all()
            return [(ti.task_id, str(ti.state), int(ti.try_number)) for ti in tis]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        return {task_id: state for task_id, state, _ in self._task_instances(dag_id, run_id)}

    def try_numbers(self, dag_id: str, run_id: str) -> dict[str, int]:
        return {task_id: tries for task_id, _, tries in self._task_instances(dag_id, run_id)}

    def wait(self, what: str, condition: Callable[[], Any], timeout: float, poll: float = 1.0) -> Any:
        """Poll until ``condition()`` is truthy; fail with what we waited for."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} died while waiting for {what}; see {self.log_dir}")
            time.sleep(poll)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

    def wait_finished(self, dag_id: str, run_id: str, timeout: float) -> RunInfo:
        def finished() -> RunInfo | None:
            run = next((r for r in self.runs(dag_id) if r.run_id == run_id), None)
            return run if run and run.state in TERMINAL else None

        result: RunInfo = self.wait(f"{dag_id} {run_id} to finish", finished, timeout)
        return result


def asset_events(asset: str) -> list[dict[str, Any]]:
    """Every event of an asset, oldest first: id, timestamp, source run and extra."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == asset)
            .order_by(AssetEvent.id)
        ).all()
        return [
            {
                "id": r.id,
                "timestamp": r.timestamp,
                "source_dag_id": r.source_dag_id,
                "source_run_id": r.source_run_id,
                "extra": dict(r.extra or {}),
            }
            for r in rows
        ]
