"""Bad input never gets past ingest/validate: a clear one-line reason, raw data kept, nothing promoted."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops.core import errors
from mlops.data import steps as data_steps
from mlops.features import steps as feature_steps
from mlops_dev.datagen import GENERATORS

DAY = date(2026, 3, 1)
START, END = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _good() -> pd.DataFrame:
    return GENERATORS["credit_risk"](DAY, rows_per_batch=200)


def _with(column: str, value: object, rows: int = 20) -> Callable[[], bytes]:
    def make() -> bytes:
        frame = _good().astype({column: object})
        frame.loc[: rows - 1, column] = value
        return _csv(frame)

    return make


def _parquet_truncated() -> bytes:
    buffer = io.BytesIO()
    _good().to_parquet(buffer, index=False)
    return buffer.getvalue()[:-200]


def _repeated_key() -> bytes:
    frame = _good()
    frame.loc[1, ["customer_id", "event_timestamp"]] = frame.loc[0, ["customer_id", "event_timestamp"]].to_numpy()
    return _csv(frame)


CASES: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "wrong schema": ("csv", lambda: _csv(_good().drop(columns=["annual_income"])), "annual_income"),
    "wrong types": ("csv", _with("age", "abc", rows=5), "age: numeric type"),
    "nulls": ("csv", _with("loan_amount", None), "loan_amount: no null values"),
    "out of range": ("csv", _with("age", 250), "age: values between 18 and 100"),
    "unknown category": ("csv", _with("home_ownership", "CASTLE"), "home_ownership"),
    "empty file": ("csv", lambda: b"", "empty file"),
    "header only": ("csv", lambda: _csv(_good().head(0)), "row count"),
    "truncated parquet": ("parquet", _parquet_truncated, "cannot read parquet"),
    "repeated entity+timestamp": ("csv", _repeated_key, "customer_id+event_timestamp: no repeated"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_batch_is_quarantined_with_a_clear_reason(case: str, state_dir: Path) -> None:
    fmt, make, expected = CASES[case]
    landing = state_dir / "landing" / "credit_risk"
    landing.mkdir(parents=True)
    content = make()
    (landing / f"{DAY}.{fmt}").write_bytes(content)

    ingested = data_steps.ingest("credit_risk", START, END)
    with pytest.raises(errors.GateFailed) as failure:
        data_steps.validate("credit_risk", ingested["interval"], START, END)
    message = str(failure.value)
    assert "\n" not in message
    assert expected in message, message

    quarantine = state_dir / "lake" / "quarantine" / "credit_risk" / str(DAY)
    kept = next(quarantine.rglob(f"{DAY}.{fmt}"))
    assert kept.read_bytes() == content  # the batch itself is kept, byte for byte
    assert next(quarantine.rglob("reason.txt")).read_text().strip() in message
    assert next(quarantine.rglob("report.html")).stat().st_size > 0
    raw = list((state_dir / "lake" / "raw" / "credit_risk" / "objects").rglob(f"*.{fmt}"))
    assert [p.read_bytes() for p in raw] == [content]
    assert not (state_dir / "lake" / "validated").exists()
    assert not (state_dir / "mlflow").exists()  # the registry was never touched
    assert (landing / f"{DAY}.{fmt}").exists()  # nothing deleted


def test_duplicate_batch_is_rejected(state_dir: Path) -> None:
    landing = state_dir / "landing" / "credit_risk"
    landing.mkdir(parents=True)
    content = _csv(_good())
    (landing / "2026-03-01.csv").write_bytes(content)
    first = data_steps.ingest("credit_risk", START, END)
    assert data_steps.validate("credit_risk", first["interval"], START, END)["rows"] == 200
    (landing / "2026-03-02.csv").write_bytes(content)
    with pytest.raises(errors.GateFailed, match=r"duplicate batch rejected .* 2026-03-02\.csv"):
        data_steps.ingest("credit_risk", END, datetime(2026, 3, 3, tzinfo=UTC))
    assert data_steps.validated_days("credit_risk") == [DAY]


def test_rerunning_an_interval_changes_nothing(state_dir: Path) -> None:
    landing = state_dir / "landing" / "credit_risk"
    landing.mkdir(parents=True)
    (landing / "2026-03-01.csv").write_bytes(_csv(_good()))
    for _ in range(2):
        ingested = data_steps.ingest("credit_risk", START, END)
        result = data_steps.validate("credit_risk", ingested["interval"], START, END)
    assert ingested["new_objects"] == 0
    files = sorted((state_dir / "lake" / "validated").rglob("*.parquet"))
    assert [str(p) for p in files] == [str(state_dir / "lake" / k) for k in result["validated"]]
    assert len(files) == 1


def test_no_landed_batch_skips(state_dir: Path) -> None:
    with pytest.raises(errors.NothingToDo, match="no batch landed"):
        data_steps.ingest("credit_risk", START, END)


def test_landing_watcher_run_quarantines_a_bad_day_and_processes_the_others(
    state_dir: Path, run_dag: Callable[..., object]
) -> None:
    landing = state_dir / "landing" / "credit_risk"
    landing.mkdir(parents=True)
    good = GENERATORS["credit_risk"](date(2026, 3, 2), rows_per_batch=200)
    (landing / "2026-03-01.csv").write_bytes(_with("age", 250)())
    (landing / "2026-03-02.csv").write_bytes(_csv(good))
    assert data_steps.pending_landed_days("credit_risk") == ["2026-03-01", "2026-03-02"]

    run = run_dag("credit_risk__landing", full=True)
    states = _states(run)
    assert states == {"find_new_batches": "success", "process": "success", "publish": "success", "verdict": "failed"}
    # One task instance per landed day, named by its day in the grid.
    days = [(ti.map_index, ti.rendered_map_index, str(ti.state)) for ti in _mapped(run, "process")]
    assert days == [(0, "2026-03-01", "success"), (1, "2026-03-02", "success")], days
    processed = run.get_task_instance("publish").xcom_pull(task_ids="publish")
    assert processed["intervals"] == ["2026-03-02"] and processed["rows"] == 200
    (line,) = processed["quarantined"]
    assert "2026-03-01" in line and "age: values between 18 and 100" in line and "\n" not in line
    assert data_steps.validated_days("credit_risk") == [date(2026, 3, 2)]
    assert (landing / "2026-03-01.csv").exists()  # nothing deleted
    # Both days' content is in the raw store now: nothing is pending, and a rerun has nothing to do.
    with pytest.raises(errors.NothingToDo, match="no new batch"):
        data_steps.pending_landed_days("credit_risk")


def _asset_events(asset: str, run_id: str) -> int:
    """How many events of ``asset`` a run emitted, read from Airflow's metadata DB."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(AssetEvent)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .where(AssetModel.name == asset, AssetEvent.source_run_id == run_id)
            )
            or 0
        )


def test_a_day_goes_through_the_landing_watcher_or_the_daily_dag_not_both(
    state_dir: Path, run_dag: Callable[..., Any]
) -> None:
    landing = state_dir / "landing" / "credit_risk"
    landing.mkdir(parents=True)
    (landing / "2026-03-01.csv").write_bytes(_csv(_good()))
    (landing / "nested").mkdir()
    (landing / "nested" / "2026-03-02.csv").write_bytes(_csv(_good()))  # not a batch: reported, never read

    first = run_dag("credit_risk__landing", full=True)
    assert _states(first) == {
        "find_new_batches": "success",
        "process": "success",
        "publish": "success",
        "verdict": "success",
    }
    assert [ti.rendered_map_index for ti in _mapped(first, "process")] == ["2026-03-01"]
    summary = first.get_task_instance("verdict").xcom_pull(task_ids="verdict")
    assert summary["processed"] == ["2026-03-01"]
    (ignored,) = summary["ignored"]
    assert "'nested'" in ignored and "a folder" in ignored
    assert _asset_events("credit_risk.features", first.run_id) == 1

    # The scheduled daily run for the same day finds it published and materialized: it skips, no event.
    second = run_dag("credit_risk__data", day=DAY, full=True)
    assert _states(second) == {"ingest": "skipped", "validate": "skipped", "materialize": "skipped"}
    assert _asset_events("credit_risk.features", second.run_id) == 0
    # And a rerun of the watcher has nothing to do either.
    third = run_dag("credit_risk__landing", full=True)
    assert _states(third)["find_new_batches"] == "skipped"
    assert _asset_events("credit_risk.features", third.run_id) == 0
    assert data_steps.validated_days("credit_risk") == [DAY]


def _states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def _mapped(dag_run: Any, task_id: str) -> list[Any]:
    return sorted((ti for ti in dag_run.get_task_instances() if ti.task_id == task_id), key=lambda ti: ti.map_index)


def test_corrected_day_trains_once_and_the_lineage_names_the_corrected_batch(state_dir: Path) -> None:
    """The issue's "done when": re-land a corrected day, build a training set: that day's rows once."""
    import hashlib

    landing = state_dir / "landing" / "credit_risk"
    landing.mkdir(parents=True)
    days = [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)]
    content = {day: _csv(GENERATORS["credit_risk"](day, rows_per_batch=200)) for day in days}
    for day, data in content.items():
        (landing / f"{day}.csv").write_bytes(data)
    assert data_steps.process_landed("credit_risk", data_steps.pending_landed_days("credit_risk"))["rows"] == 600

    corrected = GENERATORS["credit_risk"](days[1], rows_per_batch=150, seed=11)
    (landing / f"{days[1]}.csv").write_bytes(_csv(corrected))  # the producer re-lands 03-02, corrected
    assert data_steps.pending_landed_days("credit_risk") == [days[1].isoformat()]
    again = data_steps.process_landed("credit_risk", [days[1].isoformat()])
    assert again["intervals"] == [days[1].isoformat()] and again["rows"] == 150

    built = feature_steps.build_training_set("credit_risk", "run-1", window_end=days[-1].isoformat(), window_days=3)
    frame = pd.read_parquet(built["uri"])
    assert built["rows"] == len(frame) == 200 + 150 + 200
    assert not frame.duplicated(["customer_id", "event_timestamp"]).any()
    keys = set(zip(frame["customer_id"], frame["event_timestamp"], strict=True))
    assert set(zip(corrected["customer_id"], corrected["event_timestamp"], strict=True)) <= keys
    old = GENERATORS["credit_risk"](days[1], rows_per_batch=200)
    assert not set(zip(old["customer_id"], old["event_timestamp"], strict=True)) & keys  # the old version is gone
    sha = {day: hashlib.sha256(data).hexdigest() for day, data in content.items()}
    fixed = hashlib.sha256(_csv(corrected)).hexdigest()
    assert built["raw_batches"] == [sha[days[0]], fixed, sha[days[2]]]
    assert sha[days[1]] not in built["raw_batches"]
