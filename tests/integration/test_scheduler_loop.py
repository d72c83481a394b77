"""The loop through Airflow's real scheduler (scheduler, dag-processor, triggerer, api-server on SQLite).

No drift -> no retrain; a burst of drifted batches -> drift Asset events -> exactly one retrain, whose
version starts a canary rollout at its first step while the champion stays; clean batches then take the
canary through every step (scoring serves the split, the rollout DAG judges each step) to champion. Cron retraining
is switched off in the configs used here, so every training run is caused by an event (with
catchup=False, unpausing a cron DAG runs its latest past tick at once).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops.core.settings import get_settings
from mlops.model import registry, rollout
from mlops.orchestration.executor import preload_modules
from mlops_dev.datagen import write_batches
from mlops_dev.services import AirflowServices, RunInfo, asset_events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2700)]  # the longest tests: the whole loop

MODEL = "credit_risk"
START = date(2026, 3, 1)
DAYS = 6
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def event_driven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    for path in (REPO / "include" / "models").glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        data["training"]["schedule"] = None
        (models / path.name).write_text(yaml.safe_dump(data))
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    return models


@pytest.fixture
def own_airflow_db(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This test's own Airflow metadata DB (the scheduler must see exactly this test's runs and events)."""
    from airflow import settings

    home = state_dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home / 'airflow.db'}")
    airflow_cli = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow_cli, "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    settings.configure_vars()
    settings.reconfigure_orm()
    yield home
    monkeypatch.undo()
    settings.configure_vars()
    settings.reconfigure_orm()


def _first_champion(state_dir: Path) -> None:
    """Six validated days and a first champion, made with dag.test on this test's own DB."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import timezone

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    write_batches(MODEL, state_dir / "landing" / MODEL, START, DAYS, rows_per_batch=300)
    for offset in range(DAYS):
        day = START + timedelta(days=offset + 1)
        assert (
            bag.dags[f"{MODEL}__data"].test(logical_date=timezone.datetime(day.year, day.month, day.day)).state
            == "success"
        )
    conf = {"window_end": str(START + timedelta(days=DAYS - 1)), "window_days": DAYS}
    assert bag.dags[f"{MODEL}__training"].test(run_conf=conf).state == "success"


def _serve(state_dir: Path) -> Iterator[AirflowServices]:
    services = AirflowServices(get_settings(), state_dir / "services-logs")
    services.start()
    try:
        yield services
    finally:
        services.stop()
    assert all(p.poll() is not None for p in services.procs.values())


@pytest.fixture
def airflow(event_driven: Path, own_airflow_db: Path, state_dir: Path) -> Iterator[AirflowServices]:
    """A first champion made with dag.test, then the real Airflow processes on the same state and DB."""
    _first_champion(state_dir)
    yield from _serve(state_dir)


def _trained(services: AirflowServices) -> list[str]:
    """Training runs that got past the guard rails (plan_training succeeded)."""
    runs = services.runs(f"{MODEL}__training")
    return [
        r.run_id for r in runs if services.task_states(f"{MODEL}__training", r.run_id).get("plan_training") == "success"
    ]


def test_no_drift_no_retrain_then_a_burst_retrains_once(airflow: AirflowServices, state_dir: Path) -> None:
    champion = registry.get_alias_version(MODEL, registry.CHAMPION)
    before = len(_trained(airflow))  # the dag.test run that made the first champion

    # The queued features events of the in-distribution batches: scored and monitored, no drift.
    monitored = airflow.wait(
        "the backlog to be monitored",
        lambda: [r for r in airflow.runs(f"{MODEL}__monitoring") if r.state in ("success", "failed")],
        600,
    )
    assert monitored[-1].state == "success"
    assert asset_events(f"{MODEL}.drift") == []
    time.sleep(10)  # give the scheduler every chance to (wrongly) start a retrain
    assert len(_trained(airflow)) == before
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == champion

    # A burst: three drifted batches land and are triggered back to back.
    first = START + timedelta(days=DAYS)
    write_batches(MODEL, state_dir / "landing" / MODEL, first, 3, rows_per_batch=300, covariate_drift=0.4)
    for offset in range(3):
        day = first + timedelta(days=offset + 1)
        airflow.trigger(f"{MODEL}__data", logical_date=datetime(day.year, day.month, day.day, tzinfo=UTC))
    drifted = {str(first + timedelta(days=i)) for i in range(3)}

    def announced() -> set[str]:
        # Airflow may merge the burst's features or predictions events into fewer runs; a merged
        # monitoring run emits one drift event naming every drifted interval it saw.
        return {w for e in asset_events(f"{MODEL}.drift") for w in e["extra"].get("drifted_windows", [])}

    airflow.wait("drift events naming the three drifted batches", lambda: announced() >= drifted, 900)
    events = asset_events(f"{MODEL}.drift")
    # Queued features events of the champion's own training days can reach monitoring with the burst
    # (Airflow hands a run the events queued since the last one); drift on those days is never announced.
    assert events and announced() == drifted, announced()
    assert all(e["extra"]["window"] in drifted for e in events)
    # Every training run the events caused finishes (Airflow may merge events into one run: apache/airflow
    # issue 56749), and no new one appears for a while; exactly one of them retrains.
    snapshots: list[list[tuple[str, str]]] = []

    def settled() -> bool:
        runs = [(r.run_id, r.state) for r in airflow.runs(f"{MODEL}__training") if r.run_type == "asset_triggered"]
        finished = bool(runs) and all(state in ("success", "failed") for _, state in runs)
        unchanged = bool(snapshots) and snapshots[-1] == runs
        snapshots.append(runs)
        return finished and unchanged

    airflow.wait("the drift-triggered training runs to settle", settled, 900, poll=20)
    retrained = _trained(airflow)
    assert len(retrained) == before + 1, retrained
    # credit_risk rolls out as a canary: the retrained version serves the first step, champion stays.
    state = rollout.load_state(MODEL)
    assert state is not None and state.status == "running" and state.champion_version == champion
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == champion
    new_version = state.canary_version
    tags = registry.version_tags(MODEL, new_version)
    assert tags["lineage.dag_run_id"] == retrained[-1]
    window_end = tags["lineage.training_window"].split("..")[1]
    assert window_end in {str(first + timedelta(days=i)) for i in range(3)}  # ends at a drifted batch
    _ramp_to_champion(airflow, state_dir, first + timedelta(days=3), new_version, champion)


def _ramp_to_champion(airflow: AirflowServices, state_dir: Path, first: date, canary: str, champion: str) -> None:
    """Clean batches land one day at a time: scoring serves the split, its predictions event starts
    ``<model>__rollout`` through the scheduler, which judges the step (``hold`` while a step lacks
    evidence, then ``advance``); past the last step the canary becomes champion."""
    from mlops.core.config import get_config
    from mlops.model.scoring import VERSION_COLUMN

    steps = list(get_config(MODEL).config.promotion.canary.steps)
    day, decided = first, 0
    state = rollout.load_state(MODEL)
    assert state is not None
    while state.status == "running":
        assert day < first + timedelta(days=3 * len(steps)), state.events  # every step decided within 3 days
        share = state.share
        write_batches(MODEL, state_dir / "landing" / MODEL, day, 1, rows_per_batch=400)
        after = day + timedelta(days=1)
        airflow.trigger(f"{MODEL}__data", logical_date=datetime(after.year, after.month, after.day, tzinfo=UTC))
        seen = len(state.events)

        def judged(seen: int = seen) -> rollout.RolloutState | None:
            now = rollout.load_state(MODEL)
            return now if now is not None and len(now.events) > seen else None

        state = airflow.wait(f"the rollout's decision on {day} ({share:g}%)", judged, 600)
        decision = state.events[-1]
        assert decision.action in ("hold", "advance", "promote"), state.events  # a good canary is never aborted
        assert decision.report and Path(decision.report).exists(), decision
        folder = state_dir / "lake" / "predictions" / MODEL / f"date={day}"
        served = pd.concat([pd.read_parquet(folder / f"{arm}.parquet") for arm in ("champion", "canary")])
        assert len(served) == 400 and served[VERSION_COLUMN].notna().all()
        by_version = served[VERSION_COLUMN].astype(str).value_counts(normalize=True)
        assert set(by_version.index) == {canary, champion}, by_version  # both arms served, every row named
        assert abs(by_version[canary] * 100 - share) <= 10, (share, by_version)  # 400 entities: a loose band
        decided += decision.action != "hold"
        day += timedelta(days=1)
    assert state.status == "promoted" and decided == len(steps), state.events
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == canary
    assert {r.run_type for r in airflow.runs(f"{MODEL}__rollout")} == {"asset_triggered"}


@pytest.fixture
def airflow_retraining_on_labels(
    event_driven: Path, own_airflow_db: Path, state_dir: Path
) -> Iterator[AirflowServices]:
    """As ``airflow``, then: retrain on newly landed labels, behind a quality gate no model can pass."""
    _first_champion(state_dir)
    path = event_driven / f"{MODEL}.yaml"
    data = yaml.safe_load(path.read_text())
    data["retraining"]["on_new_labels"] = True
    data["gates"]["quality"]["min_metrics"]["roc_auc"] = 0.999
    path.write_text(yaml.safe_dump(data))
    yield from _serve(state_dir)


def test_landed_labels_retrain_and_a_failed_gate_keeps_the_champion(
    airflow_retraining_on_labels: AirflowServices, state_dir: Path
) -> None:
    airflow = airflow_retraining_on_labels
    champion = registry.get_alias_version(MODEL, registry.CHAMPION)
    landing = state_dir / "landing" / MODEL
    flag = landing / "_READY"
    before = {r.run_id for r in airflow.runs(f"{MODEL}__training")}

    def new_training_runs() -> list[RunInfo]:
        return [r for r in airflow.runs(f"{MODEL}__training") if r.run_id not in before]

    # A labelled batch lands and the producer raises the flag: the watcher in the triggerer fires.
    day = START + timedelta(days=DAYS)
    write_batches(MODEL, landing, day, 1, rows_per_batch=300)
    flag.touch()
    landed = airflow.wait(
        "the landing run",
        lambda: [r for r in airflow.runs(f"{MODEL}__landing") if r.state in ("success", "failed")],
        300,
    )
    assert [r.state for r in landed] == ["success"] and landed[0].run_type == "asset_triggered"
    assert not flag.exists() and (landing / f"{day}.csv").exists()  # the flag is consumed, the batch kept
    (labels,) = asset_events(f"{MODEL}.labels")
    assert labels["extra"] == {"intervals": [str(day)], "rows": 300}

    # The new labels start a retrain; it fails its quality gate, once, and the champion stays.
    (retrain,) = airflow.wait(
        "the labels-triggered retrain to finish",
        lambda: [r for r in new_training_runs() if r.state in ("success", "failed")],
        600,
    )
    states = airflow.task_states(f"{MODEL}__training", retrain.run_id)
    assert retrain.state == "failed", states
    assert states["plan_training"] == "success" and states["gate_quality"] == "failed", states
    assert states["register"] == "upstream_failed" and states["promote"] == "upstream_failed", states
    assert airflow.try_numbers(f"{MODEL}__training", retrain.run_id)["gate_quality"] == 1  # no retries
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == champion
    assert registry.get_alias_version(MODEL, registry.CHALLENGER) in (None, champion)

    # More labels within the cool-down: the failed retrain counts, so no retry storm.
    write_batches(MODEL, landing, day + timedelta(days=1), 1, rows_per_batch=300)
    flag.touch()
    runs = airflow.wait(
        "the second labels-triggered training run",
        lambda: [r for r in new_training_runs() if r.state in ("success", "failed")][1:],
        600,
    )
    states = airflow.task_states(f"{MODEL}__training", runs[0].run_id)
    assert states["plan_training"] == "skipped" and states["train"] == "skipped", states
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == champion
    # Every task ran in a process forked from workers that had the ML stack imported once.
    scheduler_log = (state_dir / "services-logs" / "scheduler.log").read_text()
    n = len(preload_modules())
    assert f"preloaded {n} of {n} modules" in scheduler_log
