"""Least privilege, checked as configuration (no container engine or cluster runs here).

* The stack refuses placeholder secrets: ``deploycheck.py check-secrets`` is run for real, as the
  compose job ``secrets-check`` runs it, and every other service waits for it.
* One identity per job: S3 users with their own policies (evaluated here with IAM's rules), MLflow
  users with their own grants (validated with MLflow's own validators), Airflow FAB roles that keep
  triggering and approving apart.
* The training namespace enforces Pod Security ``restricted``, and a NetworkPolicy limits the
  training pods' egress to DNS, MLflow and S3.

Each rule is also run on a broken copy, to show it can fail.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from kubernetes.client import ApiClient

import deploycheck as dc
from mlops.core.config import ResourcesConfig
from mlops.orchestration.pod import ROLE_LABEL, gpu_pod_operator

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
DEPLOYCHECK = REPO / "deploy" / "deploycheck.py"
K8S_DIR = REPO / "deploy" / "k8s"
S3_POLICIES = REPO / "deploy" / "minio" / "policies"
MLFLOW_PERMISSIONS = REPO / "deploy" / "mlflow" / "permissions.json"
AIRFLOW_ROLES = REPO / "deploy" / "airflow" / "roles.json"
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return dc.parse_env_file(ENV_EXAMPLE.read_text())


def _generated_env(example: dict[str, str]) -> dict[str, str]:
    """A filled-in .env: every credential replaced, the way .env.example tells a person to."""
    env = dict(example)
    for key in example:
        if not dc.is_credential(key):
            continue
        if key.endswith(("_USER", "_USERNAME")):
            env[key] = f"{key.lower().replace('_', '-')}-{secrets.token_hex(3)}"
        elif key in dc.FERNET_KEYS:
            env[key] = base64.urlsafe_b64encode(os.urandom(32)).decode()
        else:
            env[key] = secrets.token_urlsafe(64 if key == "AIRFLOW_JWT_SECRET" else 24)
    return env


def _run_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The secrets-check job's command, with nothing in its environment but ``env`` (as in compose)."""
    return subprocess.run(
        [sys.executable, str(DEPLOYCHECK), "check-secrets", str(ENV_EXAMPLE)],
        env={"PATH": os.environ.get("PATH", "/usr/bin"), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


# ------------------------------------------------------------------------------ placeholder secrets


def test_secrets_check_refuses_the_example_env(env_example: dict[str, str]) -> None:
    result = _run_check(env_example)
    assert result.returncode == 1, result.stdout + result.stderr
    credentials = [key for key in env_example if dc.is_credential(key)]
    assert len(credentials) >= 20
    for key in credentials:
        assert f"refusing to start: {key}: still the placeholder" in result.stderr, key


def test_secrets_check_accepts_a_generated_env(env_example: dict[str, str]) -> None:
    result = _run_check(_generated_env(env_example))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "none a placeholder" in result.stdout


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("REDIS_PASSWORD", None, "not set"),
        ("REDIS_PASSWORD", "short-pw", "8 characters, needs at least 16"),
        ("AIRFLOW_JWT_SECRET", "x" * 40, "40 characters, needs at least 64"),
        ("POSTGRES_PASSWORD", "Change-Me-but-longer-than-16", "still the placeholder"),
        ("MLFLOW_DB_PASSWORD", "p@ss/word:with%url#chars", "letters, digits"),
        ("AIRFLOW_FERNET_KEY", "not-a-fernet-key-but-long-enough", "Fernet key"),
        ("MINIO_ROOT_USER", "change-me-minio-root", "still the placeholder"),
    ],
)
def test_secrets_check_refuses_each_weak_value(
    env_example: dict[str, str], key: str, value: str | None, reason: str
) -> None:
    env = _generated_env(env_example)
    if value is None:
        del env[key]
    else:
        env[key] = value
    result = _run_check(env)
    assert result.returncode == 1
    assert f"{key}: " in result.stderr and reason in result.stderr, result.stderr


def test_secrets_check_refuses_a_shared_secret(env_example: dict[str, str]) -> None:
    env = _generated_env(env_example)
    env["MLOPS_TRAINING_S3_SECRET_ACCESS_KEY"] = env["MLOPS_S3_SECRET_ACCESS_KEY"]
    result = _run_check(env)
    assert result.returncode == 1
    assert "same value as" in result.stderr and "give every credential its own" in result.stderr


def test_secrets_check_runs_first_with_every_credential(
    raw_compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    services = dc.services(raw_compose)
    check = services["secrets-check"]
    assert dc.is_one_shot(check)
    assert check["entrypoint"][1:] == ["/opt/check/deploycheck.py", "check-secrets", "/opt/check/env.example"]
    mounts = dc.mount_targets(check)
    assert mounts["/opt/check/deploycheck.py"] == {"source": "./deploy/deploycheck.py", "read_only": True}
    assert mounts["/opt/check/env.example"] == {"source": "./.env.example", "read_only": True}
    assert check["network_mode"] == "none" and check["cap_drop"] == ["ALL"] and check["read_only"] is True
    # It sees every credential .env.example lists, each as a required reference to itself.
    env = dc.environment(check)
    credentials = {key for key in env_example if dc.is_credential(key)}
    assert set(env) == credentials
    for key, value in env.items():
        assert [use.name for use in dc.variables_in(value)] == [key], key
    assert _waits_for_the_check(raw_compose) == []


def _waits_for_the_check(compose: dict[str, Any]) -> list[str]:
    """Services that can start before secrets-check has succeeded (depends_on, followed through)."""
    services = dc.services(compose)

    def reaches(name: str, seen: set[str]) -> bool:
        for target, spec in (services[name].get("depends_on") or {}).items():
            if target == "secrets-check":
                if (spec or {}).get("condition") == "service_completed_successfully":
                    return True
            elif target not in seen and reaches(target, seen | {target}):
                return True
        return False

    return [name for name in services if name != "secrets-check" and not reaches(name, {name})]


def test_start_up_gate_rule_catches_a_service_that_skips_it(raw_compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(raw_compose)
    del broken["services"]["redis"]["depends_on"]
    # Airflow services still wait through postgres; redis itself no longer does.
    assert _waits_for_the_check(broken) == ["redis"]
    broken["services"]["postgres"]["depends_on"]["secrets-check"]["condition"] = "service_started"
    assert "postgres" in _waits_for_the_check(broken)


# ------------------------------------------------------------------------------------- S3 policies


def _policy(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((S3_POLICIES / f"{name}.json").read_text())
    return data


def _arn(path: str) -> str:
    return f"arn:aws:s3:::{path}"


RAW_OBJECT = "lake/raw/credit_risk/objects/ab/ab12.csv"
S3_EXPECTATIONS: dict[str, list[tuple[str, str, bool]]] = {
    "mlops-producer": [
        ("s3:PutObject", "landing/credit_risk/2026-03-01.csv", True),
        ("s3:GetObject", "landing/credit_risk/2026-03-01.csv", False),
        ("s3:DeleteObject", "landing/credit_risk/2026-03-01.csv", False),
        ("s3:PutObject", RAW_OBJECT, False),
        ("s3:GetObject", "lake/features/x.parquet", False),
        ("s3:PutObject", "mlflow/1/artifacts/model.pkl", False),
    ],
    "mlops-airflow": [
        ("s3:GetObject", "landing/credit_risk/2026-03-01.csv", True),
        ("s3:PutObject", "landing/credit_risk/2026-03-01.csv", False),
        ("s3:PutObject", RAW_OBJECT, True),  # the first write; versioning keeps it if rewritten
        ("s3:DeleteObject", RAW_OBJECT, False),
        ("s3:DeleteObjectVersion", RAW_OBJECT, False),
        ("s3:DeleteObjectVersion", "lake/features/x.parquet", False),
        ("s3:PutObject", "lake/features/x.parquet", True),
        ("s3:DeleteObject", "lake/features/x.parquet", True),
        ("s3:PutBucketVersioning", "lake", False),
        ("s3:PutBucketPolicy", "lake", False),
        ("s3:GetObject", "mlflow/1/artifacts/model.pkl", False),
    ],
    "mlops-training": [
        ("s3:GetObject", "lake/training_sets/credit_risk/x.parquet", True),
        ("s3:PutObject", "lake/runs/credit_risk/run-1/holdout.parquet", True),
        ("s3:PutObject", RAW_OBJECT, False),
        ("s3:DeleteObject", RAW_OBJECT, False),
        ("s3:DeleteObject", "lake/runs/credit_risk/run-1/holdout.parquet", False),
        ("s3:GetObject", "landing/credit_risk/2026-03-01.csv", False),
        ("s3:PutObject", "mlflow/1/artifacts/model.pkl", False),
    ],
    "mlops-mlflow": [
        ("s3:PutObject", "mlflow/1/artifacts/model.pkl", True),
        ("s3:GetObject", "mlflow/1/artifacts/model.pkl", True),
        ("s3:GetObject", "lake/features/x.parquet", False),
        ("s3:PutObject", "landing/x.csv", False),
        ("s3:DeleteObjectVersion", "mlflow/1/artifacts/model.pkl", False),
    ],
}


@pytest.mark.parametrize("name", sorted(S3_EXPECTATIONS))
def test_each_s3_identity_can_do_its_job_and_nothing_else(name: str) -> None:
    policy = _policy(name)
    wrong = [
        f"{action} {path}: expected {'allowed' if allowed else 'denied'}"
        for action, path, allowed in S3_EXPECTATIONS[name]
        if dc.s3_policy_allows(policy, action, _arn(path)) != allowed
    ]
    assert wrong == []


def test_s3_evaluation_rejects_a_broad_policy() -> None:
    """readwrite (what every platform user had before) lets anyone rewrite the raw store."""
    readwrite = {"Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]}]}
    assert dc.s3_policy_allows(readwrite, "s3:DeleteObject", _arn(RAW_OBJECT))
    assert dc.s3_policy_allows(readwrite, "s3:DeleteObjectVersion", _arn(RAW_OBJECT))
    producer = copy.deepcopy(_policy("mlops-producer"))
    producer["Statement"][0]["Resource"] = ["arn:aws:s3:::*"]
    assert dc.s3_policy_allows(producer, "s3:PutObject", _arn(RAW_OBJECT))
    with pytest.raises(ValueError, match="Condition"):
        dc.s3_policy_allows({"Statement": [{"Effect": "Allow", "Action": "s3:*", "Condition": {}}]}, "s3:X", "y")


def test_minio_init_gives_each_identity_its_own_policy(raw_compose: dict[str, Any]) -> None:
    init = dc.services(raw_compose)["minio-init"]
    script = init["command"][0]
    assert dc.mount_targets(init)["/policies"] == {"source": "./deploy/minio/policies", "read_only": True}
    users = re.findall(r'^mlops_s3_user "\$\$(\w+)" "\$\$(\w+)" ([\w-]+)$', script, re.MULTILINE)
    assert sorted(policy for _, _, policy in users) == sorted(p.stem for p in S3_POLICIES.glob("*.json"))
    access_keys = [key for key, _, _ in users]
    assert len(set(access_keys)) == len(access_keys) == 4
    assert "mc admin policy detach root readwrite" in script  # an upgraded stack loses the old grant
    assert not re.search(r"policy attach root (readwrite|consoleAdmin)", script)
    assert "mc version enable root/lake" in script  # an overwrite keeps the previous raw version
    # Each user's S3 keys go to the right place: MLflow's server and Airflow each their own.
    mlflow_env = dc.environment(dc.services(raw_compose)["mlflow"])
    airflow_env = dc.environment(dc.services(raw_compose)["airflow-scheduler"])
    mlflow_key = next(key for key, _, policy in users if policy == "mlops-mlflow")
    airflow_key = next(key for key, _, policy in users if policy == "mlops-airflow")
    assert [use.name for use in dc.variables_in(mlflow_env["AWS_ACCESS_KEY_ID"])] == [mlflow_key]
    assert [use.name for use in dc.variables_in(airflow_env["AWS_ACCESS_KEY_ID"])] == [airflow_key]


# ----------------------------------------------------------------------------------- MLflow users


def _mlflow_permissions_module() -> ModuleType:
    """mlflow.server.auth.permissions without the auth app (loaded alone: no Flask app is built)."""
    import mlflow

    path = Path(mlflow.__file__).parent / "server" / "auth" / "permissions.py"
    spec = importlib.util.spec_from_file_location("_mlflow_auth_permissions", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mlflow_permissions() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(MLFLOW_PERMISSIONS.read_text())
    return data


def test_mlflow_grants_are_valid_for_this_mlflow(mlflow_permissions: dict[str, Any]) -> None:
    permissions = _mlflow_permissions_module()
    permissions.get_permission(mlflow_permissions["default_permission"])
    for user in mlflow_permissions["users"].values():
        for resource_type, permission in user["grants"].items():
            permissions._validate_permission_for_resource_type(permission, resource_type)
            permissions._validate_resource_pattern("*", resource_type)
    with pytest.raises(Exception, match="Invalid permission"):
        permissions._validate_permission_for_resource_type("NO_PERMISSIONS", "experiment")


def _mlflow_problems(spec: dict[str, Any]) -> list[str]:
    """Who may do what in MLflow, as the issue asks: training writes runs only, readers read."""
    problems = []
    if spec["default_permission"] != "NO_PERMISSIONS":
        problems.append(f"default_permission {spec['default_permission']}: a new user should get nothing")
    users = spec["users"]
    for name, user in users.items():
        if "MANAGE" in user["grants"].values():
            problems.append(f"{name}: MANAGE (delete, change permissions) is the admin's")
    training = users["training"]["grants"]
    if training.get("experiment") != "EDIT":
        problems.append("training: needs EDIT on experiments to log its runs")
    for resource in ("registered_model", "prompt"):
        if training.get(resource) != "DENY":
            problems.append(f"training: must be denied {resource} (it never registers or promotes)")
    if set(users["reader"]["grants"].values()) != {"READ"}:
        problems.append("reader: READ only")
    if users["airflow"]["grants"].get("registered_model") != "EDIT":
        problems.append("airflow: needs EDIT on registered models (versions, aliases)")
    return problems


def test_mlflow_identities_are_least_privilege(mlflow_permissions: dict[str, Any]) -> None:
    assert _mlflow_problems(mlflow_permissions) == []


@pytest.mark.parametrize(
    ("user", "resource", "permission"),
    [
        ("training", "registered_model", "EDIT"),
        ("training", "prompt", None),
        ("reader", "experiment", "EDIT"),
        ("airflow", "experiment", "MANAGE"),
    ],
)
def test_mlflow_rule_rejects_a_broken_copy(
    mlflow_permissions: dict[str, Any], user: str, resource: str, permission: str | None
) -> None:
    broken = copy.deepcopy(mlflow_permissions)
    if permission is None:
        del broken["users"][user]["grants"][resource]
    else:
        broken["users"][user]["grants"][resource] = permission
    assert _mlflow_problems(broken)


def test_mlflow_server_and_init_job_apply_the_grants(
    raw_compose: dict[str, Any], mlflow_permissions: dict[str, Any], env_example: dict[str, str]
) -> None:
    services = dc.services(raw_compose)
    ini = raw_compose["configs"]["mlflow-auth"]["content"]
    assert re.search(r"^default_permission = (\w+)$", ini, re.MULTILINE)[1] == mlflow_permissions["default_permission"]  # type: ignore[index]
    init = services["mlflow-init"]
    assert dc.is_one_shot(init)
    assert init["entrypoint"][1:] == [
        "/opt/airflow/deploy/mlflow/apply_permissions.py",
        "/opt/airflow/deploy/mlflow/permissions.json",
    ]
    assert dc.mount_targets(init)["/opt/airflow/deploy/mlflow"] == {"source": "./deploy/mlflow", "read_only": True}
    assert init["depends_on"] == {"mlflow": {"condition": "service_healthy"}}
    env = dc.environment(init)
    for user in mlflow_permissions["users"].values():
        for key in (user["username_env"], user["password_env"]):
            assert key in env_example and [use.name for use in dc.variables_in(env[key])] == [key]
    # Airflow waits for the users to exist, and logs in as its own.
    for name in ("airflow-scheduler", "airflow-apiserver", "airflow-worker"):
        assert services[name]["depends_on"]["mlflow-init"] == {"condition": "service_completed_successfully"}
        tracking_user = dc.environment(services[name])["MLFLOW_TRACKING_USERNAME"]
        assert [use.name for use in dc.variables_in(tracking_user)] == [
            mlflow_permissions["users"]["airflow"]["username_env"]
        ]
    # The admin password reaches the MLflow server (first start), the init job and the check only.
    holders = {
        name
        for name, service in services.items()
        if any(use.name == "MLFLOW_ADMIN_PASSWORD" for text in dc.strings_in(service) for use in dc.variables_in(text))
    }
    assert holders == {"mlflow", "mlflow-init", "secrets-check"}


def test_training_secret_documents_the_training_identities() -> None:
    text = (K8S_DIR / "secret.example.yaml").read_text() + (K8S_DIR / "README.md").read_text()
    for key in ("MLFLOW_TRAINING_USERNAME", "MLFLOW_TRAINING_PASSWORD", "MLOPS_TRAINING_S3_ACCESS_KEY_ID"):
        assert key in text
    assert "MLFLOW_ADMIN_PASSWORD" not in text


# ---------------------------------------------------------------------------------- Airflow roles


def _roles() -> dict[str, set[tuple[str, str]]]:
    roles: dict[str, set[tuple[str, str]]] = {}
    for entry in json.loads(AIRFLOW_ROLES.read_text()):
        for action in entry["action"].split(","):
            roles.setdefault(entry["name"], set()).add((action, entry["resource"]))
    return roles


# Bypasses of the approval gate: marking the approval task done, or editing what Airflow runs.
_NEVER = {
    ("can_edit", "Task Instances"),
    ("can_delete", "Task Instances"),
    ("can_edit", "DAG Runs"),
    ("can_delete", "DAG Runs"),
    ("can_edit", "Connections"),
    ("can_edit", "Variables"),
    ("can_create", "Variables"),
    ("can_edit", "Users"),
    ("can_edit", "Roles"),
}
TRIGGER = ("can_create", "DAG Runs")
APPROVE = ("can_edit", "HITL Detail")


def _role_problems(roles: dict[str, set[tuple[str, str]]]) -> list[str]:
    problems = []
    operator, approver = roles.get("MLOps Operator", set()), roles.get("MLOps Approver", set())
    if TRIGGER not in operator:
        problems.append("MLOps Operator cannot trigger runs")
    if APPROVE in operator:
        problems.append("MLOps Operator can approve: it could force a run and approve it")
    if APPROVE not in approver:
        problems.append("MLOps Approver cannot approve")
    if TRIGGER in approver:
        problems.append("MLOps Approver can trigger: it could start the run it approves")
    for name, grants in roles.items():
        for grant in sorted(grants & _NEVER):
            problems.append(f"{name}: {grant} bypasses the approval gate or the platform's configuration")
    return problems


def test_airflow_roles_keep_triggering_and_approving_apart() -> None:
    from airflow.security import permissions

    roles = _roles()
    assert set(roles) == {"MLOps Operator", "MLOps Approver"}
    names = {
        value
        for key, value in vars(permissions).items()
        if key.startswith(("RESOURCE_", "ACTION_")) and isinstance(value, str)
    }
    for grants in roles.values():
        for action, resource in grants:
            assert action in names and resource in names, (action, resource)
    assert _role_problems(roles) == []


@pytest.mark.parametrize(
    ("role", "grant"),
    [("MLOps Operator", APPROVE), ("MLOps Approver", TRIGGER), ("MLOps Operator", ("can_edit", "Task Instances"))],
)
def test_role_rule_rejects_a_broken_copy(role: str, grant: tuple[str, str]) -> None:
    roles = copy.deepcopy(_roles())
    roles[role].add(grant)
    assert _role_problems(roles)


def test_airflow_init_creates_one_user_per_role(raw_compose: dict[str, Any], env_example: dict[str, str]) -> None:
    init = dc.services(raw_compose)["airflow-init"]
    script = init["command"][1]
    assert "airflow roles import /opt/airflow/deploy/airflow/roles.json" in script
    assert dc.mount_targets(init)["/opt/airflow/deploy/airflow"] == {"source": "./deploy/airflow", "read_only": True}
    pattern = r'^mlops_fab_user "\$\$(\w+)_USERNAME" "\$\$(\w+)_PASSWORD" (.+)$'
    users = {match[0]: match[2].split() for match in re.findall(pattern, script, re.MULTILINE)}
    assert users == {
        "AIRFLOW_ADMIN": ["Admin"],
        "AIRFLOW_VIEWER": ["Viewer"],
        "AIRFLOW_OPERATOR": ["Viewer", '"MLOps', 'Operator"'],
        "AIRFLOW_APPROVER": ["Viewer", '"MLOps', 'Approver"'],
    }
    env = dc.environment(init)
    for prefix in users:
        for key in (f"{prefix}_USERNAME", f"{prefix}_PASSWORD"):
            assert key in env_example and [use.name for use in dc.variables_in(env[key])] == [key]
    # Production's auth manager is named where a person sets it.
    assert FAB_AUTH_MANAGER in ENV_EXAMPLE.read_text()
    auth = dc.environment(raw_compose["x-airflow-common"])["AIRFLOW__CORE__AUTH_MANAGER"]
    assert [use.name for use in dc.variables_in(auth)] == ["AIRFLOW_AUTH_MANAGER"]
    fab = dc.interpolate(auth, {"AIRFLOW_AUTH_MANAGER": FAB_AUTH_MANAGER})
    assert fab == FAB_AUTH_MANAGER and script.count("FabAuthManager") == 1


# ------------------------------------------------------------------------- namespace and network


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S_DIR.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def pod_labels() -> dict[str, str]:
    operator = gpu_pod_operator(task_id="train", arguments=[], resources=ResourcesConfig(), labels={"mlops/model": "m"})
    metadata = ApiClient().sanitize_for_serialization(operator.build_pod_request_obj(dry_run=True))["metadata"]
    labels: dict[str, str] = metadata["labels"]
    return labels


def test_namespace_enforces_restricted(manifests: list[dict[str, Any]]) -> None:
    namespace = next(doc for doc in manifests if doc["kind"] == "Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"].startswith("v1.")


def _allowed_egress(manifests: list[dict[str, Any]]) -> dict[str, set[tuple[str, int]]]:
    """DNS, and the ports of the MLflow and S3 endpoints the pods are given (configmap.yaml)."""
    config = next(doc for doc in manifests if doc["kind"] == "ConfigMap")["data"]
    ports = {}
    for name, key in (("MLflow", "MLFLOW_TRACKING_URI"), ("S3", "MLOPS_S3_ENDPOINT_URL")):
        url = urlparse(config[key])
        ports[name] = {("TCP", url.port or (443 if url.scheme == "https" else 80))}
    return {"DNS": {("UDP", 53), ("TCP", 53)}, **ports}


def test_training_egress_is_dns_mlflow_and_s3_only(manifests: list[dict[str, Any]], pod_labels: dict[str, str]) -> None:
    assert pod_labels[ROLE_LABEL[0]] == ROLE_LABEL[1]
    policies = [doc for doc in manifests if doc["kind"] == "NetworkPolicy"]
    assert dc.egress_problems(policies, "mlops-training", pod_labels, _allowed_egress(manifests)) == []
    # DNS only to the cluster resolver.
    rules = dc.egress_rules(policies, "mlops-training", pod_labels) or []
    dns = [rule for rule in rules if {"port": 53, "protocol": "UDP"} in rule["ports"]]
    assert len(dns) == 1
    for peer in dns[0]["to"]:
        assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    # Nothing reaches a training pod, and every other pod of the namespace is denied both ways.
    training = [doc for doc in policies if dc.selects(doc["spec"]["podSelector"], pod_labels)]
    assert all("Ingress" in doc["spec"]["policyTypes"] and not doc["spec"].get("ingress") for doc in training)
    deny_all = [doc for doc in policies if doc["spec"]["podSelector"] == {}]
    assert [doc["spec"]["policyTypes"] for doc in deny_all] == [["Ingress", "Egress"]]
    assert not deny_all[0]["spec"].get("egress") and not deny_all[0]["spec"].get("ingress")


def _training_policy(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return copy.deepcopy(next(doc for doc in manifests if doc["metadata"]["name"] == "training-egress"))


def _open_rule(policy: dict[str, Any]) -> None:
    policy["spec"]["egress"].append({})


def _internet(policy: dict[str, Any]) -> None:
    policy["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]})


def _no_s3(policy: dict[str, Any]) -> None:
    policy["spec"]["egress"].pop()


def _other_label(policy: dict[str, Any]) -> None:
    policy["spec"]["podSelector"] = {"matchLabels": {"app": "trainer"}}


def _any_port(policy: dict[str, Any]) -> None:
    del policy["spec"]["egress"][1]["ports"]


def _port_range(policy: dict[str, Any]) -> None:
    policy["spec"]["egress"][1]["ports"][0]["endPort"] = 6000


@pytest.mark.parametrize("mutate", [_open_rule, _internet, _no_s3, _other_label, _any_port, _port_range])
def test_egress_rule_rejects_a_broken_policy(
    manifests: list[dict[str, Any]], pod_labels: dict[str, str], mutate: Any
) -> None:
    policy = _training_policy(manifests)
    mutate(policy)
    assert dc.egress_problems([policy], "mlops-training", pod_labels, _allowed_egress(manifests))


def test_label_selectors_follow_kubernetes() -> None:
    labels = {"mlops/role": "training", "tier": "gpu"}
    assert dc.selects({}, labels)
    assert dc.selects({"matchLabels": {"mlops/role": "training"}}, labels)
    assert not dc.selects({"matchLabels": {"mlops/role": "serving"}}, labels)
    assert dc.selects({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gpu", "cpu"]}]}, labels)
    assert not dc.selects({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gpu"]}]}, labels)
    assert not dc.selects({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, labels)
    assert dc.selects({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, labels)
