# syntax=docker/dockerfile:1
# Airflow image of the production stack (docker-compose.yaml): every Airflow component and the MLflow
# tracking server run from it. Build from the repository root:
#
#   docker compose build            # or:
#   docker build -f deploy/docker/airflow.Dockerfile -t mlops-platform/airflow:0.1.0 .
#
# The base image's Airflow version must equal the apache-airflow pin in requirements.txt (a test
# checks it). Airflow's documented way to add packages: `pip install` as the airflow user, with
# apache-airflow pinned on the same command line so pip cannot move it. requirements.txt is the
# project's full lock (uv pip compile), so no constraints file is needed.
FROM apache/airflow:3.3.2-python3.11

USER airflow

COPY --chown=airflow:0 requirements.txt /opt/airflow/requirements.txt
# The lock includes the FAB auth manager and MLflow's basic-auth extra (Flask-WTF).
RUN pip install --no-cache-dir \
      "apache-airflow==3.3.2" \
      -r /opt/airflow/requirements.txt

# The code is baked in so the image runs on its own (Celery workers on other hosts, KubernetesExecutor);
# docker-compose.yaml bind-mounts the same folders read-only over these for a live checkout.
# Only the product package and the model configs: development tools (include/mlops_dev) stay out.
COPY --chown=airflow:0 include/mlops/ /opt/airflow/include/mlops/
COPY --chown=airflow:0 include/models/ /opt/airflow/include/models/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 feature_repo/ /opt/airflow/feature_repo/

# Mount points of the named volumes, created here so the volumes start owned by airflow.
RUN mkdir -p /opt/airflow/state /opt/airflow/auth /opt/airflow/.kube

# mlops.core.settings derives REPO_ROOT from include/'s location: /opt/airflow holds dags/, include/models/
# and feature_repo/ exactly as the repository does.
ENV PYTHONPATH=/opt/airflow/include \
    MLOPS_STATE_DIR=/opt/airflow/state \
    GX_ANALYTICS_ENABLED=False \
    DO_NOT_TRACK=1
