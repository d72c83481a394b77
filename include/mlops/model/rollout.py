"""Canary rollouts: the state, the stable assignment of entities to arms, and every transition.

A rollout serves one gated version (the *canary*) to a growing share of entities, step by step, next
to the ``champion`` it started against. Its state is one JSON document in the lake
(``rollouts/<model>/state.json``) that scoring, the ``<model>__rollout`` DAG and the feature-flag
provider all read, so an abort (share 0) is seen by the very next scoring run and flag evaluation.
Every transition (start, advance, hold, abort, pause, resume, promote, replace) is appended to the
state's ``events`` with who, why and which Airflow run, under the model's registry lock
(:func:`mlops.model.registry.model_lock`), the same lock every alias move takes.

Assignment: an entity is in the canary arm when ``bucket(key) < share * 100`` where ``bucket`` is
pandas' ``hash_pandas_object`` of the key (SipHash-2-4 for strings), salted with the model's name and
mixed again, modulo 10,000. It is
stable across runs and processes, and monotone across steps: an entity in the canary at 5 % stays in
it at 25 %. Batch scoring and :mod:`mlops.model.rollout_flags` call the same function.

Rules (also in the README):

- one rollout per model at a time; a model's first version becomes champion at once;
- a newer version (a higher number) that passed every gate **replaces** a running canary: the old one is
  recorded ``replaced`` and stops serving, the new one starts at the first step (it never inherits a
  share). A **paused** rollout is never replaced (a person is looking at it): the promotion fails with
  one line, resume or abort first. An older or equal version never replaces;
- a canary serves only while ``champion`` is the version it started against: after a rollback (or any
  other champion move) it serves nothing and the next analysis aborts it, so a rollout never undoes a
  rollback.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from mlops.core.errors import GateFailed

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlops.core.storage import ObjectStore

log = logging.getLogger(__name__)

BUCKETS = 10_000  # shares in basis points: 0.01 % resolution
RUNNING, PAUSED, PROMOTED, ABORTED, REPLACED = "running", "paused", "promoted", "aborted", "replaced"
ACTIVE = (RUNNING, PAUSED)
Action = Literal["analyze", "pause", "resume", "abort", "promote_now"]
ACTIONS: tuple[str, ...] = ("analyze", "pause", "resume", "abort", "promote_now")


# ---------------------------------------------------------------------------------------- assignment


def _hash_key(model: str) -> str:
    """SipHash needs a 16-character key; one per model, so arms of two models are independent."""
    return hashlib.sha256(model.encode()).hexdigest()[:16]


def buckets(model: str, keys: pd.Series) -> np.ndarray:
    """Each key's bucket in [0, 10000): vectorized, stable across runs, processes and machines."""
    import numpy as np
    import pandas as pd

    salt = _hash_key(model)
    hashed = pd.util.hash_pandas_object(keys.reset_index(drop=True), index=False, hash_key=salt).to_numpy()
    # pandas mixes integers without the key: mix the model's salt in, then hash again (a bijection).
    salted = pd.util.hash_array(hashed ^ np.uint64(int(salt, 16)))
    return np.asarray(salted % np.uint64(BUCKETS), dtype="int64")


def in_canary(model: str, keys: pd.Series, share: float) -> np.ndarray:
    """Boolean mask of the keys the canary serves at ``share`` percent (monotone in ``share``)."""
    return buckets(model, keys) < round(share * BUCKETS / 100)


def typed_key(value: str | int, dtype: str) -> pd.Series:
    """One entity key as the one-element series batch scoring hashes (same dtype, so the same bucket)."""
    import pandas as pd

    if dtype == "int64":
        return pd.Series([int(value)], dtype="int64")
    return pd.Series([str(value)], dtype=object)


# --------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class Event:
    at: str
    action: str  # start | advance | hold | abort | pause | resume | promote | replace
    actor: str
    reason: str
    step: int
    share: float
    dag_id: str = ""
    dag_run_id: str = ""
    report: str = ""


@dataclass(frozen=True)
class RolloutState:
    model: str
    rollout_id: str
    canary_version: str
    champion_version: str
    steps: list[float]
    status: str
    step: int
    started_at: str
    step_started_at: str
    events: list[Event] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def share(self) -> float:
        """Percent of entities the canary serves now: the step's share while active, else zero."""
        return float(self.steps[self.step]) if self.active else 0.0

    @property
    def max_share(self) -> float:
        """The largest share the canary ever served."""
        served = [e.share for e in self.events if e.action in ("start", "advance", "resume")]
        return max(served, default=0.0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RolloutState:
        data = json.loads(text)
        data["events"] = [Event(**e) for e in data.get("events", [])]
        return cls(**data)


def _key(model: str) -> str:
    return f"rollouts/{model}/state.json"


def _lake() -> ObjectStore:
    from mlops.core.lake import open_lake
    from mlops.core.settings import get_settings

    return open_lake(get_settings())


def load_state(model: str, lake: ObjectStore | None = None) -> RolloutState | None:
    """The model's latest rollout (running, paused or finished), or None when it never had one."""
    store = lake or _lake()
    if not store.exists(_key(model)):
        return None
    return RolloutState.from_json(store.get(_key(model)).decode())


def _save(state: RolloutState, lake: ObjectStore | None = None) -> None:
    store = lake or _lake()
    store.put(_key(state.model), state.to_json().encode())
    archive = f"rollouts/{state.model}/history/{state.rollout_id}.json"
    store.put(archive, state.to_json().encode())  # every rollout stays readable after the next starts


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _event(state: RolloutState, action: str, actor: str, reason: str, **ids: str) -> Event:
    return Event(at=_now(), action=action, actor=actor, reason=reason, step=state.step, share=state.share, **ids)


def _with(state: RolloutState, event: Event, **changes: Any) -> RolloutState:
    return replace(state, events=[*state.events, event], **changes)


@dataclass(frozen=True)
class Serving:
    """What scoring serves now: the canary and its share, or nothing but the champion."""

    canary_version: str | None = None
    share: float = 0.0
    rollout_id: str = ""
    step: int = -1


def serving(model: str, champion_version: str | None, lake: ObjectStore | None = None) -> Serving:
    """The split scoring must serve: none without a running rollout against today's champion.

    A paused rollout keeps its share (pausing stops the ramp, not the traffic); an aborted one is zero.
    """
    state = load_state(model, lake)
    if state is None or not state.active or champion_version is None:
        return Serving()
    if str(state.champion_version) != str(champion_version):
        log.warning(
            "%s: rollout %s started against champion v%s but the champion is v%s: the canary serves nothing",
            model,
            state.rollout_id,
            state.champion_version,
            champion_version,
        )
        return Serving()
    return Serving(state.canary_version, state.share, state.rollout_id, state.step)


# ----------------------------------------------------------------------------------------- transitions


def _number(version: str) -> int:
    return int(str(version))


def start(
    model: str,
    version: str,
    *,
    champion_version: str,
    steps: list[float],
    actor: str,
    reason: str,
    dag_id: str = "",
    dag_run_id: str = "",
) -> RolloutState:
    """Start a canary for ``version`` against ``champion_version`` at the first step (idempotent)."""
    from mlops.model.registry import model_lock

    with model_lock(model):
        current = load_state(model)
        if current is not None and current.canary_version == str(version) and current.active:
            return current  # a retry of the promotion: the rollout already runs
        if current is not None and current.active:
            current = _replace_running(current, str(version), actor=actor, dag_id=dag_id, dag_run_id=dag_run_id)
        started = _now()
        rollout_id = f"{model}-v{version}-{started.replace(':', '').replace('-', '')[:15]}"
        state = RolloutState(
            model=model,
            rollout_id=rollout_id,
            canary_version=str(version),
            champion_version=str(champion_version),
            steps=[float(s) for s in steps],
            status=RUNNING,
            step=0,
            started_at=started,
            step_started_at=started,
        )
        state = _with(state, _event(state, "start", actor, reason, dag_id=dag_id, dag_run_id=dag_run_id))
        _save(state)
    log.info("%s: canary v%s started at %.4g%% against champion v%s", model, version, state.share, champion_version)
    return state


def _replace_running(current: RolloutState, version: str, **ids: str) -> RolloutState:
    """The documented rule: a newer version replaces a running canary; a paused one is never replaced."""
    if current.status == PAUSED:
        raise GateFailed(
            f"{current.model} v{version} passed its gates but rollout {current.rollout_id} (canary "
            f"v{current.canary_version}) is paused: resume or abort it in {current.model}__rollout first"
        )
    if _number(version) <= _number(current.canary_version):
        raise GateFailed(
            f"{current.model} v{version} is not newer than the running canary v{current.canary_version}: "
            "it does not replace it"
        )
    actor = ids.pop("actor")
    event = _event(current, "replace", actor, f"replaced by newer v{version}", **ids)
    replaced = _with(current, event, status=REPLACED)
    _save(replaced)
    log.info("%s: canary v%s replaced by v%s", current.model, current.canary_version, version)
    return replaced


def record(
    model: str,
    action: str,
    *,
    actor: str,
    reason: str,
    dag_id: str = "",
    dag_run_id: str = "",
    report: str = "",
    expect_rollout: str | None = None,
) -> RolloutState:
    """Apply one transition to the active rollout under the model's lock and record it.

    ``advance`` moves to the next step; ``abort`` sets the share to zero at once; ``pause``/``resume``
    freeze and release the ramp; ``hold`` only records the analysis. ``promote`` is
    :func:`promote` (it moves the champion alias too). A transition of the same Airflow run that is
    already recorded is not applied twice (a retried task converges).
    """
    from mlops.model.registry import model_lock

    with model_lock(model):
        state = _active(model, expect_rollout)
        if dag_run_id and any(e.dag_run_id == dag_run_id and e.action == action for e in state.events):
            return state
        changes: dict[str, Any] = {}
        if action == "advance":
            if state.status != RUNNING or state.step + 1 >= len(state.steps):
                raise GateFailed(f"{model}: rollout {state.rollout_id} cannot advance from {state.status}")
            changes = {"step": state.step + 1, "step_started_at": _now()}
        elif action == "abort":
            changes = {"status": ABORTED}
        elif action == "pause":
            changes = {"status": PAUSED}
        elif action == "resume":
            changes = {"status": RUNNING, "step_started_at": _now()}
        elif action != "hold":
            raise ValueError(f"unknown rollout transition {action!r}")
        moved = replace(state, **changes)
        event = _event(moved, action, actor, reason, dag_id=dag_id, dag_run_id=dag_run_id, report=report)
        if action == "abort":
            event = replace(event, share=0.0)
        state = _with(moved, event)
        _save(state)
    log.info("%s: rollout %s %s (%s: %s); share %.4g%%", model, state.rollout_id, action, actor, reason, state.share)
    return state


def _active(model: str, expect_rollout: str | None) -> RolloutState:
    state = load_state(model)
    if state is None or not state.active:
        raise GateFailed(f"{model} has no running canary rollout")
    if expect_rollout is not None and state.rollout_id != expect_rollout:
        raise GateFailed(f"{model}: rollout {expect_rollout} was replaced by {state.rollout_id}; nothing changed")
    return state


def promote(
    model: str,
    *,
    actor: str,
    reason: str,
    dag_id: str = "",
    dag_run_id: str = "",
    report: str = "",
    expect_rollout: str | None = None,
) -> RolloutState:
    """Make the canary ``champion`` (an alias move in the alias history) and end the rollout.

    The move requires ``champion`` to still be the version the rollout started against (checked under
    the lock by :func:`mlops.model.registry.set_alias`): when it moved (a rollback), the rollout aborts
    instead, so a rollout never undoes a rollback. The canary's signature is verified before the move.
    """
    from mlops.model.registry import CHAMPION, AliasMoved, set_alias
    from mlops.model.scoring import verify_version

    state = _active(model, expect_rollout)
    verify_version(model, state.canary_version)
    try:
        set_alias(
            model,
            CHAMPION,
            state.canary_version,
            actor=actor,
            reason=f"canary {state.rollout_id}: {reason}",
            dag_id=dag_id,
            dag_run_id=dag_run_id,
            task_id=f"rollout-promote-{state.rollout_id}",
            expect_current=state.champion_version,
        )
    except AliasMoved as exc:
        return record(
            model,
            "abort",
            actor=actor,
            reason=f"champion moved during the rollout: {exc}",
            dag_id=dag_id,
            dag_run_id=dag_run_id,
            report=report,
        )
    from mlops.model.registry import model_lock

    with model_lock(model):
        state = _active(model, state.rollout_id)
        event = _event(state, "promote", actor, reason, dag_id=dag_id, dag_run_id=dag_run_id, report=report)
        state = _with(state, replace(event, share=100.0), status=PROMOTED)
        _save(state)
    log.info("%s: canary v%s promoted to champion (%s: %s)", model, state.canary_version, actor, reason)
    return state
