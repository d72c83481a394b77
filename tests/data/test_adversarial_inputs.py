"""Adversarial landing: every bad input is quarantined with a one-line reason or reported and ignored,
and nothing is ever lost or doubled.

One landing folder holds every bad input class at once, one per day, beside good days; a single
processing pass (the landing watcher's per-day steps: ingest, then the GX gate) runs over all of it.
Then, per class: the outcome the class must have, the raw bytes kept, the good days published, and no
repeated (entity, timestamp) in any published day. Re-landing classes need steps in order and get a test
of their own; the README's "Reliability: data inputs" table lists the same classes.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.pandas import column, data_frames

from mlops.core import errors
from mlops.core.config import load_config
from mlops.core.settings import REPO_ROOT, get_settings
from mlops.core.storage import open_store
from mlops.data import snapshots
from mlops.data import steps as data_steps
from mlops.data.validate import BatchReadError, coerce_types, read_batch
from mlops.features import steps as feature_steps
from mlops_dev.datagen import GENERATORS

MODEL = "credit_risk"
ROWS = 60
FIRST = date(2026, 3, 1)
MAX_FILE_MB = 0.02  # 20.5 KiB: a 60-row batch is about 8 KiB of CSV
MAX_DAY_MB = 0.025
KEY = ["customer_id", "event_timestamp"]


def _frame(day: date, rows: int = ROWS) -> pd.DataFrame:
    return GENERATORS[MODEL](day, rows_per_batch=rows)


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _edit(column: str, value: Any, rows: int = 5) -> Callable[[date], bytes]:
    def make(day: date) -> bytes:
        frame = _frame(day).astype({column: object})
        frame.loc[: rows - 1, column] = value
        return _csv(frame)

    return make


def _stamps(values: list[str]) -> Callable[[date], bytes]:
    def make(day: date) -> bytes:
        frame = _frame(day).astype({"event_timestamp": object})
        for i, value in enumerate(values):
            frame.loc[i, "event_timestamp"] = value.replace("DAY", day.isoformat())
        return _csv(frame)

    return make


def _repeated_key(day: date) -> bytes:
    frame = _frame(day)
    frame.loc[1, KEY] = frame.loc[0, KEY].to_numpy()
    return _csv(frame)


def _parquet_wrong_types(day: date) -> bytes:
    return _parquet(_frame(day).astype({"age": str}))


def _semicolons(day: date) -> bytes:
    return _frame(day).to_csv(index=False, sep=";").encode()


def _duplicate_header(day: date) -> bytes:
    frame = _frame(day)
    frame.insert(3, "age_copy", frame["age"])
    return _csv(frame).replace(b"age_copy", b"age", 1)


def _latin1(day: date) -> bytes:
    frame = _frame(day)
    frame.loc[0, "loan_purpose"] = "caf\u00e9"
    return frame.to_csv(index=False).encode("latin-1")


def _bom(day: date) -> bytes:
    return b"\xef\xbb\xbf" + _csv(_frame(day))


def _garbage(day: date) -> bytes:
    return np.random.default_rng(day.toordinal()).integers(0, 256, 4096, dtype=np.uint8).tobytes()


def _padded(rows: int) -> Callable[[date], bytes]:
    """A valid batch made bigger by an extra (allowed) text column."""

    def make(day: date) -> bytes:
        return _csv(_frame(day, rows).assign(notes="x" * 100))

    return make


@dataclass(frozen=True)
class Case:
    """One bad-input class landed for its own day: what it lands and what must come of it."""

    files: dict[str, Callable[[date], bytes]]  # landing name suffix after the date -> content
    outcome: str  # "quarantined", "published" (accepted as is), "ignored" (reported, never read)
    reason: str  # a substring of the one-line reason (quarantined / ignored)


# Each class lands on its own day. Suffix "" gives "<day>.csv"; a suffix starting with "." is the extension.
QUARANTINED: dict[str, Case] = {
    "empty csv (0 bytes)": Case({".csv": lambda d: b""}, "quarantined", "empty file (0 bytes)"),
    "zero-byte parquet": Case({".parquet": lambda d: b""}, "quarantined", "empty file (0 bytes)"),
    "header only": Case({".csv": lambda d: _csv(_frame(d).head(0))}, "quarantined", "row count between"),
    "wrong delimiter": Case({".csv": _semicolons}, "quarantined", "has all expected columns (missing: age, age_band"),
    "missing column": Case(
        {".csv": lambda d: _csv(_frame(d).drop(columns=["annual_income"]))}, "quarantined", "missing: annual_income"
    ),
    "duplicate column names": Case({".csv": _duplicate_header}, "quarantined", "duplicate columns in the header: age"),
    "bad encoding (latin-1)": Case({".csv": _latin1}, "quarantined", "cannot read csv"),
    "binary garbage named .csv": Case({".csv": _garbage}, "quarantined", "cannot read csv"),
    "truncated parquet": Case({".parquet": lambda d: _parquet(_frame(d))[:-300]}, "quarantined", "cannot read parquet"),
    "garbage named .parquet": Case({".parquet": _garbage}, "quarantined", "cannot read parquet"),
    "parquet with wrong types": Case({".parquet": _parquet_wrong_types}, "quarantined", "age: numeric type"),
    "NaN in a numeric column": Case({".csv": _edit("loan_amount", None)}, "quarantined", "loan_amount: no null"),
    "inf in a numeric column": Case({".csv": _edit("age", "inf")}, "quarantined", "age: values between 18 and 100"),
    "strings in a numeric column": Case({".csv": _edit("age", "abc")}, "quarantined", "age: numeric type"),
    "out of range": Case({".csv": _edit("annual_income", -5)}, "quarantined", "annual_income: values between"),
    "unknown category": Case({".csv": _edit("home_ownership", "CASTLE")}, "quarantined", "'CASTLE'"),
    "label outside the classes (2)": Case(
        {".csv": _edit("defaulted", 2)}, "quarantined", "defaulted: values in [0, 1] (5 of 60 rows not allowed"
    ),
    "label as text ('yes')": Case({".csv": _edit("defaulted", "yes")}, "quarantined", "'yes'"),
    "label null": Case({".csv": _edit("defaulted", None)}, "quarantined", "defaulted: no null values"),
    "entity key null": Case({".csv": _edit("customer_id", None)}, "quarantined", "customer_id: no null values"),
    "timestamp unparsable": Case(
        {".csv": _stamps(["yesterday", "DAY 25:00"])}, "quarantined", "event_timestamp: no null values"
    ),
    "timestamp far future": Case({".csv": _stamps(["2099-01-01T00:00:00Z"])}, "quarantined", "(freshness)"),
    "timestamp beyond the year 2262": Case(
        {".csv": _stamps(["2999-01-01T00:00:00Z"])}, "quarantined", "1 of 60 rows null or unparsable"
    ),
    "timestamp far past": Case({".csv": _stamps(["1970-01-01T00:00:00Z"])}, "quarantined", "(freshness)"),
    "epoch numbers as timestamps": Case(
        {".csv": lambda d: _csv(_frame(d).assign(event_timestamp=1772000000))},
        "quarantined",
        "event_timestamp: no null values",
    ),
    "duplicate key within a file": Case({".csv": _repeated_key}, "quarantined", "no repeated entity and timestamp"),
    "duplicate keys across two files of a day": Case(
        {".csv": lambda d: _csv(_frame(d)), "-resend.parquet": lambda d: _parquet(_frame(d).head(10))},
        "quarantined",
        "no repeated entity and timestamp",
    ),
    "second file of a day missing a column": Case(
        {
            ".csv": lambda d: _csv(_frame(d)),
            "-b.csv": lambda d: _csv(_frame(d + timedelta(days=400)).drop(columns="age")),
        },
        "quarantined",
        "-b.csv: missing columns age",
    ),
    "oversize file": Case({".csv": _padded(200)}, "quarantined", "too large, not read"),
    "oversize day": Case(
        {"-a.csv": _padded(90), "-b.csv": lambda d: _csv(_frame(d + timedelta(days=400), 90).assign(notes="y" * 100))},
        "quarantined",
        "over data_quality.max_day_mb",
    ),
}

ACCEPTED: dict[str, Case] = {
    "extra column (allowed, dropped)": Case({".csv": lambda d: _csv(_frame(d).assign(extra="x"))}, "published", ""),
    "UTF-8 byte order mark": Case({".csv": _bom}, "published", ""),
    "naive and tz-aware timestamps mixed": Case(
        {".csv": _stamps(["DAYT10:00:00", "DAYT10:00:00+02:00", "DAY 09:00:00Z"])}, "published", ""
    ),
    "label written as 1.0 text": Case({".csv": _edit("defaulted", "1.0")}, "published", ""),
    "good csv": Case({".csv": lambda d: _csv(_frame(d))}, "published", ""),
    "good parquet": Case({".parquet": lambda d: _parquet(_frame(d))}, "published", ""),
}

CASES = {**QUARANTINED, **ACCEPTED}
DAYS = {name: FIRST + timedelta(days=i) for i, name in enumerate(CASES)}
REPEAT_DAY = FIRST + timedelta(days=len(CASES))  # the day after "good parquet", repeating 3 of its rows
DUPLICATE_DAY = REPEAT_DAY + timedelta(days=1)  # the good csv's bytes landed again for a later day


def _repeats_of_the_day_before(day: date) -> bytes:
    frame = _frame(day)
    frame.iloc[:3] = _frame(day - timedelta(days=1)).iloc[:3].to_numpy()
    return _csv(frame)


# Landing entries that are not batches: name -> (how to make it, reason substring).
IGNORED: dict[str, tuple[str, str]] = {
    "nested folder with a batch inside": ("nested", "a folder"),
    "hidden file named like a batch": ("hidden", "a hidden file"),
    "symbolic link to a batch": ("symlink", "a symbolic link"),
    "broken symbolic link": ("broken_symlink", "a symbolic link"),
    "folder named like a batch": ("folder_batch", "a folder"),
    "FIFO named like a batch": ("fifo", "not a regular file"),
    "wrong extension (.json)": ("json", "name does not match"),
    "compressed csv (.csv.gz)": ("gz", "name does not match"),
    "name without a date": ("nodate", "name does not match"),
    "impossible date": ("baddate", "is not a date"),
    "leftover temp file of an upload": ("tmp", "name does not match"),
}


def _models_dir(root: Path) -> Path:
    """The repo's model configs, with small size limits for credit_risk (bytes, not gigabytes, to test)."""
    folder = root / "models"
    shutil.copytree(REPO_ROOT / "include" / "models", folder)
    path = folder / f"{MODEL}.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["data_quality"].update(max_file_mb=MAX_FILE_MB, max_day_mb=MAX_DAY_MB)
    path.write_text(yaml.safe_dump(raw))
    load_config(path)
    return folder


IGNORED_FIRST = DUPLICATE_DAY + timedelta(days=1)
IGNORED_DAYS = {name: IGNORED_FIRST + timedelta(days=i) for i, name in enumerate(IGNORED)}


def _land_ignored(landing: Path, outside: Path, kind: str, day: date) -> str:
    """Make one landing entry that is not a batch; returns its top-level name."""
    good = _csv(_frame(day))
    name = {
        "nested": "incoming",
        "hidden": f".{day}.csv",
        "symlink": f"{day}.csv",
        "broken_symlink": f"{day}.csv",
        "folder_batch": f"{day}.csv",
        "fifo": f"{day}.csv",
        "json": f"{day}.json",
        "gz": f"{day}.csv.gz",
        "nodate": "batch.csv",
        "baddate": "2026-02-30.csv",
        "tmp": f"{day}.csv.tmp",
    }[kind]
    path = landing / name
    if kind == "nested":
        (path / "sub").mkdir(parents=True)
        (path / f"{day}.csv").write_bytes(good)
        (path / "sub" / f"{day}.parquet").write_bytes(_parquet(_frame(day)))
    elif kind == "symlink":
        target = outside / f"{day}.csv"
        target.write_bytes(good)
        path.symlink_to(target)
    elif kind == "broken_symlink":
        path.symlink_to(outside / "missing.csv")
    elif kind == "folder_batch":
        path.mkdir()
        (path / "part-0.csv").write_bytes(good)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(good)
    return name


def _landed_names(day: date, case: Case) -> list[str]:
    return [f"{day.isoformat()}{suffix}" for suffix in case.files]


@dataclass
class Landing:
    state: Path
    landing: Path
    content: dict[str, bytes]  # landing name -> bytes, for every batch file landed
    ignored_names: dict[str, str]  # class -> top-level name
    outcomes: dict[date, tuple[str, str]]  # day -> (outcome, one line)
    ignored_lines: list[str]
    published: dict[date, pd.DataFrame]


def _process_pending() -> dict[date, tuple[str, str]]:
    """The landing watcher's per-day steps (ingest, GX gate and publish, materialize) for every pending day."""
    outcomes: dict[date, tuple[str, str]] = {}
    for day in data_steps.pending_landed_days(MODEL):
        start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        end = start + timedelta(days=1)
        try:
            ingested = data_steps.ingest(MODEL, start, end)
            validated = data_steps.validate(MODEL, ingested["interval"], start, end)
            feature_steps.materialize(MODEL, start, end)
            outcomes[date.fromisoformat(day)] = ("published", str(validated["rows"]))
        except errors.GateFailed as exc:
            outcomes[date.fromisoformat(day)] = ("quarantined", str(exc))
        except errors.NothingToDo as exc:
            outcomes[date.fromisoformat(day)] = ("nothing", str(exc))
    return outcomes


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Landing]:
    """Every class landed at once beside good days, then one processing pass over all of it."""
    from mlops.data.ingest import landing_store, scan_landing

    root = tmp_path_factory.mktemp("adversarial")
    state = root / "state"
    state.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_LANDING_URI", "MLOPS_LAKE_URI"):
            mp.delenv(name, raising=False)
        mp.setenv("MLOPS_ENV", "local")
        mp.setenv("MLOPS_STATE_DIR", str(state))
        mp.setenv("MLOPS_MODELS_DIR", str(_models_dir(root)))
        landing = state / "landing" / MODEL
        landing.mkdir(parents=True)
        outside = root / "outside"
        outside.mkdir()
        content: dict[str, bytes] = {}
        for name, case in CASES.items():
            day = DAYS[name]
            for suffix, make in case.files.items():
                content[f"{day.isoformat()}{suffix}"] = make(day)
        content[f"{REPEAT_DAY}.csv"] = _repeats_of_the_day_before(REPEAT_DAY)
        content[f"{DUPLICATE_DAY}.csv"] = content[f"{DAYS['good csv']}.csv"]
        for name, data in content.items():
            (landing / name).write_bytes(data)
        ignored_names = {
            name: _land_ignored(landing, outside, kind, IGNORED_DAYS[name]) for name, (kind, _) in IGNORED.items()
        }
        (landing / "_READY").write_bytes(b"")  # the producer's flag: neither a batch nor reported

        outcomes = _process_pending()
        from mlops.core.config import get_config

        cfg = get_config(MODEL).config
        ignored_lines = scan_landing(cfg, landing_store(cfg, get_settings())).ignored
        published = {day: data_steps.read_validated(MODEL, [day]) for day in data_steps.validated_days(MODEL)}
        yield Landing(state, landing, content, ignored_names, outcomes, ignored_lines, published)


def _raw_objects(state: Path) -> dict[str, bytes]:
    folder = state / "lake" / "raw" / MODEL / "objects"
    return {p.name.split(".")[0]: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _kept_raw(state: Path, data: bytes) -> bool:
    import hashlib

    return _raw_objects(state).get(hashlib.sha256(data).hexdigest()) == data


def _no_repeated_keys(frame: pd.DataFrame) -> bool:
    return not frame.duplicated(KEY).any()


@pytest.mark.parametrize("name", sorted(QUARANTINED))
def test_bad_day_is_quarantined_with_one_line_and_nothing_is_lost(name: str, landed: Landing) -> None:
    case, day = QUARANTINED[name], DAYS[name]
    outcome, line = landed.outcomes[day]
    assert outcome == "quarantined", (name, line)
    assert "\n" not in line and case.reason in line, line
    assert day not in landed.published  # all or nothing: no file of the day is readable
    folder = next((landed.state / "lake" / "quarantine" / MODEL / day.isoformat()).iterdir())
    reason = (folder / "reason.txt").read_text()
    assert reason.count("\n") == 1 and reason.strip() in line
    for landed_name in _landed_names(day, case):
        data = landed.content[landed_name]
        assert (landed.landing / landed_name).read_bytes() == data  # landing untouched
        assert (folder / landed_name).read_bytes() == data  # quarantined byte for byte
        assert _kept_raw(landed.state, data)  # and in the immutable raw store


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_acceptable_day_is_published_once(name: str, landed: Landing) -> None:
    case, day = ACCEPTED[name], DAYS[name]
    outcome, rows = landed.outcomes[day]
    assert outcome == "published", (name, rows)
    frame = landed.published[day]
    assert len(frame) == int(rows) == ROWS and _no_repeated_keys(frame)
    assert list(frame.columns) == list(_frame(day).columns)  # extra columns never reach the lake
    assert str(frame["event_timestamp"].dt.tz) == "UTC"
    assert set(frame["defaulted"].unique()) <= {0, 1}
    partition = landed.state / "lake" / "validated" / MODEL / f"date={day}"
    assert [p.name for p in partition.iterdir()] == ["data.parquet"]
    for landed_name in _landed_names(day, case):
        assert _kept_raw(landed.state, landed.content[landed_name])


def test_mixed_timestamps_are_read_as_utc(landed: Landing) -> None:
    day = DAYS["naive and tz-aware timestamps mixed"]
    stamps = landed.published[day]["event_timestamp"].iloc[:3].tolist()
    base = pd.Timestamp(day.isoformat(), tz="UTC")
    assert stamps == [base + pd.Timedelta(hours=10), base + pd.Timedelta(hours=8), base + pd.Timedelta(hours=9)]


def test_rows_repeating_a_published_day_are_quarantined_not_doubled(landed: Landing) -> None:
    assert REPEAT_DAY - timedelta(days=1) == DAYS["good parquet"] and DAYS["good parquet"] in landed.published
    outcome, line = landed.outcomes[REPEAT_DAY]
    assert outcome == "quarantined" and "\n" not in line, line
    assert f"customer_id+event_timestamp: 3 rows repeat the published day {DAYS['good parquet']}" in line, line
    assert REPEAT_DAY not in landed.published
    assert _kept_raw(landed.state, landed.content[f"{REPEAT_DAY}.csv"])


def test_same_bytes_under_another_day_is_quarantined_not_doubled(landed: Landing) -> None:
    outcome, line = landed.outcomes[DUPLICATE_DAY]
    assert outcome == "quarantined" and "duplicate batch rejected" in line and "\n" not in line
    assert DUPLICATE_DAY not in landed.published
    assert (landed.landing / f"{DUPLICATE_DAY}.csv").exists()
    good = landed.content[f"{DAYS['good csv']}.csv"]
    assert sum(data == good for data in _raw_objects(landed.state).values()) == 1


@pytest.mark.parametrize("name", sorted(IGNORED))
def test_landing_entry_that_is_not_a_batch_is_reported_and_never_read(name: str, landed: Landing) -> None:
    entry = landed.ignored_names[name]
    lines = [line for line in landed.ignored_lines if f"{entry!r}" in line]
    assert len(lines) == 1 and IGNORED[name][1] in lines[0], landed.ignored_lines
    day = IGNORED_DAYS[name]
    assert day not in landed.outcomes and day not in landed.published  # never processed
    assert (landed.landing / entry).is_symlink() or (landed.landing / entry).exists()  # nothing deleted


def test_every_day_settled_once_and_good_days_proceeded(landed: Landing) -> None:
    quarantined = {d for d, (o, _) in landed.outcomes.items() if o == "quarantined"}
    assert len(quarantined) == len(QUARANTINED) + 2  # every bad class, the repeated rows and the duplicate day
    assert set(landed.published) == {DAYS[name] for name in ACCEPTED}
    assert all(_no_repeated_keys(frame) for frame in landed.published.values())
    assert "'_READY'" not in " ".join(landed.ignored_lines)
    assert len(landed.ignored_lines) == len(IGNORED)
    with pytest.MonkeyPatch.context() as mp:  # a second pass: every day is settled, nothing to do
        mp.setenv("MLOPS_STATE_DIR", str(landed.state))
        mp.setenv("MLOPS_MODELS_DIR", str(landed.state.parent / "models"))
        mp.setenv("MLOPS_ENV", "local")
        with pytest.raises(errors.NothingToDo, match="no new batch"):
            data_steps.pending_landed_days(MODEL)


# ----------------------------------------------------------------------------- re-landing, in order


def _land(state: Path, name: str, data: bytes) -> None:
    folder = state / "landing" / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def _run_day(day: date) -> dict[str, Any]:
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    ingested = data_steps.ingest(MODEL, start, start + timedelta(days=1))
    return data_steps.validate(MODEL, ingested["interval"], start, start + timedelta(days=1))


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_corrected_reland_replaces_the_days_snapshot_and_keeps_history(state_dir: Path) -> None:
    lake = open_store(str(state_dir / "lake"))
    first, corrected = _csv(_frame(FIRST)), _csv(_frame(FIRST, 70))
    _land(state_dir, f"{FIRST}.csv", first)
    old = _run_day(FIRST)
    assert old["published"] and old["rows"] == ROWS
    snapshots.mark_materialized(lake, MODEL, FIRST)
    _land(state_dir, f"{FIRST}.csv", corrected)  # the producer re-lands the day, corrected
    assert data_steps.pending_landed_days(MODEL) == [FIRST.isoformat()]
    new = _run_day(FIRST)
    assert new["published"] and new["replaced"] == old["snapshot"] != new["snapshot"]
    partition = state_dir / "lake" / "validated" / MODEL / f"date={FIRST}"
    assert [p.name for p in partition.iterdir()] == ["data.parquet"]  # one version of the day, not two
    frame = data_steps.read_validated(MODEL, [FIRST])
    assert len(frame) == 70 and _no_repeated_keys(frame)
    record = snapshots.current(lake, MODEL, FIRST)
    assert record is not None and record.raw_batches == [_sha(corrected)]
    assert [r.snapshot_id for r in snapshots.history(lake, MODEL, FIRST)] == [old["snapshot"], new["snapshot"]]
    kept = pd.read_parquet(state_dir / "lake" / "snapshots" / MODEL / f"date={FIRST}" / f"{old['snapshot']}.parquet")
    assert len(kept) == ROWS  # the replaced snapshot is history, outside the readers' globs
    assert _kept_raw(state_dir, first) and _kept_raw(state_dir, corrected)


def test_same_bytes_relanded_do_nothing_and_emit_nothing(state_dir: Path) -> None:
    lake = open_store(str(state_dir / "lake"))
    data = _csv(_frame(FIRST))
    start = datetime.combine(FIRST, datetime.min.time(), tzinfo=UTC)
    end = start + timedelta(days=1)
    _land(state_dir, f"{FIRST}.csv", data)
    _run_day(FIRST)
    # Published but not online yet (a crash in between, or the other path is behind): the next path
    # finishes the day without publishing again ...
    again = _run_day(FIRST)
    assert again["published"] is False and again["rows"] == ROWS
    assert feature_steps.materialize(MODEL, start, end)["rows"] == ROWS
    # ... and once it is online, whoever comes second skips at every step (a skipped task emits no event).
    with pytest.raises(errors.NothingToDo, match="already online"):
        feature_steps.materialize(MODEL, start, end)
    with pytest.raises(errors.NothingToDo, match="already published and online"):
        data_steps.validate(MODEL, FIRST.isoformat(), start, end)
    _land(state_dir, f"{FIRST}.csv", data)  # the same bytes re-landed: nothing to do
    with pytest.raises(errors.NothingToDo, match="no new batch"):
        data_steps.pending_landed_days(MODEL)
    with pytest.raises(errors.NothingToDo, match="already published"):
        data_steps.ingest(MODEL, start, end)
    assert len(snapshots.history(lake, MODEL, FIRST)) == 1


def test_two_runs_at_once_for_one_day_publish_it_once(state_dir: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _land(state_dir, f"{FIRST}.csv", _csv(_frame(FIRST)))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: _run_day(FIRST), range(2)))
    assert sorted(r["published"] for r in results) == [False, True]
    assert len(snapshots.history(open_store(str(state_dir / "lake")), MODEL, FIRST)) == 1


def test_leftover_files_in_a_partition_are_never_read(state_dir: Path) -> None:
    from mlops.core.config import get_config
    from mlops.features import store as features

    _land(state_dir, f"{FIRST}.csv", _csv(_frame(FIRST)))
    _run_day(FIRST)
    partition = state_dir / "lake" / "validated" / MODEL / f"date={FIRST}"
    (partition / ".data.parquet.tmp-4242").write_bytes(b"PAR1 half written")  # an old-style temp file
    (partition / "part-0.parquet").write_bytes(b"PAR1 truncated")  # a write cut short by a full disk
    _parquet_bytes = _parquet(_frame(FIRST, 55))
    (partition / "0123456789abcdef.parquet").write_bytes(_parquet_bytes)  # a stale second version
    (state_dir / "lake" / ".staging").mkdir(exist_ok=True)
    (state_dir / "lake" / ".staging" / "data.parquet.1.abc").write_bytes(b"partial")
    assert data_steps.validated_days(MODEL) == [FIRST]
    assert len(data_steps.read_validated(MODEL, [FIRST])) == ROWS
    start = datetime.combine(FIRST, datetime.min.time(), tzinfo=UTC)
    labels = features.labels_for_window(get_config(MODEL).config, start, start + timedelta(days=1))
    assert len(labels) == ROWS and _no_repeated_keys(labels)


def test_a_write_cut_short_leaves_the_old_object_and_nothing_in_the_partition(tmp_path: Path) -> None:
    import errno

    store = open_store(str(tmp_path / "lake"))
    key = "validated/m/date=2026-03-01/data.parquet"
    store.put(key, b"old snapshot")

    def disk_full(out: Any) -> None:
        out.write(b"half of the new")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        store._write_atomic(key, disk_full)  # type: ignore[attr-defined]
    assert store.get(key) == b"old snapshot"
    assert [p.name for p in (tmp_path / "lake" / "validated" / "m" / "date=2026-03-01").iterdir()] == ["data.parquet"]
    assert list((tmp_path / "lake" / ".staging").iterdir()) == []
    assert store.list() == [key]


def test_size_limits_are_checked_before_any_byte_is_parsed(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlops.data.validate

    monkeypatch.setenv("MLOPS_MODELS_DIR", str(_models_dir(tmp_path)))
    parsed: list[str] = []
    real = mlops.data.validate.read_batch

    def spy(data: bytes, fmt: str, **kwargs: Any) -> pd.DataFrame:
        parsed.append(kwargs["name"])
        return real(data, fmt, **kwargs)

    monkeypatch.setattr(mlops.data.validate, "read_batch", spy)
    big = _padded(200)(FIRST)
    assert len(big) > MAX_FILE_MB * 2**20
    _land(state_dir, f"{FIRST}.csv", big)
    with pytest.raises(errors.GateFailed, match=r"2026-03-01.csv is 0\.0\d+ MiB, over data_quality.max_file_mb 0.02"):
        _run_day(FIRST)
    assert parsed == []  # refused from the store's size alone
    assert _kept_raw(state_dir, big)
    second = FIRST + timedelta(days=1)
    _land(state_dir, f"{second}.csv", _csv(_frame(second)))
    assert _run_day(second)["rows"] == ROWS and parsed == [f"{second}.csv"]  # the next day goes through


# ----------------------------------------------------------------------------- the batch reader, fuzzed

CFG = load_config(REPO_ROOT / "include" / "models" / f"{MODEL}.yaml").config
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=4096), fmt=st.sampled_from(["csv", "parquet"]))
def test_reader_on_arbitrary_bytes_parses_or_raises_batch_read_error(data: bytes, fmt: str) -> None:
    try:
        frame = read_batch(data, fmt, name="fuzz", cfg=CFG)
    except BatchReadError as exc:
        assert "\n" not in str(exc)
        return
    with contextlib.suppress(BatchReadError):
        coerce_types(frame, CFG)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frame=data_frames(
        [column(name, elements=_VALUES) for name in [*CFG.all_columns[:4], CFG.label.column]],
    ),
    through_csv=st.booleans(),
)
def test_typing_of_arbitrary_frames_never_raises_another_exception(frame: pd.DataFrame, through_csv: bool) -> None:
    if through_csv:
        try:
            frame = read_batch(frame.to_csv(index=False).encode(), "csv", name="fuzz", cfg=CFG)
        except BatchReadError:
            return
    try:
        typed = coerce_types(frame, CFG)
    except BatchReadError:
        return
    label = typed[CFG.label.column]
    # Never silently mapped: every value that is now a class was already that class (or its text).
    for before, after in zip(frame[CFG.label.column], label, strict=True):
        if after in (0, 1) and not isinstance(after, bool):
            assert str(before).strip().split(".")[0].lstrip("+") in ("0", "1", "-0"), (before, after)


def test_readme_table_is_the_classes_this_suite_tries() -> None:
    """The README's "Reliability: data inputs" table and counts say what these tests assert."""
    import re

    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Reliability: data inputs", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] not in ("input", "---"):
            rows[cells[0]] = (cells[1], cells[2].strip("`"))
    expected = {name: ("quarantined", case.reason) for name, case in QUARANTINED.items()}
    expected["rows repeating another published day"] = ("quarantined", "rows repeat the published day")
    expected["same bytes landed under another day"] = ("quarantined", "duplicate batch rejected")
    expected |= {name: ("published", f"one snapshot of {ROWS} rows") for name in ACCEPTED}
    expected |= {name: ("ignored, reported", reason) for name, (_, reason) in IGNORED.items()}
    assert rows == expected
    counts = re.search(r"\*\*(\d+) classes quarantined, (\d+) published,\s+(\d+) ignored and reported\*\*", section)
    assert counts is not None
    assert tuple(int(n) for n in counts.groups()) == (len(QUARANTINED) + 2, len(ACCEPTED), len(IGNORED))
