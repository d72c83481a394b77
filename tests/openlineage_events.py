"""Reading back the OpenLineage events the provider's file transport wrote, for the embedded default and the
production stack alike: one training run's tasks, and the datasets its events name."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

TASKS = ("plan_training", "build_training_set", "train", "gate_quality", "register", "promote")


def assert_training_lineage(
    events_file: Path,
    *,
    model: str,
    version: str,
    dag_run_id: str,
    training_set_uri: str,
    lake_uri: str,
    window: Sequence[date],
    registry_namespace: str,
) -> None:
    """START and COMPLETE for every task of the run; its inputs are the validated day partitions of the
    window (versioned), the training set links build_training_set, train and register, and register's output
    is the model version in the registry's namespace."""
    from mlops.orchestration.lineage import dataset_name, join_uri, location_uri

    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    ours = [e for e in events if _airflow_run_id(e) == dag_run_id]
    jobs = {e["job"]["name"] for e in ours}
    for task_id in TASKS:
        job = f"{model}__training.{task_id}"
        assert job in jobs, (job, sorted(jobs))
        assert {e["eventType"] for e in ours if e["job"]["name"] == job} >= {"START", "COMPLETE"}, job

    def completed(task_id: str) -> dict[str, Any]:
        (event,) = [
            e for e in ours if e["job"]["name"] == f"{model}__training.{task_id}" and e["eventType"] == "COMPLETE"
        ]
        return event

    def named(datasets: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(d["namespace"], d["name"]) for d in datasets]

    training_set = completed("build_training_set")
    partitions = [dataset_name(join_uri(lake_uri, "validated", model, f"date={day}")) for day in window]
    assert named(training_set["inputs"]) == partitions
    assert all(d["facets"]["version"]["datasetVersion"] for d in training_set["inputs"])
    produced = [dataset_name(location_uri(training_set_uri))]
    assert named(training_set["outputs"]) == produced
    assert named(completed("train")["inputs"]) == produced
    register = completed("register")
    assert named(register["inputs"]) == produced
    (output,) = register["outputs"]
    assert (output["namespace"], output["name"]) == (registry_namespace, f"models:/{model}/{version}")
    assert output["facets"]["version"]["datasetVersion"] == version


def _airflow_run_id(event: dict[str, Any]) -> str | None:
    facet = event.get("run", {}).get("facets", {}).get("airflow", {})
    return (facet.get("dagRun") or {}).get("run_id")
