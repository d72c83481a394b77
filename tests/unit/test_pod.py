"""The training pod, rendered without a cluster and validated against the Kubernetes schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from airflow.dag_processing.dagbag import DagBag
from kubernetes.client import ApiClient

from mlops.config import ResourcesConfig
from mlops.pod import (
    CREDENTIALS_SECRET,
    ENDPOINTS_CONFIGMAP,
    SECRET_ENV_KEYS,
    SIGNING_KEY_DIR,
    SIGNING_KEY_FILE,
    SIGNING_SECRET,
    gpu_pod_operator,
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
def training_pod(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The pod of the real credit_risk training DAG, parsed with the Kubernetes backend."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_TRAINING_BACKEND", "kubernetes")
    try:
        bag = DagBag(dag_folder=str(REPO / "dags"))
    finally:
        mp.undo()
    task = bag.dags["credit_risk__training"].get_task("train")
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
    assert container["command"] == ["python", "-m", "mlops.train"]
    args = container["args"]
    assert args[args.index("--model") + 1] == "credit_risk"
    assert "--xcom" in args
    assert training_pod["metadata"]["labels"]["mlops/model"] == "credit-risk"


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
