"""The training pod, rendered without a cluster and validated against the Kubernetes schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from airflow.dag_processing.dagbag import DagBag
from kubernetes.client import ApiClient

import deploycheck as dc
from mlops.core.config import ResourcesConfig
from mlops.orchestration.pod import (
    CREDENTIALS_SECRET,
    ENDPOINTS_CONFIGMAP,
    ROLE_LABEL,
    SECRET_ENV_KEYS,
    SIGNING_KEY_DIR,
    SIGNING_KEY_FILE,
    SIGNING_SECRET,
    gpu_pod_operator,
    pod_image,
)

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.33"


def _pod_dict(operator: Any) -> dict[str, Any]:
    pod = operator.build_pod_request_obj(dry_run=True)
    data: dict[str, Any] = ApiClient().sanitize_for_serialization(pod)
    data.setdefault("apiVersion", "v1")
    data.setdefault("kind", "Pod")
    return data


@pytest.fixture(scope="module")
def training_dag() -> Any:
    """The real credit_risk training DAG, parsed with the Kubernetes backend."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_TRAINING_BACKEND", "kubernetes")
    try:
        bag = DagBag(dag_folder=str(REPO / "dags"))
    finally:
        mp.undo()
    return bag.dags["credit_risk__training"]


@pytest.fixture(scope="module")
def training_pod(training_dag: Any) -> dict[str, Any]:
    """The pod of the real credit_risk training DAG."""
    task = training_dag.get_task("train")
    assert type(task).__name__ == "KubernetesPodOperator"
    return _pod_dict(task)


def test_pod_validates_against_kubernetes_schema(training_pod: dict[str, Any]) -> None:
    kubernetes_validate.validate(training_pod, K8S_VERSION, strict=True)


def test_pod_requests_a_gpu_on_gpu_nodes(training_pod: dict[str, Any]) -> None:
    spec = training_pod["spec"]
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def test_pod_runs_non_root_read_only(training_pod: dict[str, Any]) -> None:
    spec = training_pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    context = spec["containers"][0]["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert {"name": "tmp", "mountPath": "/tmp"} in spec["containers"][0]["volumeMounts"]
    assert spec["automountServiceAccountToken"] is False


def test_pod_gets_credentials_from_secrets_only(training_pod: dict[str, Any]) -> None:
    container = training_pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}
    for key in SECRET_ENV_KEYS:
        ref = env[key]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": CREDENTIALS_SECRET, "key": key}
        assert "value" not in env[key]
    assert {"configMapRef": {"name": ENDPOINTS_CONFIGMAP}} in container["envFrom"]


def test_pod_gets_the_signing_key_from_its_secret_read_only(training_pod: dict[str, Any]) -> None:
    spec = training_pod["spec"]
    container = spec["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}
    assert env["MLOPS_SIGNING_KEY_FILE"]["value"] == f"{SIGNING_KEY_DIR}/{SIGNING_KEY_FILE}"
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == SIGNING_KEY_DIR]
    assert mount["readOnly"] is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == SIGNING_SECRET
    assert volume["secret"]["items"] == [{"key": SIGNING_KEY_FILE, "path": SIGNING_KEY_FILE, "mode": 0o440}]
    assert all(SIGNING_SECRET not in str(e) for e in container.get("envFrom", []))  # never in the environment


def test_pod_runs_the_training_cli(training_pod: dict[str, Any]) -> None:
    container = training_pod["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "mlops.model.train"]
    args = container["args"]
    assert args[args.index("--model") + 1] == "credit_risk"
    assert "--xcom" in args
    assert training_pod["metadata"]["labels"]["mlops/model"] == "credit-risk"


class _TaskInstance:
    """Only what the pod's argument templates read: the training set's XCom."""

    def __init__(self, training_set: dict[str, Any]) -> None:
        self.training_set = training_set

    def xcom_pull(self, task_ids: str) -> dict[str, Any]:
        assert task_ids == "build_training_set"
        return self.training_set


def test_pod_and_local_process_pass_the_same_arguments(training_dag: Any, training_pod: dict[str, Any]) -> None:
    """One builder: the pod's rendered arguments equal the local process's for the same run and inputs."""
    from mlops.model import launch

    dag = training_dag
    task = dag.get_task("train")
    image = training_pod["spec"]["containers"][0]["image"]
    training_set = {"uri": "lake/ts.parquet", "holdout_uri": "lake/holdout.parquet", "trigger": "drift"}
    overrides = {"n_estimators": 50}
    context = {
        "dag": dag,
        "run_id": "manual__1",
        "ti": _TaskInstance(training_set),
        "params": {"estimator_params": overrides},
    }
    rendered = task.render_template(task.arguments, context, jinja_env=dag.get_template_env())

    local = launch.train_arguments(
        "credit_risk",
        training_set_uri=training_set["uri"],
        holdout_uri=training_set["holdout_uri"],
        estimator_params_json=json.dumps(overrides),
        tags=launch.train_tags(
            dag_id="credit_risk__training",
            run_id="manual__1",
            trigger="drift",
            image=image,
        ),
        run_name=launch.run_name("credit_risk__training", "manual__1"),
    )
    assert rendered == [*local, "--xcom"]
    tags = json.loads(rendered[rendered.index("--tags") + 1])
    assert tags["airflow.dag_id"] == "credit_risk__training"  # the tag the pod's own copy once lacked
    assert tags[launch.TRAINING_IMAGE_TAG] == image  # what the pod runs


def test_cpu_only_model_asks_for_no_gpu() -> None:
    operator = gpu_pod_operator(
        task_id="train", arguments=["--model", "x"], resources=ResourcesConfig(cpu="1", memory="1Gi", gpu=0)
    )
    pod = _pod_dict(operator)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert "nvidia.com/gpu" not in pod["spec"]["containers"][0]["resources"]["limits"]
    assert not pod["spec"].get("tolerations")
    assert not pod["spec"].get("nodeSelector")


def test_house_defaults_can_be_overridden_in_one_place() -> None:
    operator = gpu_pod_operator(
        task_id="train",
        arguments=[],
        resources=ResourcesConfig(gpu=2),
        namespace="team-a",
        startup_timeout_seconds=60,
    )
    assert operator.namespace == "team-a"
    assert operator.startup_timeout_seconds == 60
    assert operator.deferrable is False and operator.do_xcom_push is True


# ------------------------------------------------------------------- image and namespace from settings


def test_image_and_namespace_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_TRAINING_IMAGE", "registry.example.com/team/trainer:2.3.4")
    monkeypatch.setenv("MLOPS_K8S_NAMESPACE", "team-training")
    resources = ResourcesConfig(gpu=1)
    pod = _pod_dict(gpu_pod_operator(task_id="train", arguments=[], resources=resources))
    assert pod["metadata"]["namespace"] == "team-training"
    assert pod["spec"]["containers"][0]["image"] == "registry.example.com/team/trainer:2.3.4"
    assert pod_image(resources) == pod["spec"]["containers"][0]["image"]


def test_model_config_image_wins_over_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_TRAINING_IMAGE", "registry.example.com/team/trainer:2.3.4")
    resources = ResourcesConfig(image="registry.example.com/team/special:1.0.0")
    pod = _pod_dict(gpu_pod_operator(task_id="train", arguments=[], resources=resources))
    assert pod["spec"]["containers"][0]["image"] == pod_image(resources) == "registry.example.com/team/special:1.0.0"


def test_the_image_cannot_be_set_past_the_lineage_source() -> None:
    with pytest.raises(ValueError, match=r"training\.resources\.image or MLOPS_TRAINING_IMAGE"):
        gpu_pod_operator(task_id="train", arguments=[], resources=ResourcesConfig(), image="elsewhere:1")


def test_lineage_tag_names_the_image_the_pod_runs(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """model_steps.register records what gpu_pod_operator would run for the same model and environment."""
    from mlops.core.config import get_config
    from mlops.model import registry
    from mlops.model import steps as model_steps

    monkeypatch.setenv("MLOPS_TRAINING_BACKEND", "kubernetes")
    monkeypatch.setenv("MLOPS_TRAINING_IMAGE", "registry.example.com/team/trainer:9.9.9")
    captured: dict[str, Any] = {}
    monkeypatch.setattr(registry, "register_version", lambda model, run_id, tags: captured.update(tags) or "1")
    monkeypatch.setattr(registry, "set_alias", lambda *args, **kwargs: None)
    from mlops.core.tracking import client, ensure_experiment

    run = client().create_run(ensure_experiment("credit_risk"), tags={"gate.quality": "passed"})
    model_steps.register(
        "credit_risk",
        {"run_id": run.info.run_id, "holdout_uri": "holdout", "metrics": {}},
        {
            "raw_batches": [],
            "window_start": "2026-01-01",
            "window_end": "2026-01-31",
            "uri": "lake/runs/credit_risk/manual/training_set-0.parquet",
            "sha256": "0" * 64,
        },
        dag_id="credit_risk__training",
        run_id="manual",
    )
    resources = get_config("credit_risk").config.training.resources
    pod = _pod_dict(gpu_pod_operator(task_id="train", arguments=[], resources=resources))
    assert captured["lineage.training_image"] == pod["spec"]["containers"][0]["image"]
    assert captured["lineage.training_image"] == "registry.example.com/team/trainer:9.9.9"
    assert captured["gate.quality"] == "passed"  # the run's gate verdicts travel with the version

    # The image the training run recorded (mlops.training_image) wins over what would run now.
    from mlops.model.launch import TRAINING_IMAGE_TAG

    ran = "registry.example.com/team/trainer:9.9.8"
    recorded = client().create_run(ensure_experiment("credit_risk"), tags={TRAINING_IMAGE_TAG: ran})
    trained = {"run_id": recorded.info.run_id, "holdout_uri": "holdout", "metrics": {}}
    training_set = {"raw_batches": [], "window_start": "2026-01-01", "window_end": "2026-01-31", "uri": "ts"}
    model_steps.register("credit_risk", trained, training_set, dag_id="credit_risk__training", run_id="manual")
    assert captured["lineage.training_image"] == ran


# ---------------------------------------------------------------------- Pod Security `restricted`


def test_every_container_meets_pod_security_restricted(training_pod: dict[str, Any]) -> None:
    names = [container["name"] for container in training_pod["spec"]["containers"]]
    assert names == ["base", "airflow-xcom-sidecar"]  # the XCom sidecar is checked too
    assert dc.pod_security_restricted_violations(training_pod) == []


def test_a_default_xcom_sidecar_breaks_restricted() -> None:
    """The operator's own sidecar, left as cncf-kubernetes builds it, would be rejected by the namespace."""
    operator = gpu_pod_operator(
        task_id="train", arguments=[], resources=ResourcesConfig(), xcom_sidecar_container_security_context=None
    )
    problems = dc.pod_security_restricted_violations(_pod_dict(operator))
    assert problems and all(problem.startswith("containers airflow-xcom-sidecar:") for problem in problems)


def _with(path: tuple[str | int, ...], value: Any) -> Any:
    def mutate(pod: dict[str, Any]) -> None:
        node: Any = pod
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


RESTRICTED_BREAKS = {
    "hostPath volume": _with(("spec", "volumes", 0), {"name": "host", "hostPath": {"path": "/"}}),
    "host network": _with(("spec", "hostNetwork"), True),
    "privileged": _with(("spec", "containers", 0, "securityContext", "privileged"), True),
    "escalation": _with(("spec", "containers", 1, "securityContext", "allowPrivilegeEscalation"), True),
    "root user": _with(("spec", "containers", 0, "securityContext", "runAsUser"), 0),
    "runAsNonRoot off": _with(("spec", "containers", 1, "securityContext", "runAsNonRoot"), False),
    "pod runAsNonRoot gone, container unset": _with(("spec", "securityContext", "runAsNonRoot"), None),
    "seccomp unconfined": _with(("spec", "containers", 0, "securityContext", "seccompProfile"), {"type": "Unconfined"}),
    "capability added": _with(("spec", "containers", 0, "securityContext", "capabilities", "add"), ["SYS_ADMIN"]),
    "capabilities kept": _with(("spec", "containers", 1, "securityContext", "capabilities"), {}),
    "host port": _with(("spec", "containers", 0, "ports"), [{"containerPort": 80, "hostPort": 80}]),
    "bare init container": _with(("spec", "initContainers"), [{"name": "init", "image": "busybox:1.37"}]),
}


@pytest.mark.parametrize("case", sorted(RESTRICTED_BREAKS))
def test_restricted_check_rejects_a_broken_pod(training_pod: dict[str, Any], case: str) -> None:
    import copy

    broken = copy.deepcopy(training_pod)
    if case == "pod runAsNonRoot gone, container unset":
        for container in broken["spec"]["containers"]:
            container["securityContext"].pop("runAsNonRoot")
    RESTRICTED_BREAKS[case](broken)
    assert dc.pod_security_restricted_violations(broken), case


def test_training_pods_carry_the_role_label_callers_cannot_change() -> None:
    operator = gpu_pod_operator(
        task_id="train", arguments=[], resources=ResourcesConfig(), labels={ROLE_LABEL[0]: "something-else"}
    )
    assert _pod_dict(operator)["metadata"]["labels"][ROLE_LABEL[0]] == ROLE_LABEL[1]
