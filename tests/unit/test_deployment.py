"""The deployment files, checked without Docker, a cluster or the network.

* ``docker-compose.yaml`` is interpolated with the values of ``.env.example`` (as ``docker compose``
  does with a ``.env``) and validated against the Compose Specification JSON schema vendored in
  ``tests/schemas/compose-spec.json``: compose-spec/compose-spec ``schema/compose-spec.json``
  (Apache-2.0), as shipped in the npm package ``dclint`` 3.1.0 (MIT). Source, version, license and
  checksum: ``tests/schemas/README.md``.
* House rules on top of the schema (``deploy/deploycheck.py``): health checks, ``depends_on`` conditions,
  pinned images, no secret literals, every variable documented, the code mounted, production settings.
  Each rule is also run on a deliberately broken copy, to show it can fail.
* The Dockerfiles: pinned bases, the Airflow base matching the lock, the training image's user and
  writable paths matching ``mlops.orchestration.pod``.
* ``deploy/k8s/*.yaml`` against the Kubernetes 1.33 schema (``kubernetes-validate``, strict), and the
  names, keys and RBAC against ``mlops.orchestration.pod``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes.client import ApiClient

import deploycheck as dc
from mlops.core.config import ResourcesConfig
from mlops.core.settings import get_settings
from mlops.orchestration.pod import (
    CREDENTIALS_SECRET,
    DEFAULT_IMAGE,
    ENDPOINTS_CONFIGMAP,
    SECRET_ENV_KEYS,
    gpu_pod_operator,
)

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
COMPOSE_SCHEMA = REPO / "tests" / "schemas" / "compose-spec.json"
COMPOSE_SCHEMA_SHA256 = "46b7d35f19dd93a05f8fea530291bf84d881c1791ec167ecf0e6fb94e639d496"
AIRFLOW_DOCKERFILE = REPO / "deploy" / "docker" / "airflow.Dockerfile"
TRAINING_DOCKERFILE = REPO / "deploy" / "docker" / "training.Dockerfile"
K8S_DIR = REPO / "deploy" / "k8s"
K8S_VERSION = "1.33"

AIRFLOW_SERVICES = [
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
]
TASK_RUNNERS = ["airflow-scheduler", "airflow-worker"]  # LocalExecutor runs tasks in the scheduler
ONE_SHOT = {"secrets-check", "minio-init", "mlflow-init", "airflow-init"}
CODE_MOUNTS = {
    "./dags": "/opt/airflow/dags",
    "./plugins": "/opt/airflow/plugins",
    "./include": "/opt/airflow/include",
    "./feature_repo": "/opt/airflow/feature_repo",
}
# Both Airflow components and every task must agree on these (Airflow 3 signs task tokens).
SHARED_AIRFLOW_SECRETS = ["AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"]


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    """docker-compose.yaml as written (anchors merged, nothing interpolated)."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return dc.parse_env_file(ENV_EXAMPLE.read_text())


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yaml as `docker compose` sees it with .env copied from .env.example."""
    resolved: dict[str, Any] = dc.interpolate_tree(raw_compose, env_example)
    return resolved


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(COMPOSE_SCHEMA.read_text())
    return schema


@pytest.fixture(scope="module")
def training_pod() -> dict[str, Any]:
    """The house GPU training pod (as the KubernetesPodOperator would send it), without a cluster."""
    operator = gpu_pod_operator(task_id="deploycheck", arguments=[], resources=ResourcesConfig(gpu=1))
    pod = operator.build_pod_request_obj(dry_run=True)
    data: dict[str, Any] = ApiClient().sanitize_for_serialization(pod)
    return data


@pytest.fixture(scope="module")
def manifests() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every document of deploy/k8s/*.yaml."""
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def _kind(manifests: list[tuple[str, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests if doc["kind"] == kind]


def _one(manifests: list[tuple[str, dict[str, Any]]], kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in _kind(manifests, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name} in deploy/k8s, found {len(found)}"
    return found[0]


def _group(pattern: str, text: str) -> str:
    """The first group of ``pattern`` in ``text``; fails the test when it does not match."""
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found in {text[:200]!r}"
    return match[1]


def _schema_errors(schema: dict[str, Any], data: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message[:300]}"
        for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    ]


# ------------------------------------------------------------------------------ Compose specification


def test_vendored_compose_schema_is_the_recorded_one(compose_schema: dict[str, Any]) -> None:
    assert hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest() == COMPOSE_SCHEMA_SHA256, (
        "tests/schemas/compose-spec.json changed: update tests/schemas/README.md and this checksum"
    )
    assert COMPOSE_SCHEMA_SHA256 in (COMPOSE_SCHEMA.parent / "README.md").read_text()
    assert compose_schema["title"] == "Compose Specification"
    jsonschema.Draft7Validator.check_schema(compose_schema)


def test_compose_file_matches_the_compose_specification(
    compose: dict[str, Any], compose_schema: dict[str, Any]
) -> None:
    assert _schema_errors(compose_schema, compose) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "mlflow", "depend_on"), {"postgres": {"condition": "service_healthy"}}),  # typo
        (("services", "redis", "healthcheck", "retries"), ["five"]),
        (("services", "postgres", "depends_on"), {"redis": {"condition": "when_ready"}}),
        (("configs", "mlflow-auth", "contents"), "x"),
    ],
)
def test_compose_schema_rejects_a_broken_copy(
    compose: dict[str, Any], compose_schema: dict[str, Any], path: tuple[str, ...], value: Any
) -> None:
    broken = copy.deepcopy(compose)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert _schema_errors(compose_schema, broken)


# --------------------------------------------------------------------------------- variables and .env


def test_every_variable_is_in_env_example_or_has_a_default(
    raw_compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    undocumented = {
        use.name for use in dc.variables_used(raw_compose) if not use.has_default and use.name not in env_example
    }
    assert undocumented == set()
    required = {use.name for use in dc.variables_used(raw_compose) if use.required}
    assert required, "secrets must be required ${VAR:?...} references"


def test_a_missing_required_variable_stops_interpolation(
    raw_compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    incomplete = {key: value for key, value in env_example.items() if key != "REDIS_PASSWORD"}
    with pytest.raises(dc.InterpolationError, match="REDIS_PASSWORD"):
        dc.interpolate_tree(raw_compose, incomplete)


def test_interpolation_follows_compose() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert dc.interpolate("${SET:?m}/${EMPTY:-d}/${EMPTY-d}/${UNSET:-${SET}}/$$HOME/$SET", env) == "v/d//v/$HOME/v"
    assert dc.interpolate("${SET:+alt}${EMPTY:+alt}${UNSET+alt}", env) == "alt"
    with pytest.raises(dc.InterpolationError, match="EMPTY"):
        dc.interpolate("${EMPTY:?must be set}", env)
    with pytest.raises(dc.InterpolationError, match="lone"):
        dc.interpolate("awk '{print $4}'", env)  # compose rejects it: must be $$4


def test_env_example_lists_only_used_variables_each_with_a_comment(raw_compose: dict[str, Any]) -> None:
    used = {use.name for use in dc.variables_used(raw_compose)}
    lines = ENV_EXAMPLE.read_text().splitlines()
    keys = []
    for index, line in enumerate(lines):
        if not line or line.startswith("#"):
            continue
        key = line.split("=", 1)[0]
        keys.append(key)
        assert lines[index - 1].startswith("#"), f".env.example: {key} has no comment on the line above"
    assert len(keys) == len(set(keys)), ".env.example lists a variable twice"
    assert set(keys) - used == set(), "variables in .env.example that docker-compose.yaml never uses"


def test_env_example_holds_placeholders_not_secrets(env_example: dict[str, str]) -> None:
    credentials = {
        key: value
        for key, value in env_example.items()
        if dc.SECRET_KEY.search(key) or key.endswith(("_USER", "_USERNAME"))
    }
    assert len(credentials) >= 10
    assert {key for key, value in credentials.items() if not value.startswith("change-me")} == set()


def test_dot_env_is_git_ignored() -> None:
    git = shutil.which("git")
    if git and (REPO / ".git").exists():
        ignored = subprocess.run([git, "check-ignore", "-q", ".env"], cwd=REPO, check=False).returncode
        example = subprocess.run([git, "check-ignore", "-q", ".env.example"], cwd=REPO, check=False).returncode
        assert (ignored, example) == (0, 1), ".env must be git-ignored and .env.example must not be"
    else:  # a source tarball: read the rule itself
        assert ".env" in (REPO / ".gitignore").read_text().splitlines()


# -------------------------------------------------------------------------------------- house rules


def test_long_running_services_have_healthchecks(raw_compose: dict[str, Any]) -> None:
    assert {name for name, svc in dc.services(raw_compose).items() if dc.is_one_shot(svc)} == ONE_SHOT
    assert dc.missing_healthchecks(raw_compose) == []


def test_start_up_is_ordered_by_conditions(raw_compose: dict[str, Any]) -> None:
    assert dc.unordered_dependencies(raw_compose) == []
    for name in AIRFLOW_SERVICES[1:]:
        depends = dc.services(raw_compose)[name]["depends_on"]
        assert depends["airflow-init"] == {"condition": "service_completed_successfully"}, name
        assert depends["postgres"] == {"condition": "service_healthy"}, name


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    assert dc.unpinned_images(compose) == []
    for name in [*AIRFLOW_SERVICES, "mlflow"]:
        service = compose["services"][name]
        assert service["build"]["dockerfile"] == "deploy/docker/airflow.Dockerfile", name
        assert service["image"] == compose["services"]["airflow-init"]["image"], name


def test_no_secret_literals(raw_compose: dict[str, Any]) -> None:
    assert dc.secret_literals(raw_compose) == []


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _drop(path: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


def _missing_code_mounts(data: dict[str, Any]) -> list[str]:
    return dc.missing_mounts(data, AIRFLOW_SERVICES, CODE_MOUNTS)


BROKEN_COPIES = {
    "mlflow without healthcheck": (_drop(("services", "mlflow", "healthcheck")), dc.missing_healthchecks),
    "redis without restart policy": (_drop(("services", "redis", "restart")), dc.missing_healthchecks),
    "literal postgres password": (
        _set(("services", "postgres", "environment", "POSTGRES_PASSWORD"), "hunter2"),
        dc.secret_literals,
    ),
    "default password": (
        _set(("services", "postgres", "environment", "POSTGRES_PASSWORD"), "${POSTGRES_PASSWORD:-postgres}"),
        dc.secret_literals,
    ),
    "password in a URL": (
        _set(("services", "airflow-worker", "environment", "AIRFLOW__CELERY__BROKER_URL"), "redis://:pw@redis/1"),
        dc.secret_literals,
    ),
    "password on a command line": (
        _set(("services", "redis", "command"), ["redis-server", "--requirepass", "hunter2"]),
        dc.secret_literals,
    ),
    "password in config content": (
        _set(("configs", "mlflow-auth", "content"), "[mlflow]\nadmin_password = hunter2hunter2\n"),
        dc.secret_literals,
    ),
    "depends_on without condition": (
        _set(("services", "mlflow", "depends_on"), ["postgres", "minio-init"]),
        dc.unordered_dependencies,
    ),
    "waits for a one-shot job to be healthy": (
        _set(("services", "mlflow", "depends_on", "minio-init"), {"condition": "service_healthy"}),
        dc.unordered_dependencies,
    ),
    "depends on a profile-only service": (
        _set(("services", "airflow-scheduler", "depends_on", "airflow-worker"), {"condition": "service_healthy"}),
        dc.unordered_dependencies,
    ),
    "untagged image": (_set(("services", "redis", "image"), "redis"), dc.unpinned_images),
    "latest image": (_set(("services", "minio", "image"), "minio/minio:latest"), dc.unpinned_images),
    "scheduler without dags": (
        _set(("services", "airflow-scheduler", "volumes"), ["./plugins:/opt/airflow/plugins:ro"]),
        _missing_code_mounts,
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_COPIES))
def test_house_rules_reject_a_broken_copy(raw_compose: dict[str, Any], case: str) -> None:
    mutate, rule = BROKEN_COPIES[case]
    assert rule(raw_compose) == [], f"{case}: the rule fails on the real file"
    broken = copy.deepcopy(raw_compose)
    mutate(broken)
    assert rule(broken), f"{case}: not caught"


# ------------------------------------------------------------------------------------- Airflow stack


def test_stack_has_the_expected_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "secrets-check",
        "postgres",
        "redis",
        "minio",
        "minio-init",
        "mlflow",
        "mlflow-init",
        *AIRFLOW_SERVICES,
    }
    commands = {name: compose["services"][name].get("command") for name in AIRFLOW_SERVICES[1:]}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
        "airflow-worker": "celery worker",
    }
    assert compose["x-airflow-common"]["image"] == compose["services"]["airflow-scheduler"]["image"]


def test_airflow_services_mount_the_code(compose: dict[str, Any]) -> None:
    assert dc.missing_mounts(compose, AIRFLOW_SERVICES, CODE_MOUNTS) == []
    for name in AIRFLOW_SERVICES:
        mounts = dc.mount_targets(compose["services"][name])
        assert all(mounts[target]["read_only"] for target in CODE_MOUNTS.values()), name
    for source in CODE_MOUNTS:
        assert (REPO / source).is_dir(), source


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_services_resolve_production_settings(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = dc.environment(compose["services"][name])
    platform = {k: v for k, v in env.items() if k.startswith(("MLOPS_", "MLFLOW_", "AWS_", "FEAST_"))}
    for key in [k for k in list(os.environ) if k.startswith(("MLOPS_", "MLFLOW_", "AWS_"))]:
        monkeypatch.delenv(key)
    for key, value in platform.items():
        monkeypatch.setenv(key, value)
    settings = get_settings()
    assert settings.env == "production"
    assert settings.training_backend == "kubernetes"
    assert settings.tracking_uri == "http://mlflow:5000"
    assert settings.feature_store_yaml.is_file()
    # The variables feature_store.production.yaml expands, and the credentials the pod also gets.
    feature_store = yaml.safe_load(settings.feature_store_yaml.read_text())
    placeholders = {use.name for text in dc.strings_in(feature_store) for use in dc.variables_in(text)}
    assert placeholders and placeholders <= set(env)
    assert set(SECRET_ENV_KEYS) <= set(env)
    assert env["MLOPS_S3_ENDPOINT_URL"] == "http://minio:9000"
    # The lineage tag records MLOPS_TRAINING_IMAGE; the pod runs pod.py's image in the same namespace.
    assert env["MLOPS_TRAINING_IMAGE"] == DEFAULT_IMAGE
    assert env["MLOPS_K8S_NAMESPACE"] == "mlops-training"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "mlops.orchestration.executor.PreloadingLocalExecutor"
    assert env["PYTHONPATH"] == "/opt/airflow/include"  # where that executor's module is mounted
    api = urlparse(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (api.hostname, api.port) == ("airflow-apiserver", 8080)
    # Production runs the FAB auth manager with roles; the simple one (development) is opt-in (README).
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].endswith(":admin")
    mlflow_admin = dc.environment(compose["services"]["mlflow"])["MLFLOW_AUTH_ADMIN_USERNAME"]
    assert env["MLFLOW_TRACKING_USERNAME"] != mlflow_admin


def test_airflow_components_share_their_signing_secrets(raw_compose: dict[str, Any]) -> None:
    for key in SHARED_AIRFLOW_SECRETS:
        values = {dc.environment(raw_compose["services"][name])[key] for name in AIRFLOW_SERVICES}
        assert len(values) == 1 and next(iter(values)).startswith("${"), key


def test_task_runners_mount_the_kubeconfig_read_only(raw_compose: dict[str, Any], env_example: dict[str, str]) -> None:
    without_path = {k: v for k, v in env_example.items() if k != "KUBECONFIG_PATH"}
    resolved = dc.interpolate_tree(raw_compose, without_path)
    for name in AIRFLOW_SERVICES:
        service = resolved["services"][name]
        target = dc.environment(service)["KUBECONFIG"]
        mount = dc.mount_targets(service).get(target)
        if name not in TASK_RUNNERS:
            assert mount is None, f"{name} does not run tasks and needs no cluster credentials"
            continue
        assert mount == {"source": "~/.kube/config", "read_only": True}, name
        long_form = next(v for v in service["volumes"] if isinstance(v, dict) and v["target"] == target)
        assert long_form["bind"]["create_host_path"] is False, "a missing kubeconfig must fail, not become a dir"


def test_celery_workers_are_an_optional_profile(compose: dict[str, Any]) -> None:
    worker = compose["services"]["airflow-worker"]
    assert worker["profiles"] == ["celery"]
    assert [name for name, svc in compose["services"].items() if svc.get("profiles")] == ["airflow-worker"]
    env = dc.environment(worker)
    broker = urlparse(env["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.path) == ("redis", "redis", "/1"), "Feast owns Redis db 0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert "db=0" in env["FEAST_REDIS_CONNECTION"]


def test_mlflow_server_stores_runs_in_postgres_and_artifacts_in_minio(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    args = dict(arg.split("=", 1) if "=" in arg else (arg, "") for arg in mlflow["command"][2:])
    assert mlflow["command"][:2] == ["mlflow", "server"]
    assert urlparse(args["--backend-store-uri"]).scheme == "postgresql"
    assert "--serve-artifacts" in args
    assert urlparse(args["--artifacts-destination"]).scheme == "s3"
    assert args["--app-name"] == "basic-auth"
    env = dc.environment(mlflow)
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    auth = compose["configs"]["mlflow-auth"]["content"]
    assert urlparse(_group(r"database_uri = (\S+)", auth)).scheme == "postgresql"


def test_init_jobs_create_what_the_services_use(compose: dict[str, Any]) -> None:
    env = dc.environment(compose["services"]["airflow-scheduler"])
    mlflow_args = " ".join(compose["services"]["mlflow"]["command"])
    postgres_init = compose["configs"]["postgres-init"]["content"]
    created: set[tuple[str, str]] = set()
    for line in postgres_init.splitlines():
        if line.startswith("mlops_create_role_and_databases "):
            role, _, *databases = line.split()[1:]
            created.update((role, db) for db in databases)
    used = [
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        env["FEAST_REGISTRY_URL"],
        _group(r"--backend-store-uri=(\S+)", mlflow_args),
        _group(r"database_uri = (\S+)", compose["configs"]["mlflow-auth"]["content"]),
    ]
    for url in used:
        parsed = urlparse(url)
        assert (parsed.username, parsed.path.lstrip("/")) in created, url
    assert {db for _, db in created} >= {"airflow", "mlflow", "feast"}
    minio_init = compose["services"]["minio-init"]["command"][0]
    buckets = set(_group(r"for bucket in ([\w -]+); do", minio_init).split())
    wanted = {urlparse(env["MLOPS_LANDING_URI"]).netloc, urlparse(env["MLOPS_LAKE_URI"]).netloc}
    wanted.add(urlparse(_group(r"--artifacts-destination=(\S+)", mlflow_args)).netloc)
    assert wanted <= buckets
    assert compose["services"]["minio-init"]["image"].startswith("minio/mc:")


@pytest.mark.parametrize(
    ("shell", "script"),
    [
        ("sh", lambda c: c["configs"]["postgres-init"]["content"]),
        ("sh", lambda c: c["services"]["minio-init"]["command"][0]),
        ("bash", lambda c: c["services"]["airflow-init"]["command"][1]),
    ],
)
def test_init_scripts_are_valid_shell(
    compose: dict[str, Any], shell: str, script: Callable[[dict[str, Any]], str], tmp_path: Path
) -> None:
    binary = shutil.which(shell)
    if binary is None:
        pytest.skip(f"{shell} is not installed")
    path = tmp_path / "script.sh"
    path.write_text(script(compose))
    result = subprocess.run([binary, "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


# -------------------------------------------------------------------------------------- Dockerfiles


def _last_user(instructions: list[dc.Instruction]) -> str | None:
    return dc.last_instruction(instructions, "USER")


def _requirement_pin(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert match, f"{name} is not pinned in requirements.txt"
    return match[1]


@pytest.mark.parametrize("dockerfile", [AIRFLOW_DOCKERFILE, TRAINING_DOCKERFILE], ids=lambda p: p.name)
def test_dockerfiles_pin_their_base_images(dockerfile: Path) -> None:
    bases = dc.base_images(dc.parse_dockerfile(dockerfile.read_text()))
    assert bases
    assert [dc.image_problem(image) for image in bases] == [None] * len(bases)


def test_image_pin_rules() -> None:
    assert dc.image_problem("python:3.11.14-slim-bookworm") is None
    assert dc.image_problem("registry:5000/team/app@sha256:" + "0" * 64) is None
    assert dc.image_problem("registry:5000/team/app") is not None  # the port is not a tag
    assert dc.image_problem("apache/airflow:latest") is not None


def test_airflow_image_matches_the_lock() -> None:
    instructions = dc.parse_dockerfile(AIRFLOW_DOCKERFILE.read_text())
    airflow = _requirement_pin("apache-airflow")
    assert dc.base_images(instructions) == [f"apache/airflow:{airflow}-python3.11"]
    assert "3.11" in (REPO / "pyproject.toml").read_text()
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert re.search(r"pip install --no-cache-dir .*-r /opt/airflow/requirements\.txt", runs)
    assert f'"apache-airflow=={airflow}"' in runs
    assert _last_user(instructions) == "airflow"
    assert "/opt/airflow/include" in dc.dockerfile_env(instructions)["PYTHONPATH"].split(":")
    copies = [i.args.split()[-2:] for i in instructions if i.keyword == "COPY"]
    assert ["include/mlops/", "/opt/airflow/include/mlops/"] in copies
    assert ["include/models/", "/opt/airflow/include/models/"] in copies
    assert not any(src.startswith("include/mlops_dev") or src == "include/" for src, _ in copies)


def test_training_image_runs_as_the_pod_user_on_a_read_only_root(training_pod: dict[str, Any]) -> None:
    instructions = dc.parse_dockerfile(TRAINING_DOCKERFILE.read_text())
    spec = training_pod["spec"]
    container = spec["containers"][0]
    user = _last_user(instructions)
    assert user is not None
    uid, _, gid = user.partition(":")
    assert int(uid) == spec["securityContext"]["runAsUser"] != 0
    assert int(gid or uid) == spec["securityContext"]["runAsGroup"]
    entrypoint = dc.last_instruction(instructions, "ENTRYPOINT")
    assert entrypoint is not None and json.loads(entrypoint) == container["command"] == [
        "python",
        "-m",
        "mlops.model.train",
    ]
    # Read-only root: everything that writes must point into a volume the pod mounts.
    writable = [mount["mountPath"] for mount in container["volumeMounts"]]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = dc.dockerfile_env(instructions)
    for key in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "MLOPS_STATE_DIR"):
        assert any(env[key] == path or env[key].startswith(path + "/") for path in writable), key
    # The code is on PYTHONPATH, and the CUDA build of XGBoost is the lock's version.
    copies = [i.args.split()[-2:] for i in instructions if i.keyword == "COPY"]
    package_dest = next(dest for src, dest in copies if src == "include/mlops/")
    assert package_dest.rstrip("/").removesuffix("/mlops") in env["PYTHONPATH"].split(":")
    assert ["include/models/", package_dest.removesuffix("mlops/") + "models/"] in copies
    assert not any(src.startswith("include/mlops_dev") or src == "include/" for src, _ in copies)
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert f'"xgboost=={_requirement_pin("xgboost-cpu")}"' in runs
    assert "-c /tmp/build/requirements.txt" in runs
    assert "apache-airflow" not in runs


def test_dockerfile_parser() -> None:
    text = 'FROM --platform=linux/amd64 python:3.11 AS base\n# c\nENV A=1 \\\n    B="two words"\nFROM base\nUSER 1:2\n'
    instructions = dc.parse_dockerfile(text)
    assert dc.base_images(instructions) == ["python:3.11"]
    assert dc.dockerfile_env(instructions) == {"A": "1", "B": "two words"}
    assert dc.last_instruction(instructions, "user") == "1:2"


# -------------------------------------------------------------------------------------------- k8s


def test_every_manifest_validates_against_kubernetes(manifests: list[tuple[str, dict[str, Any]]]) -> None:
    assert {name for name, _ in manifests} >= {
        "namespace.yaml",
        "serviceaccount.yaml",
        "secret.example.yaml",
        "configmap.yaml",
    }
    for name, doc in manifests:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - the message is the point
            pytest.fail(f"{name} {doc.get('kind')}: {exc}")


def test_kubernetes_validation_rejects_a_broken_manifest(manifests: list[tuple[str, dict[str, Any]]]) -> None:
    secret = copy.deepcopy(_one(manifests, "Secret", CREDENTIALS_SECRET))
    secret["stringdata"] = secret.pop("stringData")  # typo: strict validation rejects unknown fields
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(secret, K8S_VERSION, strict=True)


def test_manifests_live_in_the_pod_namespace(
    manifests: list[tuple[str, dict[str, Any]]], training_pod: dict[str, Any]
) -> None:
    namespace = training_pod["metadata"]["namespace"]
    assert namespace == "mlops-training"
    assert [doc["metadata"]["name"] for doc in _kind(manifests, "Namespace")] == [namespace]
    for name, doc in manifests:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, f"{name} {doc['kind']}"


def test_secret_has_exactly_the_pod_keys_and_placeholders(manifests: list[tuple[str, dict[str, Any]]]) -> None:
    secret = _one(manifests, "Secret", CREDENTIALS_SECRET)
    assert "data" not in secret
    assert sorted(secret["stringData"]) == sorted(SECRET_ENV_KEYS)
    assert set(secret["stringData"].values()) == {"change-me"}


def test_signing_key_secret_has_the_pod_key_as_a_placeholder(manifests: list[tuple[str, dict[str, Any]]]) -> None:
    from mlops.orchestration.pod import SIGNING_KEY_FILE, SIGNING_SECRET

    secret = _one(manifests, "Secret", SIGNING_SECRET)
    assert "data" not in secret and secret["stringData"] == {SIGNING_KEY_FILE: "change-me"}


def test_airflow_trusts_mounted_signing_keys_read_only(compose: dict[str, Any]) -> None:
    """Every service that runs tasks verifies models: it gets the trusted public keys, never the private one."""
    for name in ("airflow-scheduler", "airflow-worker"):
        service = compose["services"][name]
        env = dc.environment(service)
        mount = dc.mount_targets(service)[env["MLOPS_TRUSTED_KEYS_PATH"]]
        assert mount["read_only"], name
        assert "MLOPS_SIGNING_KEY_FILE" not in env, name


def test_configmap_gives_the_pod_production_settings(
    manifests: list[tuple[str, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _one(manifests, "ConfigMap", ENDPOINTS_CONFIGMAP)["data"]
    secret = _one(manifests, "Secret", CREDENTIALS_SECRET)["stringData"]
    assert not [key for key in config if dc.SECRET_KEY.search(key) or key in SECRET_ENV_KEYS]
    for key in [k for k in list(os.environ) if k.startswith(("MLOPS_", "MLFLOW_", "AWS_"))]:
        monkeypatch.delenv(key)
    for key, value in {**config, **secret}.items():
        monkeypatch.setenv(key, value)
    settings = get_settings()
    assert settings.env == "production"
    assert urlparse(settings.tracking_uri).scheme in ("http", "https")
    assert config["MLOPS_S3_ENDPOINT_URL"]


def _granted(rules: list[dict[str, Any]], resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in rules:
        if {"", "*"} & set(rule.get("apiGroups", [])) and {resource, "*"} & set(rule.get("resources", [])):
            verbs.update(rule["verbs"])
    return {"create", "get", "list", "watch", "delete", "patch", "update"} if "*" in verbs else verbs


REQUIRED_GRANTS = {
    "pods": {"create", "get", "list", "watch", "delete"},
    "pods/log": {"get"},
    "pods/exec": {"create", "get"},  # do_xcom_push: the result is read through exec
}


def _missing_grants(rules: list[dict[str, Any]]) -> dict[str, set[str]]:
    return {
        resource: verbs - _granted(rules, resource)
        for resource, verbs in REQUIRED_GRANTS.items()
        if verbs - _granted(rules, resource)
    }


def test_airflow_may_launch_and_watch_training_pods(
    manifests: list[tuple[str, dict[str, Any]]], training_pod: dict[str, Any]
) -> None:
    bindings = _kind(manifests, "RoleBinding")
    assert bindings
    accounts = {doc["metadata"]["name"]: doc for doc in _kind(manifests, "ServiceAccount")}
    launchers = set()
    for binding in bindings:
        role = _one(manifests, "Role", binding["roleRef"]["name"])
        assert binding["roleRef"]["kind"] == "Role"
        assert _missing_grants(role["rules"]) == {}
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["name"] in accounts
            launchers.add(subject["name"])
    # The training pods' own account exists, holds no role and mounts no token.
    runner = training_pod["spec"]["serviceAccountName"]
    assert runner in accounts and runner not in launchers
    assert accounts[runner]["automountServiceAccountToken"] is False


def test_rbac_check_rejects_a_role_without_logs(manifests: list[tuple[str, dict[str, Any]]]) -> None:
    role = copy.deepcopy(_kind(manifests, "Role")[0])
    role["rules"] = [rule for rule in role["rules"] if "pods/log" not in rule["resources"]]
    assert _missing_grants(role["rules"]) == {"pods/log": {"get"}}
    assert _missing_grants([{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]}]).keys() == set(REQUIRED_GRANTS)


def test_gpu_quota_and_scheduling_are_documented(
    manifests: list[tuple[str, dict[str, Any]]], training_pod: dict[str, Any]
) -> None:
    quotas = _kind(manifests, "ResourceQuota")
    assert any("requests.nvidia.com/gpu" in quota["spec"]["hard"] for quota in quotas)
    readme = (K8S_DIR / "README.md").read_text()
    spec = training_pod["spec"]
    for label in spec["nodeSelector"]:
        assert label in readme
    for toleration in spec["tolerations"]:
        assert toleration["key"] in readme and toleration["effect"] in readme
    for term in ("KUBECONFIG_PATH", "in-cluster", "CeleryExecutor", "KubernetesExecutor", "device plugin"):
        assert term in readme, term


# Test, lint and browser tooling never ships in a production image. mypy is allowed only as what it
# is in the runtime lock: a dependency of SQLAlchemy's mypy extra that a runtime package requests
# (with types-greenlet, SQLAlchemy's own dependency).
DEV_TOOLS = ("pytest", "ruff", "playwright", "moto", "hypothesis", "kubernetes-validate", "types-", "mypy")


def _locked(path: Path) -> dict[str, str]:
    """Package name → the lock's "via" lines that follow it."""
    packages: dict[str, str] = {}
    name = ""
    for line in path.read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            name = line.split("==")[0].split("[")[0].strip().lower()
            packages[name] = ""
        elif name and line.strip().startswith("#"):
            packages[name] += line.strip() + " "
    return packages


def test_the_images_runtime_lock_holds_no_test_or_lint_tool() -> None:
    runtime = _locked(REPO / "requirements.txt")
    dev = _locked(REPO / "requirements-dev.txt")
    assert len(runtime) > 100, "requirements.txt should be the full runtime lock"
    shipped = {name: via for name, via in runtime.items() if name.startswith(DEV_TOOLS)}
    assert set(shipped) <= {"mypy", "mypy-extensions", "types-greenlet"}, (
        f"test/lint tools in the runtime lock: {sorted(shipped)}"
    )
    for name, via in shipped.items():
        assert "requirements.in" not in via and ("sqlalchemy" in via or "mypy" in via), (
            f"{name} is requested directly: {via}"
        )
    direct = (REPO / "requirements.in").read_text().lower()
    assert not any(tool in direct for tool in ("pytest", "ruff", "playwright", "moto", "hypothesis", "mypy"))
    # The dev lock is the runtime lock plus the tools, at the same versions.
    for tool in ("pytest", "ruff", "mypy", "playwright", "moto", "hypothesis", "pytest-xdist"):
        assert tool in dev, f"{tool} missing from requirements-dev.txt"
    pins = {
        line.split("==")[0].lower(): line
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if "==" in line
    }
    for line in (REPO / "requirements-dev.txt").read_text().splitlines():
        name = line.split("==")[0].lower()
        if "==" in line and name in pins:
            assert line == pins[name], f"dev lock moves a runtime pin: {line} vs {pins[name]}"
    # Both Dockerfiles install the runtime lock only.
    for dockerfile in (AIRFLOW_DOCKERFILE, TRAINING_DOCKERFILE):
        text = dockerfile.read_text()
        assert "requirements.txt" in text and "requirements-dev" not in text
