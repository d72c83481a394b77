"""MLflow model registry: versions with lineage tags, aliases, and a recorded alias history.

Aliases (``challenger``, ``champion``), never stages. Every alias move goes through :func:`set_alias`
(or :func:`rollback`), which records the move as one run in the ``<model>__alias_history`` experiment
(who, why, from, to, which DAG run) so the history is queryable in the MLflow UI and rollback can read it.

Moves are retry-safe. A move is planned once: the record (an *intent*, a RUNNING run tagged with an
idempotency key derived from the Airflow run and task, the model and the alias) is written with its
target before the alias moves, and completed (FINISHED) after. A retry with the same key finds the
record and converges on its target: it never plans again and never writes a second record. Moves of
one model are serialized by :func:`model_lock`, and each move re-checks its precondition under it.
:func:`doctor` checks the registry's invariants and repairs what it safely can.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from mlops.core.locks import LockTimeout, file_lock
from mlops.core.tracking import client, configure, ensure_experiment

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_SUFFIX = "__alias_history"
LOCK_SUFFIX = "__alias_lock"
TAG = "alias_change."
KEY_TAG = f"{TAG}key"
STATE_TAG = f"{TAG}state"
INTENT, DONE, ABANDONED = "intent", "done", "abandoned"
LOCK_ENV = "MLOPS_REGISTRY_LOCK"  # "file" | "mlflow"; default: file on the embedded default, else mlflow
LOCK_WAIT_S = 120.0
LOCK_TTL_S = 300.0  # an MLflow-keyed lock older than this was left by a killed holder and may be broken
REQUIRED_GATES = ("drift", "quality", "fairness", "champion")
GATE_OK = ("passed", "skipped")
TRAINING_SET_URI_TAG = "lineage.training_set_uri"
TRAINING_SET_DIGEST_TAG = "lineage.training_set_sha256"
RUN_GRACE = timedelta(minutes=15)  # on top of training.timeout_minutes before a RUNNING run is orphaned


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


class AliasMoved(RuntimeError):
    """The alias left the version a planned move started from: the move is abandoned, nothing moves."""


def version_number(version: str | int) -> int:
    """Registry versions are integers: compare them as numbers ("9" < "10")."""
    return int(str(version))


def _same(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return version_number(a) == version_number(b)


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


# ---------------------------------------------------------------------------------------------- lock


def _lock_backend() -> str:
    from mlops.core.settings import get_settings

    chosen = os.environ.get(LOCK_ENV) or ("file" if get_settings().is_local else "mlflow")
    if chosen not in ("file", "mlflow"):
        raise ValueError(f"{LOCK_ENV} must be 'file' or 'mlflow', got {chosen!r}")
    return chosen


@contextlib.contextmanager
def model_lock(model: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Serialize every alias move of ``model`` (promote, rollback, circuit breaker, doctor repairs).

    On the embedded default: an exclusive ``flock`` on ``<state>/locks/registry.<model>.lock`` (one
    machine; also between threads, each opens its own descriptor). Elsewhere: a lock keyed in MLflow
    itself, the registered model ``<model>__alias_lock``, whose creation is atomic in the registry's
    database; see :func:`_mlflow_lock`.
    """
    lock = _file_lock if _lock_backend() == "file" else _mlflow_lock
    with lock(model, wait_s):
        yield


@contextlib.contextmanager
def _file_lock(model: str, wait_s: float) -> Iterator[None]:
    from mlops.core.settings import get_settings

    path = get_settings().state_dir / "locks" / f"registry.{model}.lock"
    with file_lock(path, wait_s=wait_s, what=f"alias lock of {model}"):
        yield


@contextlib.contextmanager
def _mlflow_lock(model: str, wait_s: float) -> Iterator[None]:
    """Creating a registered model is atomic (a unique name): creating ``<model>__alias_lock`` takes the
    lock, deleting it releases it. Works against an MLflow server whatever its database. A lock whose
    ``expires_at`` passed (its holder was killed) is broken; moves hold it for seconds, the TTL is minutes.
    """
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    name = f"{model}{LOCK_SUFFIX}"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    while True:
        expires = (datetime.now(UTC) + timedelta(seconds=LOCK_TTL_S)).isoformat()
        try:
            mlflow_client.create_registered_model(
                name,
                tags={"holder": token, "expires_at": expires},
                description=f"Lock of {model}'s alias moves (held while one moves; not a model).",
            )
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        with contextlib.suppress(MlflowException):  # released meanwhile: try again at once
            held = mlflow_client.get_registered_model(name).tags
            if datetime.fromisoformat(held.get("expires_at", "1970-01-01T00:00:00+00:00")) < datetime.now(UTC):
                log.warning("breaking the expired alias lock of %s (holder %s)", model, held.get("holder"))
                mlflow_client.delete_registered_model(name)
                continue
        if time.monotonic() > deadline:
            raise LockTimeout(f"alias lock of {model} (registered model {name}) held for over {wait_s:.0f} s")
        time.sleep(0.2)
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            if mlflow_client.get_registered_model(name).tags.get("holder") == token:
                mlflow_client.delete_registered_model(name)


# --------------------------------------------------------------------------------------------- moves


def idempotency_key(model: str, alias: str, *, dag_id: str, dag_run_id: str, task_id: str) -> str:
    """The same Airflow run and task moving the same alias of the same model: the same move."""
    raw = json.dumps([dag_id, dag_run_id, task_id, model, alias])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class _Record:
    run_id: str
    state: str
    change: AliasChange


def _change_from_tags(tags: dict[str, str]) -> AliasChange:
    data: dict[str, Any] = {f.name: tags.get(f"{TAG}{f.name}", "") for f in fields(AliasChange)}
    data["from_version"] = None if data["from_version"] in ("", "None") else data["from_version"]
    return AliasChange(**data)


def _history_experiment(model: str) -> str:
    return ensure_experiment(f"{model}{HISTORY_SUFFIX}")


def _find_record(model: str, key: str) -> _Record | None:
    runs = client().search_runs(
        [_history_experiment(model)],
        filter_string=f"tags.`{KEY_TAG}` = '{key}'",
        order_by=["attributes.start_time ASC"],
        max_results=10,
    )
    if not runs:
        return None
    run = runs[0]
    # The run's status is the truth (set last); the state tag only makes it readable in the UI.
    state = {"RUNNING": INTENT, "FINISHED": DONE}.get(run.info.status, ABANDONED)
    return _Record(run.info.run_id, state, _change_from_tags(run.data.tags))


def _open_intent(change: AliasChange, key: str) -> str:
    run = client().create_run(
        _history_experiment(change.model),
        run_name=f"{change.alias}: {change.from_version or '-'} -> {change.to_version}",
        tags={**{f"{TAG}{k}": str(v) for k, v in asdict(change).items()}, KEY_TAG: key, STATE_TAG: INTENT},
    )
    return str(run.info.run_id)


def _apply(change: AliasChange) -> None:
    """The move itself; both calls are idempotent, so a retry may repeat them."""
    mlflow_client = client()
    mlflow_client.set_model_version_tag(change.model, change.to_version, f"{change.alias}_since", change.at)
    mlflow_client.set_registered_model_alias(change.model, change.alias, change.to_version)


def _close(run_id: str, state: str) -> None:
    """End a record: FINISHED (done) or KILLED (abandoned); the status, set last, is what counts."""
    mlflow_client = client()
    mlflow_client.set_tag(run_id, STATE_TAG, state)
    mlflow_client.set_terminated(run_id, status="FINISHED" if state == DONE else "KILLED")


def _converge(record: _Record, current: str | None) -> AliasChange:
    """Finish the move a record planned: never plan again, never write a second record."""
    change = record.change
    if record.state == DONE:
        log.info("%s@%s: move %s already done (%s)", change.model, change.alias, record.run_id, change.to_version)
        return change
    if _same(current, change.to_version):
        _close(record.run_id, DONE)
        log.info("%s@%s: completed the record of the move to v%s", change.model, change.alias, change.to_version)
        return change
    if _same(current, change.from_version):  # nothing moved since it was planned: the plan still holds
        _apply(change)
        _close(record.run_id, DONE)
        log.info("%s@%s: %s -> %s (resumed)", change.model, change.alias, change.from_version, change.to_version)
        return change
    if record.state != ABANDONED:
        _close(record.run_id, ABANDONED)
    raise AliasMoved(
        f"{change.model}@{change.alias} is v{current}, not v{change.from_version} as when the move to "
        f"v{change.to_version} was planned (history run {record.run_id}): nothing moved; start a new run "
        "to decide again"
    )


def settle_open_intents(model: str, alias: str | None = None) -> list[tuple[AliasChange, str]]:
    """Close the records of moves whose attempt died (call under :func:`model_lock`: none is in flight).

    An open record whose alias shows its target is completed (the move happened); any other is marked
    abandoned (it did not). A later retry of that move still converges on it. Returns each settled
    change with the state it got.
    """
    settled = []
    for run in _history_runs(model, "RUNNING"):
        change = _change_from_tags(run.data.tags)
        if alias is not None and change.alias != alias:
            continue
        state = DONE if _same(get_alias_version(model, change.alias), change.to_version) else ABANDONED
        _close(run.info.run_id, state)
        log.warning("%s@%s: record of the move to v%s was left open: %s", model, change.alias, change.to_version, state)
        settled.append((change, state))
    return settled


def _move(
    model: str,
    alias: str,
    plan: Callable[[str | None], str | None],
    *,
    key: str | None,
    actor: str,
    reason: str,
    dag_id: str,
    dag_run_id: str,
) -> AliasChange | None:
    """Under the model's lock: converge on the record of ``key``, else plan once, record, move, complete.

    ``plan(current)`` returns the target (or None: the precondition failed, nothing moves); it runs
    only when no record of ``key`` exists, so a retry never recomputes a target.
    """
    key = key or uuid.uuid4().hex  # no Airflow identity: each call is its own move
    with model_lock(model):
        current = get_alias_version(model, alias)
        record = _find_record(model, key)
        if record is not None:
            return _converge(record, current)
        settle_open_intents(model, alias)  # a crashed move's record must count before this one plans
        target = plan(current)
        if target is None:
            return None
        change = AliasChange(
            model=model,
            alias=alias,
            from_version=current,
            to_version=str(target),
            actor=actor,
            reason=reason,
            dag_id=dag_id,
            dag_run_id=dag_run_id,
            at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        if _same(current, change.to_version):  # a rerun: nothing moves, nothing is recorded twice
            log.info("%s@%s already points at %s", model, alias, current)
            return change
        run_id = _open_intent(change, key)
        _apply(change)
        _close(run_id, DONE)
    log.info("%s@%s: %s -> %s (%s: %s)", model, alias, change.from_version, change.to_version, actor, reason)
    return change


def set_alias(
    model: str,
    alias: str,
    version: str,
    *,
    actor: str,
    reason: str,
    dag_id: str = "",
    dag_run_id: str = "",
    task_id: str = "",
    key: str | None = None,
    expect_current: str | None = None,
) -> AliasChange:
    """Move ``alias`` to ``version`` and record the change; the one path every alias move takes.

    Inside Airflow pass ``dag_id``, ``dag_run_id`` and ``task_id``: a retry of the task is then the
    same move (see :func:`idempotency_key`). With ``expect_current`` the move happens only while the
    alias points at that version (checked under the lock; a canary's promotion never undoes a rollback):
    otherwise :class:`AliasMoved` and nothing moves.
    """
    if key is None and dag_run_id:
        key = idempotency_key(model, alias, dag_id=dag_id, dag_run_id=dag_run_id, task_id=task_id)

    def plan(current: str | None) -> str:
        client().get_model_version(model, version)  # fails loudly on an unknown version
        if expect_current is not None and not _same(current, expect_current) and not _same(current, version):
            raise AliasMoved(
                f"{model}@{alias} is v{current}, not v{expect_current} as the move to v{version} expects: nothing moved"
            )
        return str(version)

    change = _move(model, alias, plan, key=key, actor=actor, reason=reason, dag_id=dag_id, dag_run_id=dag_run_id)
    assert change is not None  # this plan always names a target
    return change


def _history_runs(model: str, status: str | None = None) -> list[Any]:
    import mlflow

    configure()
    experiment = mlflow.get_experiment_by_name(f"{model}{HISTORY_SUFFIX}")
    if experiment is None:
        return []
    runs: list[Any] = client().search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.status = '{status}'" if status else "",
        order_by=["attributes.start_time ASC"],
        max_results=10_000,
    )
    return runs


def alias_history(model: str, alias: str | None = None) -> list[AliasChange]:
    """Completed alias changes, oldest first (open intents and abandoned moves are excluded)."""
    changes = [_change_from_tags(run.data.tags) for run in _history_runs(model, "FINISHED")]
    return [c for c in changes if alias is None or c.alias == alias]


def describe(model: str) -> dict[str, Any]:
    """Champion/challenger and their key tags: what the demo and the UI summary print."""
    out: dict[str, Any] = {"model": model}
    for alias in (CHAMPION, CHALLENGER):
        version = get_alias_version(model, alias)
        out[alias] = version
    out["history"] = [asdict(c) for c in alias_history(model)]
    return out


# ------------------------------------------------------------------------------------------ rollback


class RollbackError(RuntimeError):
    """There is nothing to roll back to (or the target is the current champion)."""


ROLLBACK_PREFIX = "rollback: "


def previous_champion(model: str, current: str | None = None) -> str | None:
    """The champion before ``current`` (default: today's), skipping versions that were themselves rolled back."""
    current = current if current is not None else get_alias_version(model, CHAMPION)
    history = alias_history(model, CHAMPION)
    rolled_back = {
        version_number(c.from_version) for c in history if c.reason.startswith(ROLLBACK_PREFIX) and c.from_version
    }
    index = len(history)
    while index > 0 and _same(history[index - 1].to_version, current):  # the current reign
        index -= 1
    for change in reversed(history[:index]):
        if not _same(change.to_version, current) and version_number(change.to_version) not in rolled_back:
            return change.to_version
    return None


def _verify_target(model: str, version: str) -> None:
    """Refuse (ModelIntegrityError) to make champion a version that scoring would refuse to load."""
    from mlops.model.scoring import verify_version

    verify_version(model, version)


def rollback(
    model: str,
    target_version: str | None = None,
    *,
    actor: str,
    reason: str,
    dag_id: str = "",
    dag_run_id: str = "",
    task_id: str = "",
    only_if_champion: str | None = None,
) -> AliasChange | None:
    """Point ``champion`` back at the previous champion (or ``target_version``) in one step.

    The UI's rollback DAG and the circuit breaker both call this; the change is recorded in the alias
    history with who and why, and the next scoring run loads the new champion with no redeploy. The
    target is computed once, under the model's lock, and stored in the move's record: a retry moves to
    that target, never to a newly computed one. The breaker passes ``only_if_champion`` (the version that
    breached) so that it never rolls back a version that was already replaced; it then returns None.
    """
    key = (
        idempotency_key(model, CHAMPION, dag_id=dag_id, dag_run_id=dag_run_id, task_id=task_id) if dag_run_id else None
    )

    def plan(current: str | None) -> str | None:
        if only_if_champion is not None and not _same(current, only_if_champion):
            log.info("not rolling back %s: v%s breached, but the champion is v%s", model, only_if_champion, current)
            return None
        target = target_version or previous_champion(model, current)
        if target is None:
            raise RollbackError(f"cannot roll back {model}: no earlier champion in the alias history")
        if _same(target, current):
            raise RollbackError(f"cannot roll back {model}: version {target} is already the champion")
        client().get_model_version(model, str(target))  # fails loudly on an unknown version
        _verify_target(model, str(target))  # never make a version champion whose signature does not verify
        return str(target)

    try:
        return _move(
            model,
            CHAMPION,
            plan,
            key=key,
            actor=actor,
            reason=f"{ROLLBACK_PREFIX}{reason}",
            dag_id=dag_id,
            dag_run_id=dag_run_id,
        )
    except AliasMoved as exc:
        if only_if_champion is not None:  # the breaker: the version it judged is gone, nothing to undo
            log.info("%s", exc)
            return None
        raise RollbackError(str(exc)) from None


# -------------------------------------------------------------------------------------------- doctor


@dataclass(frozen=True)
class Finding:
    """One broken invariant: what is wrong, and what was done (``repaired``) or what a person must do."""

    check: str  # history | gates | runs | training_set
    subject: str
    problem: str
    action: str
    repaired: bool = False
    repairable: bool = False

    def line(self) -> str:
        verb = "repaired" if self.repaired else "repairable with --repair" if self.repairable else "to do"
        return f"[{self.check}] {self.subject}: {self.problem}; {verb}: {self.action}"


@dataclass
class DoctorReport:
    model: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def broken(self) -> list[Finding]:
        """What is still wrong after this pass (everything, without ``repair``)."""
        return [f for f in self.findings if not f.repaired]

    def summary(self) -> str:
        repaired = len(self.findings) - len(self.broken)
        if not self.broken:
            return f"registry of {self.model} is consistent ({repaired} repaired)"
        return f"registry of {self.model}: {len(self.broken)} broken invariant(s): " + " | ".join(
            f.line() for f in self.broken
        )


class DoctorFailed(RuntimeError):
    """An invariant is broken and cannot be repaired safely: a person must act (the message says how)."""


def doctor(model: str, *, repair: bool = False, now: datetime | None = None) -> DoctorReport:
    """Check the registry invariants of ``model``; with ``repair``, fix what can be fixed safely.

    1. every alias move has exactly one completed history record (an open intent is completed when the
       alias shows its target, else marked abandoned; a move made outside the platform is recorded);
    2. the champion is a version whose gates passed (``gate.<name>`` tags);
    3. no training run of the model stays RUNNING past its task (ended FAILED after
       ``training.timeout_minutes`` plus a grace period: a run still inside it may be training);
    4. every registered version's training set exists and matches its recorded digest (write-once).
    """
    report = DoctorReport(model)
    with model_lock(model):  # no move is in flight while the history is read: an open intent is orphaned
        _check_history(model, report, repair)
    _check_champion_gates(model, report)
    _check_runs(model, report, repair, now or datetime.now(UTC))
    _check_training_sets(model, report, repair)
    for finding in report.findings:
        (log.warning if not finding.repaired else log.info)("%s doctor: %s", model, finding.line())
    return report


def _check_history(model: str, report: DoctorReport, repair: bool) -> None:
    runs = _history_runs(model)
    keys: dict[str, list[str]] = {}
    for run in runs:
        tags = run.data.tags
        change = _change_from_tags(tags)
        if run.info.status == "RUNNING":
            current = get_alias_version(model, change.alias)
            complete = _same(current, change.to_version)
            problem = (
                f"move to v{change.to_version} (history run {run.info.run_id}) was never completed; "
                f"{change.alias} is v{current}"
            )
            action = "record completed" if complete else "record marked abandoned (the alias never moved)"
            report.findings.append(Finding("history", f"{model}@{change.alias}", problem, action, repair, True))
        elif run.info.status == "FINISHED" and tags.get(KEY_TAG):
            keys.setdefault(tags[KEY_TAG], []).append(run.info.run_id)
    if repair:
        settle_open_intents(model)
    for key, run_ids in keys.items():
        if len(run_ids) > 1:
            report.findings.append(
                Finding(
                    "history",
                    model,
                    f"one move (key {key}) has {len(run_ids)} completed records {run_ids}",
                    "check them in the MLflow UI and delete all but the first",
                )
            )
    if repair:  # the records completed above count
        done = alias_history(model)
    else:  # what a repair would leave: open records whose alias shows their target count as done
        done = [
            change
            for change, status in ((_change_from_tags(r.data.tags), r.info.status) for r in runs)
            if status == "FINISHED"
            or (status == "RUNNING" and _same(get_alias_version(model, change.alias), change.to_version))
        ]
    for alias in (CHAMPION, CHALLENGER):
        current = get_alias_version(model, alias)
        recorded = [c.to_version for c in done if c.alias == alias]
        last = recorded[-1] if recorded else None
        if current is None or _same(current, last):
            continue
        problem = f"{alias} is v{current} but its last recorded move is to v{last}: moved outside the platform"
        if repair:
            change = AliasChange(
                model=model,
                alias=alias,
                from_version=last,
                to_version=current,
                actor="registry-doctor",
                reason="unrecorded move found by the registry doctor",
                dag_id="",
                dag_run_id="",
                at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            _close(_open_intent(change, f"observed-{uuid.uuid4().hex}"), DONE)
        report.findings.append(
            Finding("history", f"{model}@{alias}", problem, "the move is recorded now", repair, True)
        )


def gate_verdicts(model: str, version: str) -> dict[str, str]:
    """``gate.<name>`` verdicts of a version: its own tags (copied at registration), else its training run's."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    model_version = mlflow_client.get_model_version(model, version)
    tags = dict(model_version.tags)
    verdicts = {k.removeprefix("gate."): v for k, v in tags.items() if k.startswith("gate.")}
    run_id = tags.get("lineage.training_run_id") or model_version.run_id
    if not verdicts and run_id:
        with contextlib.suppress(MlflowException):
            run_tags = mlflow_client.get_run(run_id).data.tags
            verdicts = {k.removeprefix("gate."): v for k, v in run_tags.items() if k.startswith("gate.")}
    return verdicts


def _check_champion_gates(model: str, report: DoctorReport) -> None:
    champion = get_alias_version(model, CHAMPION)
    if champion is None:
        return
    verdicts = gate_verdicts(model, champion)
    bad = [f"gate.{g}={verdicts.get(g, 'missing')}" for g in REQUIRED_GATES if verdicts.get(g) not in GATE_OK]
    if bad:
        report.findings.append(
            Finding(
                "gates",
                f"{model}@{CHAMPION} v{champion}",
                f"served without passing its gates ({', '.join(bad)})",
                f"roll back with {model}__rollback (target_version = a gated version) or retrain",
            )
        )


def _timeout_minutes(model: str) -> int:
    from mlops.core.config import TrainingConfig, get_config

    try:
        return int(get_config(model).config.training.timeout_minutes)
    except Exception:  # no config for a registered model (removed): the default still bounds a training
        return int(TrainingConfig.model_fields["timeout_minutes"].default)


def _check_runs(model: str, report: DoctorReport, repair: bool, now: datetime) -> None:
    import mlflow

    configure()
    experiment = mlflow.get_experiment_by_name(model)
    if experiment is None:
        return
    limit = timedelta(minutes=_timeout_minutes(model)) + RUN_GRACE
    mlflow_client = client()
    running = mlflow_client.search_runs(
        [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    for run in running:
        started = datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC)
        age = now - started
        name = f"run {run.info.run_id} ({run.info.run_name})"
        if age <= limit:
            report.notes.append(f"{name} is RUNNING for {age}, within the training timeout: may still train")
            continue
        if repair:
            mlflow_client.set_tag(run.info.run_id, "mlops.ended_by", "registry doctor: RUNNING past its task")
            mlflow_client.set_terminated(run.info.run_id, status="FAILED")
        report.findings.append(
            Finding(
                "runs",
                f"{model} {name}",
                f"RUNNING for {age}, longer than the training timeout plus grace ({limit}): its task is gone",
                "ended FAILED",
                repair,
                True,
            )
        )


def file_sha256(uri: str) -> str | None:
    """sha256 of the object at ``uri``, streamed when local; None when it does not exist."""
    from mlops.core.storage import open_store

    parent, _, name = uri.rstrip("/").rpartition("/")
    store = open_store(parent)
    if not store.exists(name):
        return None
    digest = hashlib.sha256()
    local = store.local_path(name)
    if local is not None:
        with open(local, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    else:
        digest.update(store.get(name))
    return digest.hexdigest()


def _check_training_sets(model: str, report: DoctorReport, repair: bool) -> None:
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    try:
        versions = mlflow_client.search_model_versions(f"name='{model}'")
    except MlflowException:
        return
    for model_version in sorted(versions, key=lambda v: version_number(v.version)):
        version, tags = str(model_version.version), dict(model_version.tags)
        subject = f"{model} v{version}"
        uri = tags.get(TRAINING_SET_URI_TAG)
        if not uri and model_version.run_id:
            with contextlib.suppress(MlflowException):
                uri = mlflow_client.get_run(model_version.run_id).data.params.get("training_set")
        if not uri:
            report.findings.append(Finding("training_set", subject, "no training set recorded", "retrain it"))
            continue
        actual = file_sha256(uri)
        recorded = tags.get(TRAINING_SET_DIGEST_TAG)
        if actual is None:
            report.findings.append(
                Finding("training_set", subject, f"training set {uri} is missing", "restore it, or retire the version")
            )
        elif recorded is None:
            if repair:
                mlflow_client.set_model_version_tag(model, version, TRAINING_SET_DIGEST_TAG, actual)
            report.findings.append(
                Finding(
                    "training_set",
                    subject,
                    f"no recorded digest of {uri}",
                    f"its digest today ({actual[:12]}) is recorded from now on",
                    repair,
                    True,
                )
            )
        elif actual != recorded:
            report.findings.append(
                Finding(
                    "training_set",
                    subject,
                    f"training set {uri} was overwritten after registration (sha256 {actual[:12]}, "
                    f"recorded {recorded[:12]})",
                    "its monitoring reference is not what it was trained on: restore the set or retrain",
                )
            )


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mlops.model.registry", description="Registry state and checks.")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("describe", help="champion, challenger and the alias history as JSON")
    show.add_argument("model")
    check = commands.add_parser("doctor", help="check the registry invariants (exit 1 if any is broken)")
    check.add_argument("--model", action="append", help="a model (repeatable; default: every configured model)")
    check.add_argument("--repair", action="store_true", help="repair what can be repaired safely")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "describe":
        print(json.dumps(describe(args.model), indent=2))
        return 0
    models = args.model
    if not models:
        from mlops.core.config import discover
        from mlops.core.settings import get_settings

        models = [loaded.config.name for loaded in discover(get_settings().models_dir)[0]]
    broken = 0
    for model in models:
        report = doctor(model, repair=args.repair)
        for finding in report.findings:
            print(finding.line())
        print(report.summary())
        broken += len(report.broken)
    return 1 if broken else 0


if __name__ == "__main__":
    import sys

    sys.exit(_main())
