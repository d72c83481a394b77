"""``make demo``: raw data to a promoted, gated champion on the embedded default, through real Airflow.

Generates daily batches (plus one deliberately bad batch) into the landing folder, runs the model's
data DAG per day and then its training DAG with ``airflow dags test`` (asset order), prints a summary,
and ends with one line ``DEMO_RESULT {json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from mlops.core.settings import Settings, airflow_env, get_settings

DEMO_START = date(2026, 3, 1)
DRIFT_LEVEL = 0.4  # covariate drift that trips monitoring (share > 0.3) but not the staleness gate (<= 0.5)


def event_driven_models(settings: Settings) -> Path:
    """Copies of the model configs with cron retraining off, so every retrain the demo shows was caused
    by an event (with catchup=False, unpausing a cron DAG runs its latest past tick at once)."""
    import yaml

    from mlops.orchestration.dagkit import models_dir

    target = settings.state_dir / "demo-models"
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(models_dir().glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        data["training"]["schedule"] = None
        (target / path.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return target


class AirflowRunner:
    """Runs DAGs with ``dag.test()`` (what ``airflow dags test`` does) in this one process.

    Airflow's start-up cost is paid once instead of once per run; the DAGs are read from the configured
    dags folder exactly as the CLI reads them.
    """

    def __init__(self, settings: Settings) -> None:
        os.environ.update(airflow_env(settings))
        self.log_path = settings.state_dir / "demo-airflow.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("")
        binary = str(Path(sys.executable).with_name("airflow"))
        subprocess.run([binary, "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
        from airflow.dag_processing.dagbag import DagBag

        self.bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
        if self.bag.import_errors:
            raise SystemExit(f"DAG import errors: {self.bag.import_errors}")

    def test(self, dag_id: str, logical_date: date | None = None, conf: dict[str, Any] | None = None) -> str:
        from airflow.sdk import timezone

        dag = self.bag.dags[dag_id]
        when = timezone.datetime(logical_date.year, logical_date.month, logical_date.day) if logical_date else None
        with _output_to(self.log_path):
            run = dag.test(logical_date=when, run_conf=conf) if when else dag.test(run_conf=conf)
        return str(run.state)


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (Airflow's task logs included) to a file for a while."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("a") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_loop(model: str, settings: Settings, drift_day: date, champion: str, runner: AirflowRunner) -> dict[str, Any]:
    """The loop through Airflow's real scheduler: drift -> Asset event -> retrain -> canary -> champion -> rollback.

    Then, with ``dag.test`` once the scheduler is stopped, a planted bad version is aborted at its first step.
    """
    from mlops.core.config import get_config
    from mlops.data.ingest import landing_store
    from mlops.model import registry
    from mlops_dev.datagen import write_batches
    from mlops_dev.services import AirflowServices, asset_events

    timeline: list[tuple[datetime, str]] = []

    def mark(text: str, at: datetime | None = None) -> None:
        moment = at or datetime.now(UTC)
        timeline.append((moment, text))
        print(f"[{moment.strftime('%H:%M:%S')}] {text}", flush=True)

    print()
    _step("Starting Airflow's scheduler, dag-processor, triggerer and api-server (LocalExecutor, SQLite)")
    with AirflowServices(settings, settings.state_dir / "services-logs") as airflow:
        mark(f"Airflow healthy; UI at http://127.0.0.1:{airflow.port} while the demo runs")
        # The features events of the batches above are already queued: the scheduler scores the backlog.
        scored = airflow.wait(
            "the backlog to be scored and monitored",
            lambda: [r for r in airflow.runs(f"{model}__monitoring") if r.state in ("success", "failed")],
            600,
        )
        mark(
            f"backlog scored by champion v{champion} and monitored ({scored[-1].state}); "
            f"drift events so far: {len(asset_events(f'{model}.drift'))}"
        )
        landing = landing_store(get_config(model).config, settings).local_path("")
        assert landing is not None
        write_batches(model, landing, drift_day, 1, rows_per_batch=400, covariate_drift=DRIFT_LEVEL)
        run_id = airflow.trigger(
            f"{model}__data",
            logical_date=datetime.combine(drift_day + timedelta(days=1), datetime.min.time(), tzinfo=UTC),
        )
        mark(f"a drifted batch landed for {drift_day} (covariate drift {DRIFT_LEVEL}); data run triggered")
        data_run = airflow.wait_finished(f"{model}__data", run_id, 300)
        mark(f"{model}__data {drift_day}: {data_run.state}", data_run.end)
        known = {e["id"] for e in asset_events(f"{model}.drift")}
        event = airflow.wait(
            "the drift event",
            lambda: next((e for e in asset_events(f"{model}.drift") if e["id"] not in known), None),
            600,
        )
        mark(
            f"monitoring emitted drift event #{event['id']}: {len(event['extra']['drifted_features'])} "
            f"features drifted ({', '.join(event['extra']['drifted_features'][:4])}...), share "
            f"{event['extra']['drift_share']:.2f}",
            event["timestamp"],
        )
        retrain = airflow.wait(
            "the drift-triggered training run",
            lambda: next((r for r in airflow.runs(f"{model}__training") if event["id"] in r.consumed_event_ids), None),
            300,
        )
        started = airflow.wait(
            "retraining to start",
            lambda: airflow.task_start(f"{model}__training", retrain.run_id, "plan_training"),
            300,
        )
        latency = (started - event["timestamp"]).total_seconds()
        mark(f"retraining started ({retrain.run_type}), {latency:.1f} s after the drift event", started)
        retrain = airflow.wait_finished(f"{model}__training", retrain.run_id, 900)
        if retrain.state != "success":
            states = airflow.task_states(f"{model}__training", retrain.run_id)
            raise SystemExit(f"the drift-triggered retrain did not succeed: {states}")
        good = _ramp(airflow, model, settings, drift_day + timedelta(days=1), mark)
        champion_after = registry.get_alias_version(model, registry.CHAMPION)
        mark(f"{model}__training: {retrain.state}; canary v{good['version']} ramped; champion is now v{champion_after}")
        rollback_id = airflow.trigger(f"{model}__rollback", conf={"reason": "demo: undo the retrain"})
        rolled = airflow.wait_finished(f"{model}__rollback", rollback_id, 300)
        rollback_to = registry.get_alias_version(model, registry.CHAMPION)
        mark(f"{model}__rollback: {rolled.state}; champion is back to v{rollback_to}", rolled.end)
        score_id = airflow.trigger(f"{model}__scoring", conf={"intervals": [drift_day.isoformat()]})
        airflow.wait_finished(f"{model}__scoring", score_id, 300)
        used = _scored_versions(settings, model, drift_day)
        mark(f"the next scoring run used v{', v'.join(used)} with no redeploy")
    bad = _bad_canary(runner, model, settings, drift_day + timedelta(days=len(_steps(model)) + 1), mark)
    return {
        "rollout": {**good, **bad},
        "drift_detected": True,
        "retrain_triggered_by": event["id"],
        "retrain_run_id": retrain.run_id,
        "champion_before": champion,
        "champion_after": champion_after,
        "rollback_to": rollback_to,
        "scored_after_rollback_with": used,
        "drift_to_retrain_seconds": round(latency, 2),
        "timeline": [[at.isoformat(timespec="seconds"), text] for at, text in timeline],
    }


def _steps(model: str) -> list[float]:
    from mlops.core.config import get_config

    return list(get_config(model).config.promotion.canary.steps)


def _land(model: str, settings: Settings, day: date, *, mislabelled: bool = False) -> None:
    """One clean 400-row batch in the landing folder; ``mislabelled``: every label flipped."""
    from mlops.core.config import get_config
    from mlops.data.ingest import landing_store
    from mlops_dev.datagen import GENERATORS, write_batch

    cfg = get_config(model).config
    landing = landing_store(cfg, settings).local_path("")
    assert landing is not None
    frame = GENERATORS[model](day, rows_per_batch=400)
    if mislabelled:
        from mlops.core.labels import binary_target

        positive = binary_target(frame[cfg.label.column], cfg.label.positive).astype(bool)
        negative = next(c for c in (cfg.label.classes or [0, 1]) if c != cfg.label.positive_class)
        frame[cfg.label.column] = positive.map({True: negative, False: cfg.label.positive_class})
    write_batch(frame, landing / f"{day.isoformat()}.csv")


def _ramp(airflow: Any, model: str, settings: Settings, first: date, mark: Any) -> dict[str, Any]:
    """The retrained version serves as a canary; one clean batch per step; ``<model>__rollout`` decides."""
    from mlops.model import rollout

    state = rollout.load_state(model)
    if state is None or state.status != "running":
        raise SystemExit(f"the retrained version did not start a canary rollout: {state}")
    mark(f"canary v{state.canary_version} serves {state.share:g}% beside champion v{state.champion_version}")
    steps = _steps(model)
    for index in range(len(steps)):
        day = first + timedelta(days=index)
        _land(model, settings, day)
        airflow.trigger(
            f"{model}__data", logical_date=datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        )

        def judged(index: int = index) -> rollout.RolloutState | None:
            now = rollout.load_state(model)
            done = now is not None and (now.step > index or now.status != "running")
            return now if done else None

        now = airflow.wait(f"the rollout's decision on step {index + 1}", judged, 600)
        last = now.events[-1]
        serving = f"canary v{now.canary_version} is champion" if now.status == "promoted" else f"share {now.share:g}%"
        mark(f"{model}__rollout on {day}: {last.action} ({last.reason}); {serving}")
        if now.status not in ("running", "promoted"):
            raise SystemExit(f"the good canary did not ramp: {last.action}: {last.reason} ({last.report})")
    passed = [e for e in now.events if e.action in ("advance", "promote")]
    return {
        "version": now.canary_version,
        "steps_passed": len(passed),
        "promoted": now.status == "promoted",
        "reports": [e.report for e in now.events if e.report],
    }


def _bad_canary(runner: AirflowRunner, model: str, settings: Settings, first: date, mark: Any) -> dict[str, Any]:
    """A version trained on mislabelled days passes the offline gates (its holdout is mislabelled too) and
    is aborted at its first step on live data. Run with dag.test: the mislabelled days must not reach
    live monitoring, whose circuit breaker would (rightly) act on them."""
    from mlops.model import registry, rollout

    days = 3
    for offset in range(days):
        _land(model, settings, first + timedelta(days=offset), mislabelled=True)
        runner.test(f"{model}__data", first + timedelta(days=offset + 1))
    conf = {"window_end": (first + timedelta(days=days - 1)).isoformat(), "window_days": days}
    state = runner.test(f"{model}__training", conf=conf)
    canary = rollout.load_state(model)
    if state != "success" or canary is None or canary.status != "running":
        raise SystemExit(f"the planted version did not pass its gates into a canary ({state}); see {runner.log_path}")
    mark(f"planted v{canary.canary_version} (mislabelled training rows) passed every gate; canary {canary.share:g}%")
    live = first + timedelta(days=days)
    _land(model, settings, live)
    runner.test(f"{model}__data", live + timedelta(days=1))
    runner.test(f"{model}__scoring", conf={"intervals": [live.isoformat()]})
    runner.test(f"{model}__rollout", conf={"action": "analyze", "reason": ""})
    final = rollout.load_state(model)
    assert final is not None
    last = final.events[-1]
    champion = registry.get_alias_version(model, registry.CHAMPION)
    mark(f"{model}__rollout on {live}: {last.action} ({last.reason}); champion stays v{champion}")
    return {
        "aborted_version": final.canary_version if final.status == "aborted" else None,
        "abort_reason": last.reason if final.status == "aborted" else None,
        "max_share_of_aborted": final.max_share,
        "abort_report": last.report,
    }


def _scored_versions(settings: Settings, model: str, day: date) -> list[str]:
    import pandas as pd

    path = settings.state_dir / "lake" / "predictions" / model / f"date={day.isoformat()}" / "champion.parquet"
    return sorted(set(pd.read_parquet(path)["model_version"].astype(str)))


def run_demo(model: str, days: int, rows: int, with_loop: bool = True) -> dict[str, Any]:  # noqa: PLR0915 -- one narrated scenario
    from mlops.core.config import get_config
    from mlops.data import steps as data_steps
    from mlops.data.ingest import landing_store
    from mlops.model import registry
    from mlops_dev.datagen import write_batches

    settings = get_settings()
    os.environ["MLOPS_MODELS_DIR"] = str(event_driven_models(settings))
    cfg = get_config(model).config
    started = time.monotonic()
    landing = landing_store(cfg, settings).local_path("")
    assert landing is not None, "the demo runs on the embedded default (local landing folder)"

    _step(f"Generating {days} daily batches of {rows} rows for {model} into {landing}")
    write_batches(model, landing, DEMO_START, days, rows_per_batch=rows)
    bad_day = DEMO_START + timedelta(days=days)
    write_batches(model, landing, bad_day, 1, rows_per_batch=rows, bad_rows=max(10, rows // 10))

    _step("Initialising the Airflow metadata database (SQLite) and parsing the DAGs")
    airflow = AirflowRunner(settings)
    _step(f"  Airflow task logs go to {airflow.log_path}")
    for offset in range(days):
        day = DEMO_START + timedelta(days=offset)
        _step(f"dags test {model}__data {day}: ingest -> GX gate -> Feast materialize")
        state = airflow.test(f"{model}__data", day + timedelta(days=1))
        if state != "success":
            raise SystemExit(f"{model}__data for {day} ended {state}")

    _step(f"dags test {model}__data {bad_day}: a batch with injected bad rows")
    state = airflow.test(f"{model}__data", bad_day + timedelta(days=1))
    quarantine_dir = settings.state_dir / "lake" / "quarantine" / model / bad_day.isoformat()
    reasons = sorted(quarantine_dir.rglob("reason.txt"))
    if state != "failed" or not reasons:
        raise SystemExit("the bad batch was not quarantined: the data-quality gate is broken")
    quarantined = sorted(str(p) for p in quarantine_dir.rglob("*") if p.is_file())
    _step(f"  run {state}; batch quarantined in {quarantine_dir}")
    _step(f"  reason: {reasons[0].read_text().strip()[:300]}")

    champion_before = registry.get_alias_version(model, registry.CHAMPION)
    _step(f"dags test {model}__training: training set -> train -> 4 gates -> register -> promote")
    conf = {"window_end": (DEMO_START + timedelta(days=days - 1)).isoformat(), "window_days": days}
    state = airflow.test(f"{model}__training", conf=conf)
    if state != "success":
        raise SystemExit(f"{model}__training ended {state}: the failing gate's line is in {airflow.log_path}")

    champion = registry.get_alias_version(model, registry.CHAMPION)
    if champion is None:
        raise SystemExit("no champion after the training run")
    tags = registry.version_tags(model, champion)
    run_dir = Path(
        sorted((settings.reports_dir / model).glob("*/quality.html"), key=lambda p: p.stat().st_mtime)[-1]
    ).parent
    dq_reports = sorted((settings.reports_dir / model / "data_quality").glob("*.html"), key=lambda p: p.stat().st_mtime)
    reports = {
        "data_quality": str(dq_reports[-1]),
        "drift": str(run_dir / "drift.html"),
        "quality": str(run_dir / "quality.html"),
        "fairness": str(run_dir / "fairness.html"),
        "champion": str(run_dir / "champion.html"),
    }
    loop = run_loop(model, settings, bad_day + timedelta(days=1), champion, airflow) if with_loop else {}
    metrics = {k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")}
    history = registry.alias_history(model)
    print()
    print(f"  model            {model}")
    print(f"  champion         version {champion} (before: {champion_before or 'none'})")
    print("  holdout metrics  " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items())))
    print(
        f"  lineage          window {tags.get('lineage.training_window')}, "
        f"{len(json.loads(tags.get('lineage.raw_batches', '[]')))} raw batches, "
        f"feature service {tags.get('lineage.feature_service')}, "
        f"commit {tags.get('lineage.git_commit', '')[:10]}"
    )
    print(f"  alias history    {len(history)} changes; last: {history[-1].alias} -> v{history[-1].to_version}")
    print(f"  quarantine       {settings.state_dir / 'lake' / 'quarantine' / model}")
    for name, path in reports.items():
        print(f"  report {name:<10}{path}")
    print(f"  tracking URI     {settings.tracking_uri}  (make mlflow-ui)")
    print("  cockpit          make airflow, then Browse > Models (http://127.0.0.1:8080/plugin/mlops_models)")
    if loop:
        print(
            "  live loop        " + f"champion v{loop['champion_before']} -> drift event "
            f"#{loop['retrain_triggered_by']} -> retrained v{loop['champion_after']} -> rolled back to "
            f"v{loop['rollback_to']}; drift event to retraining start {loop['drift_to_retrain_seconds']:.1f} s"
        )
        ramp = loop["rollout"]
        print(
            f"  canary rollout   v{ramp['version']} passed {ramp['steps_passed']} step(s), promoted "
            f"{ramp['promoted']}; planted v{ramp['aborted_version']} aborted at {ramp['max_share_of_aborted']:g}%: "
            f"{ramp['abort_reason']}"
        )
    print(f"  took             {time.monotonic() - started:.0f} s")
    print()
    return {
        "model": model,
        "champion_version": champion,
        "champion_before": champion_before,
        "tracking_uri": settings.tracking_uri,
        "metrics": metrics,
        "reports": reports,
        "quarantined": quarantined,
        "validated_days": [d.isoformat() for d in data_steps.validated_days(model, settings)],
        **loop,
    }


def main(argv: list[str] | None = None) -> int:
    from mlops.features import boot

    boot.install()  # Feast without typeguard's import-time recompilation
    parser = argparse.ArgumentParser(prog="python -m mlops_dev.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("DEMO_MODEL", "credit_risk"))
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--no-loop", action="store_true", help="stop after the first champion")
    args = parser.parse_args(argv)
    result = run_demo(args.model, args.days, args.rows, with_loop=not args.no_loop)
    print("DEMO_RESULT " + json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
