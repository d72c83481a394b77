"""Registry steps the training DAG calls: register a trained model, promote it, decide on approval."""

from __future__ import annotations

import logging
from typing import Any

from mlops.core.config import ModelConfig, get_config
from mlops.core.errors import GateFailed
from mlops.core.settings import get_settings
from mlops.model.lineage import lineage_tags

log = logging.getLogger(__name__)


def register(
    model: str,
    trained: dict[str, Any],
    training_set: dict[str, Any],
    *,
    dag_id: str,
    run_id: str,
    actor: str = "airflow",
    task_id: str = "register",
) -> dict[str, Any]:
    """Register the gated model with its lineage and gate verdicts and point ``challenger`` at it."""
    from mlops.core.tracking import client
    from mlops.model.launch import LOCAL_PROCESS_IMAGE, TRAINING_IMAGE_TAG
    from mlops.model.registry import CHALLENGER, register_version, set_alias
    from mlops.orchestration.pod import pod_image

    loaded = get_config(model)
    run_tags = client().get_run(trained["run_id"]).data.tags
    # What ran, as the training recorded it; a run without the tag (an older one) gets what would run now.
    image = run_tags.get(TRAINING_IMAGE_TAG) or (
        LOCAL_PROCESS_IMAGE
        if get_settings().training_backend == "local"
        else pod_image(loaded.config.training.resources)
    )
    tags = lineage_tags(loaded, trained, training_set, dag_id=dag_id, run_id=run_id, training_image=image)
    tags.update({k: v for k, v in run_tags.items() if k.startswith("gate.")})  # the doctor checks the champion's
    version = register_version(model, trained["run_id"], tags)
    set_alias(
        model,
        CHALLENGER,
        version,
        actor=actor,
        reason="passed every gate",
        dag_id=dag_id,
        dag_run_id=run_id,
        task_id=task_id,
    )
    return {"version": version, "tags": tags}


def promote(
    model: str,
    version: str,
    *,
    actor: str,
    reason: str,
    dag_id: str = "",
    run_id: str = "",
    task_id: str = "promote",
) -> dict[str, Any]:
    """Point ``champion`` at the version (recorded in the alias history; a retry is the same move).

    With ``promotion.strategy: canary`` and a champion to compare with, the version starts a canary
    rollout instead (:mod:`mlops.model.rollout`); ``<model>__rollout`` moves ``champion`` after the last step.
    """
    from mlops.model.registry import CHAMPION, AliasMoved, get_alias_version, set_alias

    cfg = get_config(model).config
    champion = get_alias_version(model, CHAMPION)
    if cfg.promotion.strategy == "canary" and champion is not None and champion != str(version):
        from mlops.model import rollout

        state = rollout.start(
            model,
            version,
            champion_version=champion,
            steps=cfg.promotion.canary.steps,
            actor=actor,
            reason=reason,
            dag_id=dag_id,
            dag_run_id=run_id,
        )
        return {"model": model, "champion": champion, "canary": state.canary_version, "share": state.share}
    try:
        change = set_alias(
            model,
            CHAMPION,
            version,
            actor=actor,
            reason=reason,
            dag_id=dag_id,
            dag_run_id=run_id,
            task_id=task_id,
        )
    except AliasMoved as exc:
        raise GateFailed(f"promotion of {model} v{version} abandoned: {exc}") from None
    return {"model": model, "champion": change.to_version, "previous": change.from_version}


def needs_approval(cfg: ModelConfig, requested: bool | None) -> bool:
    """A run may ask for approval; it may not switch off approval that the model's config requires."""
    return cfg.promotion.require_approval or bool(requested)
