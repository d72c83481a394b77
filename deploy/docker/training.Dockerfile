# syntax=docker/dockerfile:1
# Training image: `python -m mlops.model.train`, run by the house KubernetesPodOperator (include/mlops/orchestration/pod.py)
# on a GPU node, or with `docker run` anywhere. Build from the repository root and push it where the
# cluster pulls from (the tag is MLOPS_TRAINING_IMAGE / pod.py's DEFAULT_IMAGE):
#
#   docker build -f deploy/docker/training.Dockerfile -t ghcr.io/mlops-platform/trainer:0.1.0 .
#
# GPU: the `xgboost` wheel from PyPI is built with CUDA 12 and carries its CUDA runtime (NCCL comes as
# the nvidia-nccl-cu12 wheel), so a slim Python base is enough: only the NVIDIA driver is needed, and
# the NVIDIA container toolkit (through the device plugin / GPU operator) mounts it, with nvidia-smi,
# into a pod that is given an nvidia.com/gpu. mlops.model.train.gpu_visible() asks nvidia-smi: when it lists
# a GPU, XGBoost runs with device="cuda"; on a node without one (or CUDA_VISIBLE_DEVICES empty or -1)
# it falls back to device="cpu". Other estimators (scikit-learn) always run on the CPU.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# The training CLI's dependencies only (no Airflow), each held to the version in the project's lock
# (requirements.txt as a constraints file). `xgboost` (CUDA build) replaces the lock's xgboost-cpu at
# the same version; nvidia-nccl-cu12 is its one extra dependency, pinned here.
COPY requirements.txt /tmp/build/requirements.txt
RUN pip install -c /tmp/build/requirements.txt \
      mlflow boto3 pandas pyarrow numpy scipy scikit-learn skops cloudpickle pydantic pyyaml croniter \
      model-signing pyopenssl \
      "xgboost==3.2.0" "nvidia-nccl-cu12==2.32.3" \
 && rm -rf /tmp/build

# Non-root user with the uid/gid pod.py's securityContext runs as (RUN_AS_USER = 10001).
RUN groupadd --system --gid 10001 mlops \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin mlops

# mlops.core.settings derives REPO_ROOT from include/'s location: /opt/mlops/include/models holds the
# model configs the CLI reads. Owned by root and compiled here: the running user writes nothing there.
COPY include/mlops/ /opt/mlops/include/mlops/
COPY include/models/ /opt/mlops/include/models/
RUN python -m compileall -q /opt/mlops/include

# Read-only root filesystem: pod.py mounts an emptyDir at /tmp and nothing else is writable (KPO adds
# /airflow/xcom for the result). Everything that writes (HOME, temp files, MLflow downloads, caches,
# the settings' state dir) points there.
ENV PYTHONPATH=/opt/mlops/include \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/.matplotlib \
    MLOPS_STATE_DIR=/tmp/mlops \
    GIT_PYTHON_REFRESH=quiet

USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["python", "-m", "mlops.model.train"]
