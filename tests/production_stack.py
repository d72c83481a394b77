"""The production stack on loopback, for tests/integration/test_real_services.py and tests/browser/.

Real services, started here and stopped by pid (or already running on this machine):

- PostgreSQL (already running, 127.0.0.1:5432): one fresh database each for Airflow, MLflow and the Feast
  SQL registry, dropped at the end;
- Redis (already running, 127.0.0.1:6379): Feast's online store, in a database of its own, flushed;
- moto's S3-compatible server (a process): buckets for landing, the lake and MLflow's artifacts;
- an MLflow tracking server (a process) on Postgres, serving artifacts from S3 (``--serve-artifacts``);
- Airflow's api-server, scheduler, dag-processor and triggerer (LocalExecutor) on Postgres, with the
  simple auth manager and real passwords (no all-admins shortcut): ``admin``, and ``nobody``, who signs in
  but has no role, so no permission on any DAG.

Beside ``credit_risk``, the models folder holds ``SEEDED_MODEL``, a copy of its config that nothing lands
data for: the cockpit's API tests seed its registry (``mlops_dev.cockpit_bench.seed``) without touching
the registry of the model the other tests train.

The project runs in ``MLOPS_ENV=production`` with training on the local backend (no cluster here). A
missing prerequisite fails loudly: nothing is skipped.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_dev.processes import free_port, kill, spawn, stop, wait_http

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = "credit_risk"
SEEDED_MODEL = "cockpit_seeded"
NO_DAG_ACCESS = "nobody"  # a user of the simple auth manager without a role
START = date(2026, 3, 1)
DAYS = 4
PG = "postgres@127.0.0.1:5432"
# Each concurrent pytest session on one machine may set its own database (default 13).
REDIS_DB = int(os.environ.get("MLOPS_TEST_REDIS_DB", "13"))


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as conn:
        conn.execute(sql)


@dataclass
class AirflowApi:
    """Airflow's public REST API, authenticated as a user of the simple auth manager."""

    base_url: str
    username: str
    password: str
    token: str = ""

    def login(self) -> None:
        body = json.dumps({"username": self.username, "password": self.password}).encode()
        request = urllib.request.Request(
            f"{self.base_url}/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            self.token = json.load(response)["access_token"]

    def call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            f"{self.base_url}/api/v2{path}",
            data=data,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {exc.read().decode()[:500]}") from None

    def trigger(self, dag_id: str, *, conf: dict[str, Any] | None = None, logical_date: datetime | None = None) -> str:
        payload = {"logical_date": logical_date.isoformat() if logical_date else None, "conf": conf or {}}
        return str(self.call("POST", f"/dags/{dag_id}/dagRuns", payload)["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}")
        return result

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(dag_id, run_id)
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(2)
        raise TimeoutError(f"{dag_id} {run_id} did not finish in {timeout:.0f} s")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        found = self.call("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in found["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        path = f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/{task_id}/xcomEntries/return_value"
        return self.call("GET", f"{path}?deserialize=true")["value"]


@dataclass
class ServiceProcess:
    """A service process that a fault test may SIGKILL and start again with the same arguments."""

    args: list[str]
    env: dict[str, str]
    log: Path
    health_url: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 240) -> None:
        self.proc = spawn(self.args, self.env, self.log)
        wait_http(self.health_url, timeout, self.proc)

    def kill(self) -> None:
        """SIGKILL the whole process group (no shutdown handler runs), and reap it."""
        if self.proc is not None:
            kill(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    buckets: dict[str, str]
    s3_endpoint: str
    mlflow_uri: str
    api: AirflowApi
    databases: dict[str, str] = field(default_factory=dict)
    mlflow: ServiceProcess | None = None
    landed: dict[str, bytes] = field(default_factory=dict)
    data_runs: list[str] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)  # every user of the simple auth manager

    def user(self, username: str) -> AirflowApi:
        """The REST API as another user of the stack, logged in with their password."""
        api = AirflowApi(self.api.base_url, username, self.passwords[username])
        api.login()
        return api

    @property
    def ui_url(self) -> str:
        return self.api.base_url

    @contextmanager
    def project_env(self) -> Iterator[None]:
        """This process sees the production settings the Airflow processes see; restored afterwards."""
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def s3(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )


def start_moto(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """moto's server (S3, SQS, ...) as a process on a free loopback port, answering; stop it with ``stop``."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = spawn([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env, log)
    try:
        wait_http(f"{endpoint}/moto-api/", 60, proc)
    except BaseException:
        stop(proc)
        raise
    return proc, endpoint


@pytest.fixture
def moto_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's server process (S3 and SQS) for one test; this process's AWS clients point at it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_", "MLFLOW_", "AWS_"))}
    proc, endpoint = start_moto(clean, tmp_path / "moto.log")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLOPS_S3_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_SQS": endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    try:
        yield endpoint
    finally:
        stop(proc)


# The stack's stop while it runs. It is called after the last test on the stack (pytest_runtest_teardown),
# so the services do not idle beside the rest of the session; the fixture's own teardown then has nothing left.
_STACK: dict[str, Any] = {"stop": None, "stopped_early": False}


def on_stack(item: pytest.Item) -> bool:
    """Whether ``item`` runs on the stack (tests/conftest.py puts every such test in this xdist group)."""
    return any(m.args[:1] == ("production_stack",) for m in item.iter_markers("xdist_group"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if on_stack(item) and _STACK["stopped_early"]:
        pytest.fail("the production stack was stopped after what looked like its last test: run its tests together")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Once the item's own fixtures are torn down: stop the stack after its last test in this process."""
    try:
        yield
    finally:
        if _STACK["stop"] is not None and on_stack(item) and (nextitem is None or not on_stack(nextitem)):
            stop_stack, _STACK["stop"], _STACK["stopped_early"] = _STACK["stop"], None, True
            stop_stack()


@pytest.fixture(scope="session")
def production_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Every real service the production mode talks to, on loopback; stopped after the last test on it."""
    import boto3
    import redis
    from cryptography.fernet import Fernet

    from mlops_dev.services import AirflowServices

    root = tmp_path_factory.mktemp("production-stack")
    logs = root / "logs"
    logs.mkdir()
    tag = uuid.uuid4().hex[:8]
    databases = {name: f"mlops_it_{tag}_{name}" for name in ("airflow", "mlflow", "feast")}
    buckets = {name: f"mlops-it-{tag}-{name}" for name in ("landing", "lake", "mlflow")}
    procs: list[subprocess.Popen[bytes]] = []
    mlflow_server: ServiceProcess | None = None
    created: list[str] = []
    services: AirflowServices | None = None
    online = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)

    def stop_all() -> None:
        if services is not None:
            services.stop()
        if mlflow_server is not None:
            mlflow_server.stop()
        for proc in reversed(procs):
            stop(proc)
        online.flushdb()
        for database in created:
            pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        shutil.rmtree(root / "state", ignore_errors=True)

    _STACK["stop"] = stop_all
    try:
        online.ping()  # fails loudly when the machine's Redis is not running
        for database in databases.values():
            pg_admin(f'CREATE DATABASE "{database}"')
            created.append(database)
        aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_", "MLFLOW_", "AWS_"))}

        moto, endpoint = start_moto(clean, logs / "s3.log")
        procs.append(moto)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_keys(aws))
        for bucket in buckets.values():
            s3.create_bucket(Bucket=bucket)

        mlflow_port = free_port()
        mlflow_uri = f"http://127.0.0.1:{mlflow_port}"
        mlflow_args = [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"postgresql+psycopg2://{PG}/{databases['mlflow']}",
            "--artifacts-destination",
            f"s3://{buckets['mlflow']}/artifacts",
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            "--workers",
            "1",
        ]
        mlflow_env = {**clean, **aws, "MLFLOW_S3_ENDPOINT_URL": endpoint}
        mlflow_server = ServiceProcess(mlflow_args, mlflow_env, logs / "mlflow.log", f"{mlflow_uri}/health")
        mlflow_server.start()

        models = root / "models"
        models.mkdir()
        config = yaml.safe_load((REPO / "include" / "models" / f"{MODEL}.yaml").read_text())
        config["training"]["schedule"] = None  # every training run here is triggered through the API or UI
        # The stack's tests are about services, roles and the UI: a passing version becomes champion at once
        # (canary rollouts have their own tests).
        config.setdefault("promotion", {})["strategy"] = "immediate"
        (models / f"{MODEL}.yaml").write_text(yaml.safe_dump(config))
        seeded = {**config, "name": SEEDED_MODEL, "source": {**config["source"], "landing": SEEDED_MODEL}}
        (models / f"{SEEDED_MODEL}.yaml").write_text(yaml.safe_dump(seeded))
        from mlops.model.signing import ensure_local_key

        signing_key = ensure_local_key(root / "keys")  # production has no default key: the stack brings one
        env = {
            **aws,
            "MLOPS_ENV": "production",
            "MLOPS_STATE_DIR": str(root / "state"),
            "MLOPS_MODELS_DIR": str(models),
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "MLFLOW_REGISTRY_URI": mlflow_uri,  # never one inherited from an earlier test
            "MLOPS_LANDING_URI": f"s3://{buckets['landing']}/landing",
            "MLOPS_LAKE_URI": f"s3://{buckets['lake']}/lake",
            "MLOPS_S3_ENDPOINT_URL": endpoint,
            "FEAST_REGISTRY_URL": f"postgresql+psycopg://{PG}/{databases['feast']}",
            "FEAST_REDIS_CONNECTION": f"127.0.0.1:6379,db={REDIS_DB}",
            "MLOPS_TRAINING_BACKEND": "local",
            "MLOPS_SIGNING_KEY_FILE": str(signing_key),
            "MLOPS_TRUSTED_KEYS_PATH": str(signing_key.parent / "trusted"),
        }
        password = secrets.token_urlsafe(18)
        users = {"admin": password, NO_DAG_ACCESS: secrets.token_urlsafe(18)}
        passwords = root / "passwords.json"
        passwords.write_text(json.dumps(users))
        airflow = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{PG}/{databases['airflow']}",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"admin:admin,{NO_DAG_ACCESS}:",  # username:role
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
            # The OpenLineage provider's events, one JSON line each (production sends them over HTTP).
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(root / "openlineage.jsonl"), "append": True}
            ),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "mlops-stack",
        }
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            from mlops.core.settings import get_settings

            services = AirflowServices(get_settings(), logs / "airflow", extra_env=airflow)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        services.start(timeout=300)
        api = AirflowApi(services.base_url, "admin", password)
        api.login()
        deadline = time.monotonic() + 180
        while True:  # the dag-processor has to have parsed the DAG files before they can be triggered
            try:
                api.call("GET", f"/dags/{MODEL}__training")
                api.call("GET", f"/dags/{MODEL}__data")
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        yield Stack(
            root=root,
            env=env,
            buckets=buckets,
            s3_endpoint=endpoint,
            mlflow_uri=mlflow_uri,
            api=api,
            databases=databases,
            mlflow=mlflow_server,
            passwords=users,
        )
    finally:
        stop_stack, _STACK["stop"] = _STACK["stop"], None
        if stop_stack is not None:
            stop_stack()


def _keys(aws: dict[str, str]) -> dict[str, str]:
    return {"aws_access_key_id": aws["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": aws["AWS_SECRET_ACCESS_KEY"]}


@pytest.fixture(scope="session")
def stack_with_data(production_stack: Stack) -> Stack:
    """DAYS labelled batches landed in S3 and taken through `<model>__data` via the REST API."""
    from mlops_dev.datagen import GENERATORS

    stack = production_stack
    if stack.data_runs:
        return stack
    s3 = stack.s3()
    for offset in range(DAYS):
        day = START + timedelta(days=offset)
        content = GENERATORS[MODEL](day, rows_per_batch=300).to_csv(index=False).encode()
        s3.put_object(Bucket=stack.buckets["landing"], Key=f"landing/{MODEL}/{day}.csv", Body=content)
        stack.landed[str(day)] = content
    for offset in range(DAYS):
        day = START + timedelta(days=offset + 1)
        logical = datetime(day.year, day.month, day.day, tzinfo=UTC)
        stack.data_runs.append(stack.api.trigger(f"{MODEL}__data", logical_date=logical))
    for run_id in stack.data_runs:
        run = stack.api.wait_run(f"{MODEL}__data", run_id, 600)
        assert run["state"] == "success", (run_id, stack.api.task_states(f"{MODEL}__data", run_id))
    return stack
