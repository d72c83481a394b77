"""Lineage: real dataset URIs for the Assets, and OpenLineage inputs/outputs of the training run.

Every Asset and lineage dataset is a location a lineage tool can open: ``file:///…`` on the embedded
default, ``s3://bucket/…`` in production, both derived from the environment's lake and landing roots
(``mlops.core.settings``). The OpenLineage provider emits a START and a COMPLETE (or FAIL) event for
every task by itself; the functions here name what a task read and wrote where Airflow cannot know it:

- ``build_training_set`` reads the day partitions ``<lake>/validated/<model>/date=<day>`` (each with its
  snapshot id as the dataset version) and writes the training set;
- ``train`` reads the training set; ``register`` reads it and writes the model version, named
  ``models:/<model>/<version>`` in the registry's namespace.

The provider asks a task for them through ``get_openlineage_facets_on_complete`` after it succeeded
(``attach_lineage``). Parse-time work is string work only; the OpenLineage client is imported when an
event is built, on the worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

OL_METHOD = "get_openlineage_facets_on_complete"


def location_uri(root: str) -> str:
    """A store root as a URI: ``s3://…`` as given, a local path (or ``file:`` URI) as ``file:///<abs path>``."""
    root = root.strip()
    if root.startswith("file:"):
        root = urlsplit(root).path
    if "://" in root:
        return root.rstrip("/")
    # Percent-encode only what a URI cannot hold (a space, '#', '?'): partition names like date=… stay.
    return "file://" + quote(os.path.abspath(root), safe="/=:@-._~!$&'()*+,;").rstrip("/")


def join_uri(root: str, *parts: str) -> str:
    """``root`` (see ``location_uri``) with path parts appended, each stripped of slashes."""
    return "/".join([location_uri(root), *(p.strip("/") for p in parts if p.strip("/"))])


def lake_uri(*parts: str) -> str | None:
    """A location in the environment's lake as a URI; None when the environment is incomplete.

    Never raises (DAG files call it at parse time through the Asset helpers): an incomplete production
    environment makes the tasks fail with the setting's name, and parsing must go on.
    """
    from mlops.core.settings import SettingsError, get_settings

    try:
        root = get_settings().lake_uri
    except SettingsError:
        root = os.environ.get("MLOPS_LAKE_URI", "")
    return join_uri(root, *parts) if root else None


def dataset_name(uri: str) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)`` of a ``file://`` or ``s3://`` URI, as the Airflow providers name them.

    ``s3://bucket/key`` → ``("s3://bucket", "key")`` (amazon provider); ``file:///path`` → ``("file",
    "/path")`` (common.io provider), so the datasets of Asset events and of these events are the same.
    """
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        return f"s3://{parts.netloc}", parts.path.lstrip("/") or "/"
    if parts.scheme == "file":
        return (f"file://{parts.netloc}" if parts.netloc else "file"), parts.path
    raise ValueError(f"no OpenLineage dataset naming for {uri!r}: expected file:// or s3://")


def ol_dataset(uri: str, version: str | None = None) -> Any:
    """An OpenLineage dataset of a lake location, with its version (a content id) when known."""
    from openlineage.client.event_v2 import Dataset
    from openlineage.client.facet_v2 import dataset_version_dataset, datasource_dataset

    namespace, name = dataset_name(location_uri(uri))
    facets: dict[str, Any] = {"dataSource": datasource_dataset.DatasourceDatasetFacet(name=namespace, uri=uri)}
    if version:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=version)
    return Dataset(namespace=namespace, name=name, facets=facets)


def registry_namespace(registry_uri: str) -> str:
    """The model registry as an OpenLineage namespace: its URI without credentials."""
    parts = urlsplit(registry_uri)
    if parts.password or parts.username:
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return registry_uri  # as given: geturl() would fold sqlite:////abs/path into sqlite://abs/path


def model_version_dataset(model: str, version: str, registry_uri: str) -> Any:
    """The registered model version as an OpenLineage dataset: ``models:/<model>/<version>`` in the registry."""
    from openlineage.client.event_v2 import Dataset
    from openlineage.client.facet_v2 import dataset_version_dataset, datasource_dataset

    namespace = registry_namespace(registry_uri)
    facets: dict[str, Any] = {
        "dataSource": datasource_dataset.DatasourceDatasetFacet(name=namespace, uri=namespace),
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(version)),
    }
    return Dataset(namespace=namespace, name=f"models:/{model}/{version}", facets=facets)


def training_set_lineage(result: dict[str, Any], task_instance: Any) -> tuple[list[Any], list[Any]]:
    """Inputs and outputs of ``build_training_set``: the day partitions it read, the set it wrote."""
    del task_instance
    inputs = [ol_dataset(p["uri"], p.get("snapshot")) for p in result.get("partitions", [])]
    return inputs, [ol_dataset(result["uri"], result.get("sha256") or None)]


def train_lineage(result: dict[str, Any], task_instance: Any, *, training_set_task: str) -> tuple[list[Any], list[Any]]:
    """Inputs of ``train``: the training set (its output lives in MLflow and is named at ``register``)."""
    del result
    training_set = task_instance.xcom_pull(task_ids=training_set_task, key="return_value") or {}
    if not training_set.get("uri"):
        return [], []
    return [ol_dataset(training_set["uri"], training_set.get("sha256") or None)], []


def register_lineage(result: dict[str, Any], task_instance: Any, *, model: str) -> tuple[list[Any], list[Any]]:
    """Inputs and outputs of ``register``: the training set the version was trained on, and the version."""
    from mlops.core.settings import get_settings

    del task_instance
    tags = result.get("tags") or {}
    inputs = []
    if tags.get("lineage.training_set_uri"):
        inputs.append(ol_dataset(tags["lineage.training_set_uri"], tags.get("lineage.training_set_sha256") or None))
    version = model_version_dataset(model, str(result["version"]), get_settings().registry_uri)
    return inputs, [version]


Lineage = Callable[[dict[str, Any], Any], tuple[list[Any], list[Any]]]


def attach_lineage(task_output: Any, lineage: Lineage) -> Any:
    """Name a TaskFlow task's inputs and outputs in its OpenLineage COMPLETE event.

    ``lineage(return_value, task_instance)`` builds ``(inputs, outputs)`` from what the task returned
    (read back from XCom). The OpenLineage provider calls ``get_openlineage_facets_on_complete`` on the
    task after it succeeded; without a configured transport the provider is off and this is never called.
    Returns ``task_output`` so it can wrap a call in place.
    """
    operator = getattr(task_output, "operator", task_output)

    def on_complete(task_instance: Any) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        value = task_instance.xcom_pull(task_ids=task_instance.task_id, key="return_value")
        if not isinstance(value, dict):
            return OperatorLineage()
        inputs, outputs = lineage(value, task_instance)
        return OperatorLineage(inputs=inputs, outputs=outputs)

    setattr(operator, OL_METHOD, on_complete)
    return task_output
