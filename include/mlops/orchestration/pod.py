"""The house KubernetesPodOperator wrapper: every pod default is set here, once, with its reason.

Endpoints reach the pod from the ConfigMap ``mlops-endpoints``, credentials from the Secret
``mlops-credentials`` and the model signing key from the Secret ``mlops-signing-key`` (see
``deploy/k8s``). The image and namespace are the settings ``MLOPS_TRAINING_IMAGE`` /
``MLOPS_K8S_NAMESPACE`` (read without raising, so safe at parse time);
:func:`pod_image` is the one place the image is chosen, and the registry's lineage tag calls it too.

Every container of the pod, the operator's XCom sidecar included, meets the Pod Security
``restricted`` profile that ``deploy/k8s/namespace.yaml`` enforces.
"""

from __future__ import annotations

from typing import Any

from mlops.core.config import ResourcesConfig
from mlops.core.settings import DEFAULT_TRAINING_IMAGE, kubernetes_namespace, training_image

DEFAULT_IMAGE = DEFAULT_TRAINING_IMAGE
ENDPOINTS_CONFIGMAP = "mlops-endpoints"
CREDENTIALS_SECRET = "mlops-credentials"
# Keys of the credentials Secret exposed to the container as environment variables of the same name.
SECRET_ENV_KEYS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)
# The model signing key (mlops.model.signing): one PEM file of its own Secret, mounted read-only and named
# by MLOPS_SIGNING_KEY_FILE; only the training pod ever holds it.
SIGNING_SECRET = "mlops-signing-key"
SIGNING_KEY_FILE = "signing-key.pem"
SIGNING_KEY_DIR = "/var/run/secrets/mlops-signing"
GPU_RESOURCE = "nvidia.com/gpu"
RUN_AS_USER = 10001  # the training image's non-root user
# The label that marks training pods: deploy/k8s/networkpolicy.yaml selects them by it.
ROLE_LABEL = ("mlops/role", "training")


def pod_image(resources: ResourcesConfig) -> str:
    """The image a training pod runs: the model's ``training.resources.image``, else MLOPS_TRAINING_IMAGE.

    The registry's ``lineage.training_image`` tag calls this too, so it names what the pod ran.
    """
    return resources.image or training_image()


def training_arguments(model: str, resources: ResourcesConfig, *, training_set_task: str) -> list[str]:
    """The training CLI's arguments in the pod: :func:`mlops.model.launch.train_arguments` over Jinja templates.

    Values come from the upstream ``training_set_task``'s XCom and the run's context when Airflow renders
    the operator; the ``mlops.training_image`` tag is the image this pod runs (:func:`pod_image`).
    """
    from mlops.model.launch import run_name, train_arguments, train_tags

    xcom = f"ti.xcom_pull(task_ids='{training_set_task}')"
    dag_id, run_id = "{{ dag.dag_id }}", "{{ run_id }}"
    tags = train_tags(dag_id=dag_id, run_id=run_id, trigger="{{ " + xcom + "['trigger'] }}", image=pod_image(resources))
    arguments = train_arguments(
        model,
        training_set_uri="{{ " + xcom + "['uri'] }}",
        holdout_uri="{{ " + xcom + "['holdout_uri'] }}",
        estimator_params_json="{{ params.estimator_params | tojson }}",
        tags=tags,
        run_name=run_name(dag_id, run_id),
    )
    return [*arguments, "--xcom"]


def _container_security_context() -> Any:
    """Pod Security ``restricted`` for one container: no escalation, no capabilities, read-only root."""
    from kubernetes.client import models as k8s

    return k8s.V1SecurityContext(
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def gpu_pod_operator(
    *,
    task_id: str,
    arguments: list[str],
    resources: ResourcesConfig,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    **overrides: Any,
) -> Any:
    """Build the training KubernetesPodOperator; ``overrides`` win over the house defaults.

    The image is not an override: it comes from :func:`pod_image` only, so lineage cannot drift.
    """
    if "image" in overrides:
        raise ValueError("gpu_pod_operator takes no image: set training.resources.image or MLOPS_TRAINING_IMAGE")
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s

    limits = {"cpu": resources.cpu, "memory": resources.memory}
    node_selector: dict[str, str] = {}
    tolerations: list[k8s.V1Toleration] = []
    if resources.gpu:
        limits[GPU_RESOURCE] = str(resources.gpu)
        # Only GPU nodes carry this label (set by the NVIDIA GPU operator / node feature discovery).
        node_selector["nvidia.com/gpu.present"] = "true"
        # GPU pools are tainted so that only pods that ask for a GPU land there.
        tolerations.append(k8s.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule"))
    defaults: dict[str, Any] = {
        "task_id": task_id,
        "name": f"train-{task_id}".replace("_", "-"),
        "namespace": namespace or kubernetes_namespace(),
        "image": pod_image(resources),
        "cmds": ["python", "-m", "mlops.model.train"],
        "arguments": arguments,
        # Requests equal limits: training gets a Guaranteed QoS class and is not evicted first.
        "container_resources": k8s.V1ResourceRequirements(requests=dict(limits), limits=limits),
        "node_selector": node_selector,
        "tolerations": tolerations,
        "labels": {"app.kubernetes.io/part-of": "mlops-platform", **(labels or {}), ROLE_LABEL[0]: ROLE_LABEL[1]},
        # Non-root, no privilege escalation, read-only root: the image only needs /tmp to write.
        "security_context": k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=RUN_AS_USER,
            run_as_group=RUN_AS_USER,
            fs_group=RUN_AS_USER,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        "container_security_context": _container_security_context(),
        # The operator's XCom sidecar (alpine) gets the same context: unset, the namespace's
        # `restricted` enforcement would reject the whole pod. It only runs `sh`, `sleep` and `cat`.
        "xcom_sidecar_container_security_context": _container_security_context(),
        "volumes": [k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="20Gi"))],
        "volume_mounts": [k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],
        # Endpoints from a ConfigMap, credentials from a Secret: nothing sensitive in the DAG.
        "configmaps": [ENDPOINTS_CONFIGMAP],
        "secrets": [
            *(Secret("env", key, CREDENTIALS_SECRET, key) for key in SECRET_ENV_KEYS),
            # Group-readable (0440): the pod's fsGroup owns the file, no one else can read it.
            Secret(
                "volume",
                SIGNING_KEY_DIR,
                SIGNING_SECRET,
                items=[k8s.V1KeyToPath(key=SIGNING_KEY_FILE, path=SIGNING_KEY_FILE, mode=0o440)],
            ),
        ],
        "env_vars": {"MLOPS_SIGNING_KEY_FILE": f"{SIGNING_KEY_DIR}/{SIGNING_KEY_FILE}"},
        "service_account_name": "mlops-training",
        # The run identity never needs the Kubernetes API from inside the pod.
        "automount_service_account_token": False,
        # Pinned tags are immutable: IfNotPresent avoids a registry round-trip on every run.
        "image_pull_policy": "IfNotPresent",
        # A GPU node may have to be scaled up: allow 15 minutes to be scheduled, 10 more to start.
        "schedule_timeout_seconds": 900,
        "startup_timeout_seconds": 600,
        # A hung training job must not hold a GPU forever.
        "active_deadline_seconds": 4 * 3600,
        # Keep failed pods for debugging; delete successful ones.
        "on_finish_action": "delete_succeeded_pod",
        # The result JSON travels through XCom; deferrable mode can drop it (cncf-kubernetes 10.25).
        "do_xcom_push": True,
        "deferrable": False,
        "get_logs": True,
        # A restarted worker re-attaches to the running pod instead of starting a second GPU job.
        "reattach_on_restart": True,
        "log_events_on_failure": True,
    }
    defaults.update(overrides)
    return KubernetesPodOperator(**defaults)
