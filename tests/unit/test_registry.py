"""Registry safety on a real (SQLite) MLflow store: retry-safe moves, serialized moves, numeric versions, doctor.

Faults are injected where they occur: a wrapped MLflow client raises after the alias moved but before
the history record is completed, or before the alias moves.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlops.core.errors import NothingToDo
from mlops.core.tracking import client, ensure_experiment
from mlops.model import registry
from mlops.quality import monitoring
from mlops.quality.monitoring import MonitorResult

MODEL = "credit_risk"
KEYS = {"dag_id": f"{MODEL}__training", "dag_run_id": "manual__2026-03-01", "task_id": "promote"}


@pytest.fixture(autouse=True)
def verified_targets(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The versions here are registry entries without model files: record the signature check a rollback
    makes of its target instead of running it (tests/unit/test_scoring.py runs it on real signed models)."""
    checked: list[tuple[str, str]] = []
    monkeypatch.setattr(registry, "_verify_target", lambda model, version: checked.append((model, version)))
    return checked


class Fault(ConnectionError):
    """What a dropped connection to MLflow looks like to the caller."""


class FaultyClient:
    """The real MlflowClient, except that ``method`` raises ``times`` times when ``when`` says so."""

    def __init__(
        self, real: Any, method: str, when: Callable[..., bool] = lambda *a, **k: True, times: int = 1
    ) -> None:
        self.real, self.method, self.when, self.remaining = real, method, when, times
        self.delay = 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.real, name)
        if name != self.method:
            return attr

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.remaining and self.when(*args, **kwargs):
                self.remaining -= 1
                raise Fault(f"MLflow went away during {name}")
            time.sleep(self.delay)
            return attr(*args, **kwargs)

        return wrapped


def _inject(monkeypatch: pytest.MonkeyPatch, faulty: FaultyClient) -> None:
    monkeypatch.setattr(registry, "client", lambda settings=None: faulty)


def _restore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "client", client)


def _versions(state: Path, n: int, *, gates: bool = True) -> list[str]:
    """``n`` registered versions, each with a finished training run, gate verdicts and a training set."""
    mlflow_client = client()
    experiment = ensure_experiment(MODEL)
    with contextlib.suppress(Exception):  # registered by an earlier call
        mlflow_client.create_registered_model(MODEL)
    versions = []
    for i in range(n):
        tags = {f"gate.{g}": "passed" for g in registry.REQUIRED_GATES} if gates else {}
        run = mlflow_client.create_run(experiment, run_name=f"training {i}", tags=tags)
        mlflow_client.set_terminated(run.info.run_id)
        path = state / "lake" / "runs" / MODEL / f"r{i}" / "training_set.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"training rows {i}".encode())
        created = mlflow_client.create_model_version(
            MODEL,
            source=str(state / f"model{i}"),
            run_id=run.info.run_id,
            tags={
                registry.TRAINING_SET_URI_TAG: str(path),
                registry.TRAINING_SET_DIGEST_TAG: hashlib.sha256(path.read_bytes()).hexdigest(),
                "lineage.training_run_id": run.info.run_id,
            },
        )
        versions.append(str(created.version))
    return versions


def _records(key: str) -> list[Any]:
    experiment = ensure_experiment(f"{MODEL}{registry.HISTORY_SUFFIX}")
    runs: list[Any] = client().search_runs([experiment], filter_string=f"tags.`{registry.KEY_TAG}` = '{key}'")
    return runs


def _champion() -> str | None:
    return registry.get_alias_version(MODEL, registry.CHAMPION)


def _promote(version: str, **keys: str) -> registry.AliasChange:
    return registry.set_alias(MODEL, registry.CHAMPION, version, actor="t", reason="promote", **{**KEYS, **keys})


# ------------------------------------------------------------------------------------------- numbers


def test_versions_compare_as_numbers() -> None:
    assert registry.version_number("10") > registry.version_number("9")
    results = [_result("10", breach=True), _result("9", breach=True), _result("11", breach=False)]
    assert monitoring.breached_versions(results) == ["9", "10"]  # as strings "10" sorts first
    assert registry._same("010", "10") and not registry._same("9", "10") and registry._same(None, None)


def _result(version: str, *, breach: bool) -> MonitorResult:
    return MonitorResult(
        model=MODEL,
        interval="2026-03-09",
        champion_version=version,
        drift_detected=False,
        drifted_features=[],
        drift_scores={},
        drift_share=0.0,
        prediction_ks=0.0,
        quality=None,
        guardrail_breaches=["roc_auc 0.5 < 0.6"] if breach else [],
        reports={},
    )


def test_breaker_judges_the_newest_breached_version_by_number(state_dir: Path) -> None:
    versions = _versions(state_dir, 10)
    _promote(versions[8], dag_run_id="r9")
    _promote(versions[9], dag_run_id="r10")
    assert _champion() == "10"
    judged = monitoring.breached_versions([_result("9", breach=True), _result("10", breach=True)])
    out = monitoring.circuit_breaker(MODEL, ["2026-03-09"], ["roc_auc 0.5 < 0.6"], judged, dag_run_id="m1")
    assert out == {"rolled_back_from": "10", "champion": "9"}  # judged "9" (string max) would do nothing
    with pytest.raises(NothingToDo, match="within guardrails"):
        monitoring.circuit_breaker(MODEL, ["2026-03-09"], [], [], dag_run_id="m2")
    # v10 was replaced: a later breaker run on v10's scores undoes nothing.
    with pytest.raises(NothingToDo, match="v10 breached but is no longer the champion"):
        monitoring.circuit_breaker(MODEL, ["2026-03-10"], ["roc_auc 0.5 < 0.6"], ["10"], dag_run_id="m3")
    assert _champion() == "9"


# ------------------------------------------------------------------------------------- retry safety


def test_retried_promote_after_alias_moved_writes_one_record(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v2 = _versions(state_dir, 2)
    _promote(v1, dag_run_id="first")
    faulty = FaultyClient(client(), "set_terminated", when=lambda run_id, status=None, **k: status == "FINISHED")
    _inject(monkeypatch, faulty)
    with pytest.raises(Fault):
        _promote(v2)
    assert _champion() == v2  # the alias moved; its record is still open
    key = registry.idempotency_key(
        MODEL, registry.CHAMPION, **{k: KEYS[k] for k in ("dag_id", "dag_run_id", "task_id")}
    )
    assert [r.info.status for r in _records(key)] == ["RUNNING"]
    assert [c.to_version for c in registry.alias_history(MODEL, registry.CHAMPION)] == [v1]
    change = _promote(v2)  # the task's retry
    assert (change.from_version, change.to_version) == (v1, v2)
    assert [r.info.status for r in _records(key)] == ["FINISHED"]
    assert [c.to_version for c in registry.alias_history(MODEL, registry.CHAMPION)] == [v1, v2]
    _promote(v2)  # a third try: still one record
    assert len(_records(key)) == 1 and len(registry.alias_history(MODEL)) == 2


def test_retried_rollback_keeps_its_first_target(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, verified_targets: list[tuple[str, str]]
) -> None:
    v1, v2, v3 = _versions(state_dir, 3)
    for i, version in enumerate((v1, v2, v3)):
        _promote(version, dag_run_id=f"p{i}")
    keys = {"dag_id": f"{MODEL}__rollback", "dag_run_id": "manual__rb", "task_id": "rollback"}
    faulty = FaultyClient(client(), "set_terminated", when=lambda run_id, status=None, **k: status == "FINISHED")
    _inject(monkeypatch, faulty)
    with pytest.raises(Fault):
        registry.rollback(MODEL, actor="alice", reason="bad release", **keys)
    assert _champion() == v2
    # Planned again, the previous champion of v2 would be v3: the retry must not move back to it.
    assert registry.previous_champion(MODEL) == v3
    change = registry.rollback(MODEL, actor="alice", reason="bad release", **keys)
    assert change is not None and (change.from_version, change.to_version) == (v3, v2)
    assert _champion() == v2
    history = registry.alias_history(MODEL, registry.CHAMPION)
    assert [(c.from_version, c.to_version) for c in history][-1] == (v3, v2) and len(history) == 4
    assert (MODEL, v2) in verified_targets  # the target's signature was checked before champion moved


def test_retry_after_a_fault_before_the_alias_moved_completes_the_move(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = _versions(state_dir, 2)
    _promote(v1, dag_run_id="first")
    _inject(monkeypatch, FaultyClient(client(), "set_registered_model_alias"))
    with pytest.raises(Fault):
        _promote(v2)
    assert _champion() == v1
    change = _promote(v2)
    assert change.to_version == v2 and _champion() == v2
    assert [c.to_version for c in registry.alias_history(MODEL, registry.CHAMPION)] == [v1, v2]


def test_a_retry_after_the_alias_moved_elsewhere_moves_nothing(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2, v3 = _versions(state_dir, 3)
    _promote(v1, dag_run_id="first")
    _promote(v2, dag_run_id="second")
    faulty = FaultyClient(client(), "set_registered_model_alias")
    _inject(monkeypatch, faulty)
    breaker = {"dag_id": f"{MODEL}__monitoring", "dag_run_id": "m", "task_id": "circuit_breaker"}
    with pytest.raises(Fault):  # the breaker planned v2 -> v1, then lost MLflow
        registry.rollback(MODEL, actor="circuit-breaker", reason="breach", only_if_champion=v2, **breaker)
    _promote(v3, dag_run_id="third")  # a promotion settles the breaker's open record first
    assert _champion() == v3
    assert registry.rollback(MODEL, actor="circuit-breaker", reason="breach", only_if_champion=v2, **breaker) is None
    assert _champion() == v3  # v3 was never judged: not rolled back
    (record,) = _records(registry.idempotency_key(MODEL, registry.CHAMPION, **breaker))
    assert record.info.status == "KILLED" and record.data.tags[registry.STATE_TAG] == registry.ABANDONED
    stale = {"dag_id": f"{MODEL}__rollback", "dag_run_id": "manual__x", "task_id": "rollback"}
    _inject(monkeypatch, FaultyClient(client(), "set_registered_model_alias"))
    with pytest.raises(Fault):  # the UI's rollback planned v3 -> v2, then lost MLflow
        registry.rollback(MODEL, actor="bob", reason="x", **stale)
    _restore(monkeypatch)
    _promote(v1, dag_run_id="fourth")
    with pytest.raises(registry.RollbackError, match="nothing moved; start a new run"):
        registry.rollback(MODEL, actor="bob", reason="x", **stale)
    assert _champion() == v1


# ------------------------------------------------------------------------------------ serialization


@pytest.mark.parametrize("backend", ["file", "mlflow"])
def test_promote_and_breaker_at_once_never_both_move_from_the_same_champion(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    monkeypatch.setenv(registry.LOCK_ENV, backend)
    v1, v2, v3 = _versions(state_dir, 3)
    _promote(v1, dag_run_id="first")
    _promote(v2, dag_run_id="second")
    slow = FaultyClient(client(), "set_registered_model_alias", times=0)
    slow.delay = 0.5  # widen the window between the check and the move
    _inject(monkeypatch, slow)
    errors: list[BaseException] = []

    def promote() -> None:
        try:
            _promote(v3, dag_run_id="race")
        except BaseException as exc:  # reported below
            errors.append(exc)

    def breaker() -> None:
        try:
            registry.rollback(
                MODEL, actor="circuit-breaker", reason="breach", only_if_champion=v2, dag_run_id="m", task_id="cb"
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=promote), threading.Thread(target=breaker)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    history = registry.alias_history(MODEL, registry.CHAMPION)
    # Each recorded move starts where the one before it ended: no two moves judged the same champion.
    assert all(a.to_version == b.from_version for a, b in itertools.pairwise(history)), history
    assert _champion() == history[-1].to_version == v3
    assert not client().search_registered_models(f"name = '{MODEL}{registry.LOCK_SUFFIX}'")  # released


def test_mlflow_lock_waits_for_the_holder_and_breaks_an_expired_one(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(registry.LOCK_ENV, "mlflow")
    with (
        registry.model_lock(MODEL),
        pytest.raises(registry.LockTimeout, match="held for over"),
        registry.model_lock(MODEL, wait_s=0.5),
    ):
        pass
    expired = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    client().create_registered_model(f"{MODEL}{registry.LOCK_SUFFIX}", tags={"holder": "killed", "expires_at": expired})
    with registry.model_lock(MODEL, wait_s=5):  # the killed holder's lock is broken
        pass


def test_file_lock_serializes_threads(state_dir: Path) -> None:
    inside: list[int] = []
    overlaps: list[int] = []

    def hold() -> None:
        with registry.model_lock(MODEL):
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(1)
            time.sleep(0.2)
            inside.pop()

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []
    with registry.model_lock(MODEL), pytest.raises(registry.LockTimeout), registry.model_lock(MODEL, wait_s=0.3):
        pass


# ------------------------------------------------------------------------------------------- doctor


def test_doctor_settles_open_records(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v2, v3 = _versions(state_dir, 3)
    _promote(v1, dag_run_id="first")
    finished = FaultyClient(client(), "set_terminated", when=lambda run_id, status=None, **k: status == "FINISHED")
    _inject(monkeypatch, finished)
    with pytest.raises(Fault):
        _promote(v2, dag_run_id="moved")  # moved, record open
    _inject(monkeypatch, FaultyClient(client(), "set_registered_model_alias"))
    with pytest.raises(Fault):
        registry.set_alias(MODEL, registry.CHALLENGER, v3, actor="t", reason="r", **{**KEYS, "task_id": "register"})
    _restore(monkeypatch)
    checked = registry.doctor(MODEL)
    assert sorted(f.check for f in checked.broken) == ["history", "history"]
    assert registry.doctor(MODEL).broken  # without repair nothing changes
    report = registry.doctor(MODEL, repair=True)
    assert report.broken == [] and len(report.findings) == 2
    actions = sorted(f.action for f in report.findings)
    assert actions == ["record completed", "record marked abandoned (the alias never moved)"]
    assert [c.to_version for c in registry.alias_history(MODEL)] == [v1, v2]
    assert registry.doctor(MODEL).findings == []


def test_doctor_records_a_move_made_outside_the_platform(state_dir: Path) -> None:
    v1, v2 = _versions(state_dir, 2)
    _promote(v1, dag_run_id="first")
    client().set_registered_model_alias(MODEL, registry.CHAMPION, v2)  # by hand, in the MLflow UI
    assert "moved outside the platform" in registry.doctor(MODEL).summary()
    assert registry.doctor(MODEL, repair=True).broken == []
    last = registry.alias_history(MODEL, registry.CHAMPION)[-1]
    assert (last.from_version, last.to_version, last.actor) == (v1, v2, "registry-doctor")
    assert registry.doctor(MODEL).findings == []


def test_doctor_fails_loudly_on_an_ungated_champion(state_dir: Path) -> None:
    (gated,) = _versions(state_dir, 1)
    (ungated,) = _versions(state_dir, 1, gates=False)
    _promote(gated, dag_run_id="first")
    assert registry.doctor(MODEL, repair=True).findings == []
    _promote(ungated, dag_run_id="second")
    report = registry.doctor(MODEL, repair=True)
    (finding,) = report.broken
    assert finding.check == "gates" and "gate.quality=missing" in finding.problem
    assert f"{MODEL}__rollback" in report.summary()
    client().set_model_version_tag(MODEL, ungated, "gate.quality", "failed")
    for gate in ("drift", "fairness", "champion"):
        client().set_model_version_tag(MODEL, ungated, f"gate.{gate}", "passed")
    assert "gate.quality=failed" in registry.doctor(MODEL).summary()
    client().set_model_version_tag(MODEL, ungated, "gate.quality", "passed")
    assert registry.doctor(MODEL).broken == []


def test_doctor_ends_runs_past_their_task_and_spares_those_still_training(state_dir: Path) -> None:
    mlflow_client = client()
    experiment = ensure_experiment(MODEL)
    orphan = mlflow_client.create_run(experiment, run_name="killed training")
    training = mlflow_client.create_run(experiment, run_name="still training")
    later = datetime.now(UTC) + timedelta(minutes=240 + 10)  # past the timeout, inside the grace
    assert registry.doctor(MODEL, repair=True, now=later).findings == []
    much_later = datetime.now(UTC) + timedelta(minutes=240 + 16)
    report = registry.doctor(MODEL, now=much_later)
    assert {f.subject.split()[2] for f in report.broken} == {orphan.info.run_id, training.info.run_id}
    mlflow_client.set_terminated(training.info.run_id)  # this one finished meanwhile
    report = registry.doctor(MODEL, repair=True, now=much_later)
    assert report.broken == [] and len(report.findings) == 1
    assert mlflow_client.get_run(orphan.info.run_id).info.status == "FAILED"
    assert mlflow_client.get_run(training.info.run_id).info.status == "FINISHED"


def test_doctor_checks_training_sets_are_write_once(state_dir: Path) -> None:
    v1, v2, v3 = _versions(state_dir, 3)
    assert registry.doctor(MODEL).findings == []
    tags = registry.version_tags(MODEL, v1)
    Path(tags[registry.TRAINING_SET_URI_TAG]).write_bytes(b"rebuilt by a cleared task")
    Path(registry.version_tags(MODEL, v2)[registry.TRAINING_SET_URI_TAG]).unlink()
    client().delete_model_version_tag(MODEL, v3, registry.TRAINING_SET_DIGEST_TAG)
    report = registry.doctor(MODEL, repair=True)
    problems = {f.subject: (f.problem, f.repaired) for f in report.findings}
    assert "overwritten after registration" in problems[f"{MODEL} v{v1}"][0]
    assert "is missing" in problems[f"{MODEL} v{v2}"][0]
    assert problems[f"{MODEL} v{v3}"] == (problems[f"{MODEL} v{v3}"][0], True)  # digest recorded now
    assert {f.subject for f in report.broken} == {f"{MODEL} v{v1}", f"{MODEL} v{v2}"}
    assert (
        registry.version_tags(MODEL, v3)[registry.TRAINING_SET_DIGEST_TAG]
        == hashlib.sha256(b"training rows 2").hexdigest()
    )


def test_doctor_cli_exit_codes(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (v1,) = _versions(state_dir, 1)
    client().set_registered_model_alias(MODEL, registry.CHAMPION, v1)
    assert registry._main(["doctor", "--model", MODEL]) == 1
    assert "moved outside the platform" in capsys.readouterr().out
    assert registry._main(["doctor", "--model", MODEL, "--repair"]) == 0
    assert registry._main(["doctor", "--model", MODEL]) == 0
    assert "is consistent" in capsys.readouterr().out
