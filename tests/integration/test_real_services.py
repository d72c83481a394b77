"""The same DAGs on the real services: Postgres, Redis, an MLflow server, S3 (moto's server) and Airflow.

Batches land in S3 and go through `<model>__data`; the training DAG is triggered through Airflow's REST
API with Params, exactly as the UI's trigger form does, and the results are read back from each service.
Training runs on the local backend (no cluster here); the pod the Kubernetes backend would start for
the same run is rendered and validated against the Kubernetes schema.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest

from openlineage_events import assert_training_lineage
from production_stack import DAYS, MODEL, START, Stack

pytestmark = pytest.mark.integration


def test_training_triggered_through_the_rest_api_runs_on_the_real_services(stack_with_data: Stack) -> None:
    stack = stack_with_data
    api = stack.api
    window_end = str(START + timedelta(days=DAYS - 1))
    conf = {"window_end": window_end, "window_days": DAYS, "estimator_params": {"n_estimators": 60}}
    run_id = api.trigger(f"{MODEL}__training", conf=conf)
    run = api.wait_run(f"{MODEL}__training", run_id, 900)
    states = api.task_states(f"{MODEL}__training", run_id)
    assert run["state"] == "success", states
    assert run["conf"] == conf
    assert states["promote"] == "success" and states["auto_approve"] == "success", states
    registered = api.xcom(f"{MODEL}__training", run_id, "register")
    version = str(registered["version"])

    with stack.project_env():
        from mlflow.tracking import MlflowClient

        from mlops.core.config import get_config
        from mlops.core.settings import get_settings
        from mlops.data.ingest import raw_store
        from mlops.features import store as features
        from mlops.orchestration.pod import gpu_pod_operator

        # The MLflow server (Postgres backend): the version, its aliases, lineage and the Param's effect.
        # Both URIs explicit: an earlier test may have set the mlflow module's global registry URI.
        client = MlflowClient(tracking_uri=stack.mlflow_uri, registry_uri=stack.mlflow_uri)
        assert client.get_model_version_by_alias(MODEL, "champion").version == version
        assert client.get_model_version_by_alias(MODEL, "challenger").version == version
        tags = client.get_model_version(MODEL, version).tags
        assert tags["lineage.dag_run_id"] == run_id
        assert tags["lineage.training_window"] == f"{START}..{window_end}"
        landed_hashes = [hashlib.sha256(c).hexdigest()[:16] for c in stack.landed.values()]
        assert sorted(json.loads(tags["lineage.raw_batches"])) == sorted(landed_hashes)
        # The OpenLineage events of this run: S3 day partitions in, the training set, the version out.
        assert_training_lineage(
            stack.root / "openlineage.jsonl",
            model=MODEL,
            version=version,
            dag_run_id=run_id,
            training_set_uri=tags["lineage.training_set_uri"],
            lake_uri=stack.env["MLOPS_LAKE_URI"],
            window=[START + timedelta(days=offset) for offset in range(DAYS)],
            registry_namespace=stack.mlflow_uri,
        )
        mlflow_run = client.get_run(client.get_model_version(MODEL, version).run_id)
        assert mlflow_run.data.params["estimator.n_estimators"] == "60"  # the non-default Param reached the estimator

        # The artifacts went through the server into the S3 bucket: the model and the gate reports.
        s3 = stack.s3()
        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.buckets["mlflow"])
            for o in page.get("Contents", [])
        ]
        assert any(k.endswith("MLmodel") for k in keys), keys[:20]
        for report in ("drift", "quality", "fairness", "champion"):
            assert any(k.endswith(f"/reports/{report}.html") for k in keys), (report, keys[:50])

        # Raw data in the S3 lake by content hash, byte for byte.
        cfg = get_config(MODEL).config
        raw = raw_store(cfg, get_settings())
        for content in stack.landed.values():
            sha = hashlib.sha256(content).hexdigest()
            assert raw.get(f"objects/{sha[:2]}/{sha}.csv") == content

        # Features in Redis, read with get_online_features, equal the newest landed row of the entity.
        import io

        import pandas as pd

        newest = pd.read_csv(io.BytesIO(stack.landed[window_end]))
        entity = int(newest[cfg.entity.join_key].iloc[0])
        store = features.get_store()
        assert type(store.config.online_store).__name__.startswith("Redis")
        online = store.get_online_features(
            features=store.get_feature_service(cfg.feature_service),
            entity_rows=[{cfg.entity.join_key: entity}],
            full_feature_names=False,
        ).to_dict()
        expected = newest[newest[cfg.entity.join_key] == entity].iloc[-1]
        # On a mismatch, say what Redis holds for the entity (its keys, their fields and timestamps).
        import redis

        database = int(stack.env["FEAST_REDIS_CONNECTION"].rsplit("db=", 1)[1])
        held = redis.Redis(host="127.0.0.1", port=6379, db=database)
        seen = f"online {online}; redis db {database} holds {held.dbsize()} keys"
        assert online["annual_income"][0] == pytest.approx(float(expected["annual_income"])), seen
        assert online["home_ownership"][0] == expected["home_ownership"]

        # The pod the Kubernetes backend would start for this run, rendered and validated.
        import kubernetes_validate

        training_set = api.xcom(f"{MODEL}__training", run_id, "build_training_set")
        pod = gpu_pod_operator(
            task_id="train",
            arguments=["--model", MODEL, "--training-set", training_set["uri"], "--xcom"],
            resources=cfg.training.resources,
            labels={"mlops/model": "credit-risk"},
        )
        from kubernetes.client import ApiClient

        manifest = ApiClient().sanitize_for_serialization(pod.build_pod_request_obj(dry_run=True))
        kubernetes_validate.validate(manifest, "1.33", strict=True)
        container = manifest["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == str(cfg.training.resources.gpu)
        assert training_set["uri"].startswith(f"s3://{stack.buckets['lake']}/")
