"""MLflow's least privilege on a real server: ``mlflow server --app-name basic-auth`` on Postgres.

The users and grants are made the way production makes them: ``deploy/mlflow/apply_permissions.py``
run as the admin on ``deploy/mlflow/permissions.json``, with the server's auth config as the compose
file's (``default_permission = NO_PERMISSIONS``). Then each user calls the REST API over HTTP: what
its job needs succeeds, everything else is answered 403 by the server itself.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from mlops_dev.processes import free_port, spawn, stop, wait_http
from production_stack import BIN, PG, REPO, pg_admin

pytestmark = pytest.mark.timeout(900)

PERMISSIONS = REPO / "deploy" / "mlflow" / "permissions.json"
APPLY = REPO / "deploy" / "mlflow" / "apply_permissions.py"


@dataclass
class Server:
    url: str
    passwords: dict[str, str]  # permissions.json's user key (and "admin") -> password
    usernames: dict[str, str]

    def call(self, user: str, method: str, path: str, payload: dict[str, Any] | None = None) -> tuple[int, Any]:
        """``(status, body)`` of one REST call as ``user``; errors are returned, not raised."""
        token = base64.b64encode(f"{self.usernames[user]}:{self.passwords[user]}".encode()).decode()
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text else {}
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()[:300]

    def ok(self, user: str, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        status, body = self.call(user, method, path, payload)
        assert status == 200, f"{user}: {method} {path} answered {status}: {body}"
        return body

    def denied(self, user: str, method: str, path: str, payload: dict[str, Any] | None = None) -> None:
        status, body = self.call(user, method, path, payload)
        assert status == 403, f"{user}: {method} {path} should be refused, answered {status}: {body}"


def _compose_auth_config() -> configparser.ConfigParser:
    """The compose file's ``mlflow-auth`` config (the one production's server reads)."""
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    parser = configparser.ConfigParser()
    parser.read_string(compose["configs"]["mlflow-auth"]["content"])
    return parser


@pytest.fixture(scope="module")
def mlflow_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("mlflow-auth")
    tag = uuid.uuid4().hex[:8]
    databases = {name: f"mlops_perm_{tag}_{name}" for name in ("tracking", "auth")}
    created: list[str] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        for database in databases.values():
            pg_admin(f'CREATE DATABASE "{database}"')
            created.append(database)
        config = _compose_auth_config()
        config["mlflow"]["database_uri"] = f"postgresql://{PG}/{databases['auth']}"
        with (root / "basic_auth.ini").open("w") as handle:
            config.write(handle)
        spec = json.loads(PERMISSIONS.read_text())
        usernames = {"admin": f"admin-{tag}", **{key: f"{key}-{tag}" for key in spec["users"]}}
        passwords = {key: secrets.token_urlsafe(18) for key in usernames}
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_", "MLFLOW_", "AWS_"))}
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server_env = {
            **clean,
            "MLFLOW_AUTH_CONFIG_PATH": str(root / "basic_auth.ini"),
            "MLFLOW_AUTH_ADMIN_USERNAME": usernames["admin"],
            "MLFLOW_AUTH_ADMIN_PASSWORD": passwords["admin"],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
        }
        args = [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"postgresql://{PG}/{databases['tracking']}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--app-name",
            "basic-auth",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        proc = spawn(args, server_env, root / "mlflow.log")
        wait_http(f"{url}/health", 240, proc)

        # mlflow-init: the admin applies the file, each user's name and password from its own variables.
        init_env = {
            **clean,
            "MLFLOW_TRACKING_URI": url,
            "MLFLOW_TRACKING_USERNAME": usernames["admin"],
            "MLFLOW_TRACKING_PASSWORD": passwords["admin"],
        }
        for key, user in spec["users"].items():
            init_env[user["username_env"]] = usernames[key]
            init_env[user["password_env"]] = passwords[key]
        for _ in range(2):  # idempotent: a second start of the init job changes nothing and does not fail
            done = subprocess.run(
                [sys.executable, str(APPLY), str(PERMISSIONS)],
                env=init_env,
                check=False,
                capture_output=True,
                text=True,
                timeout=300,  # imports MLflow and hashes passwords: slow on a busy machine
            )
            assert done.returncode == 0, done.stderr[-2000:]
        yield Server(url=url, passwords=passwords, usernames=usernames)
    finally:
        if proc is not None:
            stop(proc)
        for database in created:
            pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _training_run(server: Server) -> tuple[str, str]:
    """An experiment and a run the training user made and logged to, as a training pod does."""
    name = f"credit_risk-{uuid.uuid4().hex[:6]}"
    experiment = server.ok("training", "POST", "/api/2.0/mlflow/experiments/create", {"name": name})
    run = server.ok("training", "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment["experiment_id"]})[
        "run"
    ]
    run_id = run["info"]["run_id"]
    server.ok("training", "POST", "/api/2.0/mlflow/runs/log-parameter", {"run_id": run_id, "key": "C", "value": "1"})
    server.ok(
        "training",
        "POST",
        "/api/2.0/mlflow/runs/log-metric",
        {"run_id": run_id, "key": "auc", "value": 0.8, "timestamp": 0, "step": 0},
    )
    return experiment["experiment_id"], run_id


def _upload(server: Server, user: str, experiment_id: str, run_id: str) -> int:
    """PUT one artifact of the run through the server's artifact proxy, as ``log_model`` does."""
    token = base64.b64encode(f"{server.usernames[user]}:{server.passwords[user]}".encode()).decode()
    request = urllib.request.Request(
        f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/model/MLmodel",
        data=b"flavors: {}\n",
        headers={"Authorization": f"Basic {token}"},
        method="PUT",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _register(server: Server, run_id: str) -> str:
    """Airflow registers the training run's model and points ``challenger`` at it."""
    model = f"credit_risk-{uuid.uuid4().hex[:6]}"
    server.ok("airflow", "POST", "/api/2.0/mlflow/registered-models/create", {"name": model})
    version = server.ok(
        "airflow",
        "POST",
        "/api/2.0/mlflow/model-versions/create",
        {"name": model, "source": f"runs:/{run_id}/model", "run_id": run_id},
    )["model_version"]["version"]
    server.ok(
        "airflow",
        "POST",
        "/api/2.0/mlflow/registered-models/alias",
        {"name": model, "alias": "challenger", "version": version},
    )
    return model


def test_training_user_logs_runs_but_never_touches_the_registry(mlflow_auth_server: Server) -> None:
    server = mlflow_auth_server
    experiment_id, run_id = _training_run(server)
    assert _upload(server, "training", experiment_id, run_id) == 200
    model = _register(server, run_id)
    server.denied("training", "POST", "/api/2.0/mlflow/registered-models/create", {"name": f"{model}-mine"})
    server.denied(
        "training",
        "POST",
        "/api/2.0/mlflow/model-versions/create",
        {"name": model, "source": f"runs:/{run_id}/model", "run_id": run_id},
    )
    for alias in ("champion", "challenger"):
        server.denied(
            "training",
            "POST",
            "/api/2.0/mlflow/registered-models/alias",
            {"name": model, "alias": alias, "version": "1"},
        )
    server.denied(
        "training", "DELETE", "/api/2.0/mlflow/registered-models/alias", {"name": model, "alias": "challenger"}
    )
    server.denied("training", "GET", f"/api/2.0/mlflow/registered-models/get?name={model}")
    # Nor can it give itself more: the permission APIs are the admin's.
    server.denied(
        "training",
        "POST",
        "/api/3.0/mlflow/users/permissions/grant",
        {
            "username": server.usernames["training"],
            "resource_type": "registered_model",
            "resource_id": "*",
            "permission": "MANAGE",
        },
    )


def test_airflow_user_registers_versions_and_moves_aliases(mlflow_auth_server: Server) -> None:
    server = mlflow_auth_server
    experiment_id, run_id = _training_run(server)
    # The gates read the training run (another user's).
    assert server.ok("airflow", "GET", f"/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]["data"]["metrics"]
    model = _register(server, run_id)
    server.ok(
        "airflow",
        "POST",
        "/api/2.0/mlflow/registered-models/alias",
        {"name": model, "alias": "champion", "version": "1"},
    )
    found = server.ok("airflow", "GET", f"/api/2.0/mlflow/registered-models/alias?name={model}&alias=champion")
    assert found["model_version"]["version"] == "1"
    server.ok(
        "airflow",
        "POST",
        "/api/2.0/mlflow/model-versions/set-tag",
        {"name": model, "version": "1", "key": "mlops.audit", "value": "promoted"},
    )
    # Airflow is not the admin: it cannot make users or grant itself anything.
    server.denied("airflow", "POST", "/api/2.0/mlflow/users/create", {"username": "intruder", "password": "x" * 20})
    assert experiment_id


def test_reader_reads_runs_and_models_and_writes_nothing(mlflow_auth_server: Server) -> None:
    server = mlflow_auth_server
    experiment_id, run_id = _training_run(server)
    model = _register(server, run_id)
    assert server.ok("reader", "GET", f"/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]["info"]["run_id"] == run_id
    assert server.ok("reader", "GET", f"/api/2.0/mlflow/registered-models/get?name={model}")
    found = server.ok("reader", "GET", f"/api/2.0/mlflow/registered-models/alias?name={model}&alias=challenger")
    assert found["model_version"]["version"] == "1"
    server.denied("reader", "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id})
    server.denied(
        "reader",
        "POST",
        "/api/2.0/mlflow/runs/log-metric",
        {"run_id": run_id, "key": "auc", "value": 1.0, "timestamp": 0, "step": 0},
    )
    assert _upload(server, "reader", experiment_id, run_id) == 403
    server.denied("reader", "DELETE", "/api/2.0/mlflow/registered-models/delete", {"name": model})
    # MLflow's limit (README, Security model): without workspaces, creating a NEW experiment or
    # registered model is refused only by a DENY grant, which would also hide every existing one.
    # So a reader can create a model of its own (and manage it), never write to the platform's.
    server.ok("reader", "POST", "/api/2.0/mlflow/registered-models/create", {"name": f"{model}-mine"})
    server.ok("reader", "POST", "/api/2.0/mlflow/experiments/create", {"name": f"{model}-mine"})
    server.denied(
        "reader",
        "POST",
        "/api/2.0/mlflow/registered-models/alias",
        {"name": model, "alias": "champion", "version": "1"},
    )


def test_a_wrong_password_is_refused(mlflow_auth_server: Server) -> None:
    server = mlflow_auth_server
    wrong = Server(server.url, {**server.passwords, "reader": "not-the-password"}, server.usernames)
    status, _ = wrong.call("reader", "GET", "/api/2.0/mlflow/experiments/search?max_results=1")
    assert status == 401
    assert server.call("reader", "GET", "/api/2.0/mlflow/experiments/search?max_results=1")[0] == 200


def test_no_one_outside_the_file_has_a_default_grant(mlflow_auth_server: Server) -> None:
    """A user the file does not name gets NO_PERMISSIONS: the default grants nothing."""
    server = mlflow_auth_server
    _, run_id = _training_run(server)
    stranger = f"stranger-{uuid.uuid4().hex[:6]}"
    password = secrets.token_urlsafe(18)
    server.ok("admin", "POST", "/api/2.0/mlflow/users/create", {"username": stranger, "password": password})
    other = Server(server.url, {**server.passwords, "stranger": password}, {**server.usernames, "stranger": stranger})
    other.denied("stranger", "GET", f"/api/2.0/mlflow/runs/get?run_id={run_id}")
