"""Airflow's roles on a live api-server with the FAB auth manager, as production sets them up.

The metadata DB is a fresh Postgres database migrated by ``airflow db migrate`` (FAB's tables
included, as ``airflow-init`` does); the roles and users are made by running the FAB part of
``airflow-init``'s own script, taken from docker-compose.yaml, so the test checks what production
runs. The api-server alone answers: every assertion is an HTTP call with the user's JWT from FAB's
``/auth/token``. No scheduler runs: a triggered run gets its task instances at creation, and the
approval's Human-in-the-loop row (which the ApprovalOperator writes when it starts waiting) is
inserted for it, so a person's answer goes through the real endpoint and permission checks.

FAB roles cannot say "not the run you triggered": the API records who answered, and ``promote``
refuses a promotion approved by the run's triggering user (``mlops.model.approval``). That rule is
checked here on the values the live API returns.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from mlops.model.approval import SelfApprovalError, approver
from mlops_dev.processes import free_port, spawn, stop, wait_http
from production_stack import BIN, PG, REPO, AirflowApi, pg_admin

pytestmark = pytest.mark.timeout(900)

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
DAG = "credit_risk__training"
APPROVAL = "approve_promotion"
ROLES = ("admin", "viewer", "operator", "approver")


def airflow_init_fab_script() -> str:
    """The FAB part of docker-compose's ``airflow-init`` (after its auth-manager check), run as bash here.

    Compose's ``$$`` escapes become ``$``, and the container path of deploy/airflow becomes the repo's.
    """
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    init = compose["services"]["airflow-init"]
    script = init["command"][1].replace("$$", "$")
    _head, marker, fab_part = script.partition("*FabAuthManager ]]; then exit 0; fi\n")
    assert marker, "airflow-init no longer checks the auth manager before its FAB part"
    mounts = dict(volume.split(":")[:2] for volume in init["volumes"] if isinstance(volume, str))
    container = next(target for source, target in mounts.items() if source == "./deploy/airflow")
    return "set -euo pipefail\n" + fab_part.replace(container, str(REPO / "deploy" / "airflow"))


@dataclass
class FabAirflow:
    base_url: str
    env: dict[str, str]
    database: str
    apis: dict[str, AirflowApi]
    usernames: dict[str, str]

    def status(self, role: str, method: str, path: str, payload: dict[str, Any] | None = None) -> tuple[int, Any]:
        """``(status, body)`` of one API call as the user of ``role``."""
        try:
            return 200, self.apis[role].call(method, path, payload)
        except RuntimeError as exc:
            found = re.search(r"HTTP (\d+): (.*)", str(exc), re.DOTALL)
            assert found, exc
            return int(found[1]), found[2]

    def allowed(self, role: str, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        code, body = self.status(role, method, path, payload)
        assert code == 200, f"{role}: {method} {path} answered {code}: {body}"
        return body

    def forbidden(self, role: str, method: str, path: str, payload: dict[str, Any] | None = None) -> None:
        code, body = self.status(role, method, path, payload)
        assert code == 403, f"{role}: {method} {path} should be forbidden, answered {code}: {body}"

    def trigger(self, role: str) -> str:
        body = self.allowed(role, "POST", f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {}})
        run_id = str(body["dag_run_id"])
        self._await_approval(run_id)
        return run_id

    def _await_approval(self, run_id: str) -> None:
        """The row the ApprovalOperator writes when it starts waiting for a person."""
        import psycopg
        from psycopg.types.json import Jsonb

        with psycopg.connect(f"postgresql://{PG}/{self.database}", autocommit=True) as conn:
            row = conn.execute(
                "SELECT id FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = %s",
                (DAG, run_id, APPROVAL),
            ).fetchone()
            assert row, f"no {APPROVAL} task instance in {run_id}"
            conn.execute(
                "INSERT INTO hitl_detail (ti_id, options, subject, body, defaults, multiple, params, params_input,"
                " created_at) VALUES (%s, %s, %s, %s, %s, false, %s, %s, now())",
                (
                    row[0],
                    Jsonb(["Approve", "Reject"]),
                    "Promote credit_risk to champion?",
                    None,
                    Jsonb(["Reject"]),
                    Jsonb({}),
                    Jsonb({}),
                ),
            )

    def run_path(self, run_id: str) -> str:
        return f"/dags/{DAG}/dagRuns/{urllib.parse.quote(run_id)}"

    def answer(self, role: str, run_id: str, option: str = "Approve") -> tuple[int, Any]:
        path = f"{self.run_path(run_id)}/taskInstances/{APPROVAL}/-1/hitlDetails"
        return self.status(role, "PATCH", path, {"chosen_options": [option], "params_input": {}})


def operator_result(answered: dict[str, Any]) -> dict[str, Any]:
    """The ApprovalOperator's result (its XCom, which ``promote`` reads) for an answer the API stored.

    Its trigger reads the stored ``responded_by`` back as ``responded_by_user``.
    """
    return {"chosen_options": answered["chosen_options"], "responded_by_user": answered["responded_by"]}


def _airflow(env: dict[str, str], *args: str, timeout: float = 300) -> None:
    done = subprocess.run(
        [str(BIN / "airflow"), *args], env=env, check=False, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"airflow {' '.join(args)}: {done.stdout[-1500:]}{done.stderr[-1500:]}"


@pytest.fixture(scope="module")
def fab_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FabAirflow]:
    """An api-server with the FAB auth manager, its roles and users made by airflow-init's script."""
    from cryptography.fernet import Fernet

    root = tmp_path_factory.mktemp("fab-airflow")
    tag = uuid.uuid4().hex[:8]
    database = f"mlops_roles_{tag}"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    usernames = {role: f"{role}-{tag}" for role in ROLES}
    passwords = {role: secrets.token_urlsafe(18) for role in ROLES}
    passwords["approver"] = "-" + passwords["approver"]  # generated passwords can start with "-"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_", "MLFLOW_", "AWS_"))}
    env = {
        **clean,
        "PATH": f"{BIN}{os.pathsep}{clean.get('PATH', '')}",  # the script's `airflow` and `python`
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{PG}/{database}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__WORKERS": "1",
        "MLOPS_ENV": "local",
        "MLOPS_STATE_DIR": str(root / "state"),
        "PYTHONPATH": str(REPO / "include"),
        **{f"AIRFLOW_{role.upper()}_USERNAME": usernames[role] for role in ROLES},
        **{f"AIRFLOW_{role.upper()}_PASSWORD": passwords[role] for role in ROLES},
    }
    created = False
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pg_admin(f'CREATE DATABASE "{database}"')
        created = True
        _airflow(env, "db", "migrate")
        serialize = spawn([str(BIN / "airflow"), "dags", "reserialize"], env, root / "reserialize.log")
        procs.append(serialize)
        for start in ("first", "second"):  # airflow-init runs on every `docker compose up`
            init = subprocess.run(
                ["bash", "-c", airflow_init_fab_script()],
                env=env,
                check=False,
                capture_output=True,
                text=True,
                timeout=400,
            )
            output = init.stdout + init.stderr
            assert init.returncode == 0, f"airflow-init's FAB part, {start} start: {output[-3000:]}"
            assert ("added to role" in output) == (start == "first"), output[-3000:]
        assert serialize.wait(timeout=300) == 0, (root / "reserialize.log").read_text()[-2000:]
        procs.append(spawn([str(BIN / "airflow"), "api-server"], env, root / "api-server.log"))
        wait_http(f"{base_url}/api/v2/version", 240, procs[-1])
        apis = {role: AirflowApi(base_url, usernames[role], passwords[role]) for role in ROLES}
        for api in apis.values():
            api.login()
        yield FabAirflow(base_url, env, database, apis, usernames)
    finally:
        for proc in procs:
            stop(proc)
        if created:
            pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_airflow_init_made_one_user_per_role(fab_airflow: FabAirflow) -> None:
    """Each user airflow-init made has exactly the roles the Security model names (after two starts)."""
    listing = subprocess.run(
        [str(BIN / "airflow"), "users", "list", "-o", "json"],
        env=fab_airflow.env,
        check=False,
        capture_output=True,
        text=True,
    )
    table = [line for line in listing.stdout.splitlines() if line.startswith("[")][-1]  # after any warning
    users = {user["username"]: user["roles"] for user in json.loads(table)}
    expected = {
        "admin": "Admin",
        "viewer": "Viewer",
        "operator": "Viewer,MLOps Operator",
        "approver": "Viewer,MLOps Approver",
    }
    for role, roles in expected.items():
        assert sorted(users[fab_airflow.usernames[role]]) == sorted(roles.split(","))


def test_a_wrong_password_gets_no_token(fab_airflow: FabAirflow) -> None:
    api = AirflowApi(fab_airflow.base_url, fab_airflow.usernames["approver"], "not-the-password")
    with pytest.raises(urllib.error.HTTPError) as raised:
        api.login()
    assert raised.value.code == 401


def test_viewer_reads_and_changes_nothing(fab_airflow: FabAirflow) -> None:
    stack = fab_airflow
    run_id = stack.trigger("admin")
    assert stack.allowed("viewer", "GET", f"/dags/{DAG}")["dag_id"] == DAG
    runs = stack.allowed("viewer", "GET", f"/dags/{DAG}/dagRuns")["dag_runs"]
    assert run_id in {run["dag_run_id"] for run in runs}
    assert stack.allowed("viewer", "GET", f"{stack.run_path(run_id)}/taskInstances/{APPROVAL}/-1/hitlDetails")
    stack.forbidden("viewer", "POST", f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {}})
    assert stack.answer("viewer", run_id)[0] == 403
    stack.forbidden("viewer", "PATCH", f"/dags/{DAG}", {"is_paused": False})
    stack.forbidden("viewer", "PATCH", f"{stack.run_path(run_id)}/taskInstances/{APPROVAL}", {"new_state": "success"})


def test_operator_triggers_but_cannot_approve_nor_bypass_the_approval(fab_airflow: FabAirflow) -> None:
    stack = fab_airflow
    run_id = stack.trigger("operator")
    run = stack.allowed("operator", "GET", stack.run_path(run_id))
    assert run["triggering_user_name"] == stack.usernames["operator"]
    code, body = stack.answer("operator", run_id)
    assert code == 403, body
    # Marking the approval (or the run) done, or clearing it, would step around the person's answer.
    ti_path = f"{stack.run_path(run_id)}/taskInstances/{APPROVAL}"
    stack.forbidden("operator", "PATCH", ti_path, {"new_state": "success"})
    stack.forbidden("operator", "PATCH", stack.run_path(run_id), {"state": "success"})
    stack.forbidden(
        "operator",
        "POST",
        f"/dags/{DAG}/clearTaskInstances",
        {"dry_run": False, "dag_run_id": run_id, "task_ids": [APPROVAL]},
    )
    stack.forbidden("operator", "POST", "/variables", {"key": "mlops_test", "value": "x"})
    stack.forbidden("operator", "GET", "/connections")
    # The approval is still unanswered.
    detail = stack.allowed("operator", "GET", f"{ti_path}/-1/hitlDetails")
    assert detail["response_received"] is False


def test_approver_answers_a_run_someone_else_triggered(fab_airflow: FabAirflow) -> None:
    stack = fab_airflow
    stack.forbidden("approver", "POST", f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {}})
    run_id = stack.trigger("operator")
    code, answered = stack.answer("approver", run_id)
    assert code == 200, answered
    assert answered["chosen_options"] == ["Approve"]
    assert answered["responded_by"]["name"] == stack.usernames["approver"]
    # What promote sees: four eyes hold.
    run = stack.allowed("approver", "GET", stack.run_path(run_id))
    assert approver(operator_result(answered), run["triggering_user_name"]) == stack.usernames["approver"]
    # A second answer is refused: the first one stands.
    assert stack.answer("approver", run_id, "Reject")[0] == 409
    ti_path = f"{stack.run_path(run_id)}/taskInstances/{APPROVAL}"
    stack.forbidden("approver", "PATCH", ti_path, {"new_state": "success"})
    stack.forbidden(
        "approver",
        "POST",
        f"/dags/{DAG}/clearTaskInstances",
        {"dry_run": False, "dag_run_id": run_id, "task_ids": [APPROVAL]},
    )


def test_no_one_approves_a_run_they_triggered(fab_airflow: FabAirflow) -> None:
    """Admin may trigger and answer (break-glass), but promote refuses its self-approval."""
    stack = fab_airflow
    run_id = stack.trigger("admin")
    code, answered = stack.answer("admin", run_id)
    assert code == 200, answered
    run = stack.allowed("admin", "GET", stack.run_path(run_id))
    assert run["triggering_user_name"] == stack.usernames["admin"]
    with pytest.raises(SelfApprovalError, match=stack.usernames["admin"]):
        approver(operator_result(answered), run["triggering_user_name"])


def test_admin_can_do_everything(fab_airflow: FabAirflow) -> None:
    stack = fab_airflow
    run_id = stack.trigger("admin")
    ti_path = f"{stack.run_path(run_id)}/taskInstances/{APPROVAL}"
    stack.allowed("admin", "PATCH", ti_path, {"new_state": "success"})
    stack.allowed(
        "admin",
        "POST",
        f"/dags/{DAG}/clearTaskInstances",
        {"dry_run": True, "dag_run_id": run_id, "task_ids": [APPROVAL]},
    )
    stack.allowed("admin", "POST", "/variables", {"key": f"mlops_test_{uuid.uuid4().hex[:6]}", "value": "x"})
    stack.allowed("admin", "GET", "/connections")
    stack.allowed("admin", "PATCH", f"/dags/{DAG}", {"is_paused": True})
