"""The cockpit's Models page at scale: ``python -m mlops_dev.cockpit_bench [--versions 100 --days 365]``.

Seeds a fresh embedded MLflow (a temporary state folder) with a model's registry as a long-lived
deployment leaves it: ``--versions`` registered versions with gate verdicts and lineage, champion
changes and rollbacks in the alias history, and ``--days`` monitored intervals in ``<model>__monitoring``.
Then times what the Models page costs on the server: assembling its data
(:func:`mlops.quality.cockpit.model_view`) and rendering the page with its chart, median of
``--repeats``. :func:`seed` is also what the cockpit's tests use, at a small size.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

MODEL = "credit_risk"


@dataclass(frozen=True)
class Seeded:
    model: str
    versions: list[str]
    champion: str
    days: list[str]
    training_run_id: str  # the newest version's training run, with gate reports
    dag_run_id: str


def _gate_reports(run_id: str, folder: Path) -> None:
    """Four gate reports with verdict banners, logged as the gate steps log them."""
    from mlops.core.tracking import client
    from mlops.quality.reports import write_html
    from mlops.quality.steps import GATE_SUMMARY_TAG

    mlflow_client = client()
    summaries = {
        "drift": ("PASS", "drift gate passed: 1 of 12 features drifted (share 0.08 <= 0.5)"),
        "quality": ("PASS", "quality gate passed: roc_auc 0.812 >= 0.6"),
        "fairness": ("PASS", "fairness gate passed: selection_rate disparity 0.041 <= 0.2"),
        "champion": ("FAIL", "champion gate failed: roc_auc 0.790 < 0.802 (champion v1 0.812 - tolerance 0.01)"),
    }
    for gate, (verdict, summary) in summaries.items():
        path = write_html(
            folder / f"{gate}.html",
            f"{gate.title()} gate",
            f"<p>the {gate} gate's tables</p>",
            verdict=verdict,  # type: ignore[arg-type]
            summary=summary,
        )
        mlflow_client.log_artifact(run_id, str(path), artifact_path="reports")
        mlflow_client.set_tag(run_id, f"{GATE_SUMMARY_TAG}{gate}", summary)
        mlflow_client.set_tag(run_id, f"gate.{gate}", "passed" if verdict == "PASS" else "failed")
    mlflow_client.log_metric(run_id, "gate_champion_challenger", 0.79)
    mlflow_client.log_metric(run_id, "gate_champion_required", 0.802)
    mlflow_client.log_metric(run_id, "gate_drift_drifted_share", 0.08)


def _history(model: str, moves: list[tuple[str | None, str, str, str]]) -> None:
    """Completed alias changes (from, to, when, reason) as the registry records them."""
    from dataclasses import asdict

    from mlops.core.tracking import client, ensure_experiment
    from mlops.model.registry import HISTORY_SUFFIX, KEY_TAG, STATE_TAG, TAG, AliasChange

    mlflow_client = client()
    experiment = ensure_experiment(f"{model}{HISTORY_SUFFIX}")
    for n, (source, target, at, reason) in enumerate(moves):
        change = AliasChange(model, "champion", source, target, "seed", reason, f"{model}__training", f"seed_{n}", at)
        tags = {**{f"{TAG}{k}": str(v) for k, v in asdict(change).items()}, KEY_TAG: f"seed-{n}", STATE_TAG: "done"}
        run = mlflow_client.create_run(experiment, run_name=f"champion: {source} -> {target}", tags=tags)
        mlflow_client.set_terminated(run.info.run_id, status="FINISHED")


def seed_monitoring(model: str, days: list[str], champion_on: dict[str, str]) -> None:
    """One monitoring run per day in ``<model>__monitoring``, as :mod:`mlops.quality.monitoring` logs them."""
    from mlflow.entities import Metric

    from mlops.core.tracking import client, ensure_experiment
    from mlops.quality.monitoring import MONITORING_SUFFIX

    mlflow_client = client()
    experiment = ensure_experiment(f"{model}{MONITORING_SUFFIX}")
    now = int(time.time() * 1000)
    for n, day in enumerate(days):
        wave = 0.5 + 0.5 * math.sin(n / 9)
        values = {
            "drift_share": round(0.05 + 0.3 * wave, 3),
            "prediction_ks": round(0.04 + 0.2 * wave * wave, 3),
            "rows": 300.0,
            "labelled_rows": 300.0,
            "quality_roc_auc": round(0.82 - 0.2 * wave * wave, 3),
        }
        tags = {"interval": day, "champion_version": champion_on[day]}
        run = mlflow_client.create_run(experiment, run_name=f"monitor {day}", tags=tags)
        mlflow_client.log_batch(run.info.run_id, metrics=[Metric(k, v, now, 0) for k, v in values.items()])
        mlflow_client.set_terminated(run.info.run_id, status="FINISHED")


def seed(model: str = MODEL, versions: int = 100, days: int = 365, end: date | None = None) -> Seeded:
    """A model's registry, alias history and monitoring as a long-lived deployment leaves them."""
    from mlops.core.tracking import client, ensure_experiment

    mlflow_client = client()
    end = end or datetime.now(UTC).date()
    day_list = [(end - timedelta(days=days - 1 - n)).isoformat() for n in range(days)]
    experiment = ensure_experiment(model)
    mlflow_client.create_registered_model(model)
    numbers: list[str] = []
    run_id = dag_run_id = ""
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(versions):
            dag_run_id = f"manual__seed_{n:04d}"
            run = mlflow_client.create_run(experiment, tags={"airflow.dag_run_id": dag_run_id})
            run_id = run.info.run_id
            mlflow_client.log_metric(run_id, "holdout_roc_auc", 0.78 + 0.0003 * n)
            tags = {
                **{f"gate.{g}": "passed" for g in ("drift", "quality", "fairness")},
                "gate.champion": "skipped" if n == 0 else "passed",
                "metric.roc_auc": f"{0.78 + 0.0003 * n:.6f}",
                "lineage.training_window": f"{day_list[0]}..{day_list[min(n, days - 1)]}",
                "lineage.config_hash": f"{n:064x}",
                "lineage.git_commit": f"{n:040x}",
                "lineage.dag_run_id": dag_run_id,
                "lineage.training_run_id": run_id,
            }
            version = mlflow_client.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id, tags=tags)
            numbers.append(str(version.version))
            if n == versions - 1:
                _gate_reports(run_id, Path(tmp))
            mlflow_client.set_terminated(run_id, status="FINISHED")
    # A champion change every ~45 days, a rollback after the third; the last version is the challenger.
    moves: list[tuple[str | None, str, str, str]] = []
    reigns = max(1, min(len(numbers) - 1, days // 45))
    step = max(1, (len(numbers) - 1) // reigns)
    champion: str | None = None
    champion_on: dict[str, str] = {}
    for reign in range(reigns):
        target = numbers[min(reign * step, len(numbers) - 2)] if len(numbers) > 1 else numbers[0]
        at = day_list[min(reign * 45, days - 1)]
        moves.append((champion, target, f"{at}T06:00:00+00:00", "approved in Airflow"))
        champion = target
        if reign == 2 and len(moves) > 1:
            back = moves[-2][1]
            when = day_list[min(reign * 45 + 12, days - 1)]
            moves.append((champion, back, f"{when}T09:30:00+00:00", "rollback: quality guardrail breached"))
            champion = back
    assert champion is not None
    for day in day_list:
        champion_on[day] = next((m[1] for m in reversed(moves) if m[2][:10] <= day), moves[0][1])
    _history(model, moves)
    mlflow_client.set_registered_model_alias(model, "champion", champion)
    mlflow_client.set_registered_model_alias(model, "challenger", numbers[-1])
    seed_monitoring(model, day_list, champion_on)
    return Seeded(model, numbers, champion, day_list, run_id, dag_run_id)


def measure(model: str, repeats: int) -> dict[str, float]:
    """Median seconds of the page's data (with and without the monitoring cache) and of rendering it."""
    from mlops.quality import cockpit, cockpit_html

    uncached, cached, render = [], [], []
    size = 0
    for _ in range(repeats):
        cockpit.clear_cache()
        start = time.perf_counter()
        cockpit.model_view(model)
        uncached.append(time.perf_counter() - start)
        start = time.perf_counter()
        view = cockpit.model_view(model)
        middle = time.perf_counter()
        size = len(cockpit_html.model_page(view, cockpit_html.monitoring_chart(view)))
        render.append(time.perf_counter() - middle)
        cached.append(middle - start)
    return {
        "uncached_s": statistics.median(uncached),
        "cached_s": statistics.median(cached),
        "render_s": statistics.median(render),
        "page_kb": size / 1024,
        "versions": float(len(view.versions)),
        "days": float(len(view.monitoring)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--state", type=Path, help="an already seeded state folder (skips seeding)")
    args = parser.parse_args(argv)
    if args.state:
        os.environ.update({"MLOPS_ENV": "local", "MLOPS_STATE_DIR": str(args.state)})
        result = measure(MODEL, args.repeats)
        _print(result, args.repeats)
        return 0
    with tempfile.TemporaryDirectory() as state:
        os.environ.update({"MLOPS_ENV": "local", "MLOPS_STATE_DIR": state})
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            os.environ.pop(name, None)
        start = time.perf_counter()
        seed(MODEL, args.versions, args.days)
        print(f"seeded {args.versions} versions and {args.days} days in {time.perf_counter() - start:.1f} s")
        result = measure(MODEL, args.repeats)
    _print(result, args.repeats)
    return 0


def _print(result: dict[str, float], repeats: int) -> None:
    print(
        f"Models page, {result['versions']:.0f} versions and {result['days']:.0f} monitored days: data "
        f"{result['uncached_s'] * 1000:.0f} ms ({result['cached_s'] * 1000:.0f} ms with the monitoring cache) "
        f"+ page and chart {result['render_s'] * 1000:.0f} ms (medians of {repeats}), "
        f"{result['page_kb']:.0f} KiB"
    )


if __name__ == "__main__":
    raise SystemExit(main())
