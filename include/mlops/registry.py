"""MLflow model registry: versions with lineage tags, aliases, and a recorded alias history.

Aliases (``challenger``, ``champion``), never stages. Every alias move goes through :func:`set_alias`,
which records the change as a run in the ``<model>__alias_history`` experiment (who, why, from, to,
which DAG run) so the history is queryable in the MLflow UI and rollback can read it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from mlops.tracking import client, configure, ensure_experiment

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_SUFFIX = "__alias_history"


@dataclass(frozen=True)
class AliasChange:
    model: str
    alias: str
    from_version: str | None
    to_version: str
    actor: str
    reason: str
    dag_id: str
    dag_run_id: str
    at: str


def get_alias_version(model: str, alias: str) -> str | None:
    """Version number the alias points at, or None when unset (or the model is not registered)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client().get_model_version_by_alias(model, alias).version)
    except MlflowException as exc:
        # Only "no such model/alias" means unset; a locked or unreachable store must not read as
        # "no champion" (that would skip the champion gate and promote untested).
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def register_version(model: str, run_id: str, tags: dict[str, str]) -> str:
    """Register ``runs:/<run_id>/model`` once; a rerun for the same run returns the same version."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    try:
        mlflow_client.create_registered_model(model, description=f"Registered by the {model} pipeline.")
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    for version in mlflow_client.search_model_versions(f"name='{model}' and run_id='{run_id}'"):
        log.info("run %s is already registered as %s version %s", run_id, model, version.version)
        return str(version.version)
    import mlflow

    created = mlflow.register_model(f"runs:/{run_id}/model", model, tags={k: str(v) for k, v in tags.items()})
    log.info("registered %s version %s from run %s", model, created.version, run_id)
    return str(created.version)


def version_tags(model: str, version: str) -> dict[str, str]:
    return dict(client().get_model_version(model, version).tags)


def set_alias(
    model: str,
    alias: str,
    version: str,
    *,
    actor: str,
    reason: str,
    dag_id: str = "",
    dag_run_id: str = "",
) -> AliasChange:
    """Move ``alias`` to ``version`` and record the change; the one path every alias move takes."""

    mlflow_client = client()
    mlflow_client.get_model_version(model, version)  # fails loudly on an unknown version
    current = get_alias_version(model, alias)
    if current == str(version):  # a rerun: nothing moves, nothing is recorded twice
        log.info("%s@%s already points at %s", model, alias, version)
        return AliasChange(
            model=model,
            alias=alias,
            from_version=current,
            to_version=current,
            actor=actor,
            reason=reason,
            dag_id=dag_id,
            dag_run_id=dag_run_id,
            at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
    change = AliasChange(
        model=model,
        alias=alias,
        from_version=current,
        to_version=str(version),
        actor=actor,
        reason=reason,
        dag_id=dag_id,
        dag_run_id=dag_run_id,
        at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    experiment_id = ensure_experiment(f"{model}{HISTORY_SUFFIX}")
    run = mlflow_client.create_run(
        experiment_id,
        run_name=f"{alias}: {change.from_version or '-'} -> {version}",
        tags={f"alias_change.{k}": str(v) for k, v in asdict(change).items()},
    )
    try:
        mlflow_client.set_model_version_tag(model, str(version), f"{alias}_since", change.at)
        mlflow_client.set_registered_model_alias(model, alias, str(version))
    except Exception:
        mlflow_client.set_terminated(run.info.run_id, status="FAILED")
        raise
    mlflow_client.set_terminated(run.info.run_id, status="FINISHED")
    log.info("%s@%s: %s -> %s (%s: %s)", model, alias, change.from_version, version, actor, reason)
    return change


def alias_history(model: str, alias: str | None = None) -> list[AliasChange]:
    """Completed alias changes, oldest first (failed attempts are excluded)."""
    import mlflow

    configure()
    experiment = mlflow.get_experiment_by_name(f"{model}{HISTORY_SUFFIX}")
    if experiment is None:
        return []
    runs = client().search_runs(
        [experiment.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=10_000,
    )
    changes = []
    for run in runs:
        data: dict[str, str | None] = {
            k.removeprefix("alias_change."): v for k, v in run.data.tags.items() if k.startswith("alias_change.")
        }
        data["from_version"] = None if data.get("from_version") in (None, "None") else data["from_version"]
        change = AliasChange(**data)  # type: ignore[arg-type]
        if alias is None or change.alias == alias:
            changes.append(change)
    return changes


def describe(model: str) -> dict[str, Any]:
    """Champion/challenger and their key tags: what the demo and the UI summary print."""
    out: dict[str, Any] = {"model": model}
    for alias in (CHAMPION, CHALLENGER):
        version = get_alias_version(model, alias)
        out[alias] = version
    out["history"] = [asdict(c) for c in alias_history(model)]
    return out


if __name__ == "__main__":
    import sys

    print(json.dumps(describe(sys.argv[1]), indent=2))


class RollbackError(RuntimeError):
    """There is nothing to roll back to (or the target is the current champion)."""


ROLLBACK_PREFIX = "rollback: "


def previous_champion(model: str) -> str | None:
    """The champion before the current one, skipping versions that were themselves rolled back."""
    current = get_alias_version(model, CHAMPION)
    history = alias_history(model, CHAMPION)
    rolled_back = {c.from_version for c in history if c.reason.startswith(ROLLBACK_PREFIX)}
    index = len(history)
    while index > 0 and history[index - 1].to_version == current:  # the current reign
        index -= 1
    for change in reversed(history[:index]):
        if change.to_version != current and change.to_version not in rolled_back:
            return change.to_version
    return None


def _verify_target(model: str, version: str) -> None:
    """Refuse (ModelIntegrityError) to make champion a version that scoring would refuse to load."""
    from mlops.scoring import verify_version

    verify_version(model, version)


def rollback(
    model: str,
    target_version: str | None = None,
    *,
    actor: str,
    reason: str,
    dag_id: str = "",
    dag_run_id: str = "",
    only_if_champion: str | None = None,
) -> AliasChange | None:
    """Point ``champion`` back at the previous champion (or ``target_version``) in one step.

    The UI's rollback DAG and the circuit breaker both call this; the change is recorded in the alias
    history with who and why, and the next scoring run loads the new champion with no redeploy. The
    breaker passes ``only_if_champion`` (the version that breached) so that it never rolls back a
    version that was already replaced; it then returns None.
    """
    current = get_alias_version(model, CHAMPION)
    if only_if_champion is not None and current != only_if_champion:
        log.info("not rolling back %s: v%s breached, but the champion is already v%s", model, only_if_champion, current)
        return None
    target = target_version or previous_champion(model)
    if target is None:
        raise RollbackError(f"cannot roll back {model}: no earlier champion in the alias history")
    if target == current:
        raise RollbackError(f"cannot roll back {model}: version {target} is already the champion")
    _verify_target(model, target)
    return set_alias(
        model,
        CHAMPION,
        target,
        actor=actor,
        reason=f"{ROLLBACK_PREFIX}{reason}",
        dag_id=dag_id,
        dag_run_id=dag_run_id,
    )
