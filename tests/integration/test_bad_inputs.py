"""Bad input never gets past ingest/validate: a clear one-line reason, raw data kept, nothing promoted."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from mlops import pipeline
from mlops.datagen import GENERATORS

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

    ingested = pipeline.ingest("credit_risk", START, END)
    with pytest.raises(pipeline.GateFailed) as failure:
        pipeline.validate("credit_risk", ingested["interval"], START, END)
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
    first = pipeline.ingest("credit_risk", START, END)
    assert pipeline.validate("credit_risk", first["interval"], START, END)["rows"] == 200
    (landing / "2026-03-02.csv").write_bytes(content)
    with pytest.raises(pipeline.GateFailed, match=r"duplicate batch rejected .* 2026-03-02\.csv"):
        pipeline.ingest("credit_risk", END, datetime(2026, 3, 3, tzinfo=UTC))
    assert pipeline.validated_days("credit_risk") == [DAY]


def test_rerunning_an_interval_changes_nothing(state_dir: Path) -> None:
    landing = state_dir / "landing" / "credit_risk"
    landing.mkdir(parents=True)
    (landing / "2026-03-01.csv").write_bytes(_csv(_good()))
    for _ in range(2):
        ingested = pipeline.ingest("credit_risk", START, END)
        result = pipeline.validate("credit_risk", ingested["interval"], START, END)
    assert ingested["new_objects"] == 0
    files = sorted((state_dir / "lake" / "validated").rglob("*.parquet"))
    assert [str(p) for p in files] == [str(state_dir / "lake" / k) for k in result["validated"]]
    assert len(files) == 1


def test_no_landed_batch_skips(state_dir: Path) -> None:
    with pytest.raises(pipeline.NothingToDo, match="no batch landed"):
        pipeline.ingest("credit_risk", START, END)


def test_landing_watcher_run_quarantines_a_bad_day_and_processes_the_others(
    state_dir: Path, run_dag: Callable[..., object]
) -> None:
    landing = state_dir / "landing" / "credit_risk"
    landing.mkdir(parents=True)
    good = GENERATORS["credit_risk"](date(2026, 3, 2), rows_per_batch=200)
    (landing / "2026-03-01.csv").write_bytes(_with("age", 250)())
    (landing / "2026-03-02.csv").write_bytes(_csv(good))
    assert pipeline.pending_landed_days("credit_risk") == ["2026-03-01", "2026-03-02"]

    run = run_dag("credit_risk__landing", full=True)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {"find_new_batches": "success", "process": "success", "verdict": "failed"}, states
    processed = run.get_task_instance("process").xcom_pull(task_ids="process")
    assert processed["intervals"] == ["2026-03-02"] and processed["rows"] == 200
    (line,) = processed["quarantined"]
    assert "2026-03-01" in line and "age: values between 18 and 100" in line and "\n" not in line
    assert pipeline.validated_days("credit_risk") == [date(2026, 3, 2)]
    assert (landing / "2026-03-01.csv").exists()  # nothing deleted
    # Both days' content is in the raw store now: nothing is pending, and a rerun has nothing to do.
    with pytest.raises(pipeline.NothingToDo, match="no new batch"):
        pipeline.pending_landed_days("credit_risk")
