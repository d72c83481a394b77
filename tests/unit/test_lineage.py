"""Real Asset URIs and OpenLineage datasets (mlops.orchestration.lineage, the Asset helpers in dagkit)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import Asset

from mlops.core.config import get_config
from mlops.orchestration import dagkit, lineage

CFG = get_config("credit_risk").config


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("s3://lake/", "s3://lake"),
        ("s3://lake/prefix/", "s3://lake/prefix"),
        ("/srv/lake/", "file:///srv/lake"),
        ("file:///srv/lake", "file:///srv/lake"),
        ("/srv/my lake", "file:///srv/my%20lake"),
    ],
)
def test_location_uri(root: str, expected: str) -> None:
    assert lineage.location_uri(root) == expected


def test_a_relative_local_root_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert lineage.join_uri("lake", "/validated/", "m") == f"{tmp_path.as_uri()}/lake/validated/m"


def test_assets_are_located_in_the_local_lake_and_landing_folder(state_dir: Path) -> None:
    lake = (state_dir / "lake").as_uri()
    assert dagkit.features_asset("credit_risk").uri == f"{lake}/validated/credit_risk"
    assert dagkit.labels_asset("credit_risk").uri == f"{lake}/validated/credit_risk?view=labels"
    assert dagkit.predictions_asset("credit_risk").uri == f"{lake}/predictions/credit_risk"
    assert dagkit.drift_asset("credit_risk").uri == f"{lake}/monitoring/credit_risk"
    assert dagkit.landed_asset(CFG).uri == (state_dir / "landing" / "credit_risk").as_uri()
    names = [dagkit.features_asset("m").name, dagkit.labels_asset("m").name, dagkit.drift_asset("m").name]
    assert names == ["m.features", "m.labels", "m.drift"]  # the stable identity, whatever the location


def test_assets_are_located_in_s3_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_ENV", "production")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("MLOPS_LANDING_URI", "s3://landing/in")
    monkeypatch.setenv("MLOPS_LAKE_URI", "s3://lake")
    assert dagkit.features_asset("credit_risk").uri == "s3://lake/validated/credit_risk"
    assert dagkit.predictions_asset("credit_risk").uri == "s3://lake/predictions/credit_risk"
    assert dagkit.landed_asset(CFG).uri == "s3://landing/in/credit_risk"
    monkeypatch.delenv("MLOPS_LAKE_URI")  # incomplete: the DAG still parses, the Asset keeps its name
    asset = dagkit.features_asset("credit_risk")
    assert (asset.name, asset.uri) == ("credit_risk.features", "credit_risk.features")


def test_every_asset_uri_is_unique_and_kept_by_airflows_normalization(state_dir: Path) -> None:
    assets = [f("credit_risk") for f in (dagkit.features_asset, dagkit.labels_asset, dagkit.predictions_asset)]
    assets += [dagkit.drift_asset("credit_risk"), dagkit.landed_asset(CFG)]
    uris = [a.uri for a in assets]
    assert len(set(uris)) == len(uris)  # Airflow activates an Asset only if its URI is not taken
    assert [Asset(name=a.name, uri=a.uri).uri for a in assets] == uris  # normalizing again changes nothing


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://lake/validated/m/date=2026-03-01", ("s3://lake", "validated/m/date=2026-03-01")),
        ("file:///srv/lake/validated/m", ("file", "/srv/lake/validated/m")),
    ],
)
def test_dataset_names_match_the_providers_asset_conversion(uri: str, expected: tuple[str, str]) -> None:
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset

    assert lineage.dataset_name(uri) == expected
    converted = translate_airflow_asset(Asset(uri=uri), None)  # what the provider emits for an Asset event
    assert (converted.namespace, converted.name) == expected


def test_no_dataset_name_for_another_scheme() -> None:
    with pytest.raises(ValueError, match="file:// or s3://"):
        lineage.dataset_name("mlops://credit_risk/features")


def test_the_registry_namespace_never_carries_credentials() -> None:
    ns = lineage.registry_namespace("postgresql://mlflow:secret@db:5432/mlflow")
    assert ns == "postgresql://db:5432/mlflow" and "secret" not in ns


class _TI:
    def __init__(self, task_id: str, values: dict[str, Any]) -> None:
        self.task_id, self.values = task_id, values

    def xcom_pull(self, task_ids: str, key: str) -> Any:
        assert key == "return_value"
        return self.values.get(task_ids)


def test_a_tasks_complete_event_names_what_it_returned(tmp_path: Path) -> None:
    """The provider calls get_openlineage_facets_on_complete; the lineage is built from the task's XCom."""
    part = f"{tmp_path.as_uri()}/validated/m/date=2026-03-01"
    built = {"uri": str(tmp_path / "runs" / "set.parquet"), "sha256": "ab" * 32, "partitions": []}
    built["partitions"] = [{"day": "2026-03-01", "uri": part, "snapshot": "0123456789abcdef"}]
    operator = SimpleNamespace(task_id="build_training_set")
    assert lineage.attach_lineage(operator, lineage.training_set_lineage) is operator
    facets = operator.get_openlineage_facets_on_complete(_TI("build_training_set", {"build_training_set": built}))
    (source,) = facets.inputs
    assert (source.namespace, source.name) == ("file", f"{tmp_path}/validated/m/date=2026-03-01")
    assert source.facets["version"].datasetVersion == "0123456789abcdef"
    (written,) = facets.outputs
    assert (written.namespace, written.name) == ("file", f"{tmp_path}/runs/set.parquet")
    # Nothing returned (a skipped or odd task): no datasets, never an error.
    assert operator.get_openlineage_facets_on_complete(_TI("build_training_set", {})).inputs == []


def test_the_registered_version_is_the_register_tasks_output(state_dir: Path) -> None:
    from functools import partial

    operator = SimpleNamespace(task_id="register")
    lineage.attach_lineage(operator, partial(lineage.register_lineage, model="credit_risk"))
    result = {"version": "3", "tags": {"lineage.training_set_uri": "s3://lake/runs/m/r/set.parquet"}}
    facets = operator.get_openlineage_facets_on_complete(_TI("register", {"register": result}))
    assert [(d.namespace, d.name) for d in facets.inputs] == [("s3://lake", "runs/m/r/set.parquet")]
    (version,) = facets.outputs
    assert version.name == "models:/credit_risk/3" and version.facets["version"].datasetVersion == "3"
    assert version.namespace == f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}"
