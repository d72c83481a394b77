"""A small version of `make bench`: the harness runs every measured step and writes its three outputs.

The full benchmark (100k and 1M rows or more, and the run through real Airflow) takes the better part of
an hour on two cores, so `make test` runs this smoke version: 3,000 rows, two pipeline runs in one process
(two DAG parses, one timing of the canary split), no real-Airflow phase (the scheduler-driven tests in
tests/integration/ cover that path).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_dev import bench


@pytest.mark.timeout(2400)
def test_bench_harness_measures_every_stage_and_writes_its_outputs(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    results = bench.run(
        [3000],
        days=3,
        repeats=2,
        out_dir=out,
        airflow_rows=None,
        drift_full_max_rows=3000,
        parse_repeats=2,
        rollout_repeats=1,
    )

    saved = json.loads((out / "results.json").read_text())
    assert saved["machine"]["cpu_count"] >= 1 and saved["machine"]["memory_gib"] > 0
    for probe in ("speed_probe_start", "speed_probe_end"):  # what makes runs on other days comparable
        assert saved[probe]["python_s"] > 0 and saved[probe]["numpy_s"] > 0, probe
    size = saved["sizes"]["3000"]
    assert set(size["stages"]) == set(bench.STAGES)
    for stage, timing in size["stages"].items():
        assert timing["runs"] == 2 and timing["min_s"] <= timing["median_s"] <= timing["max_s"], stage
        assert timing["median_s"] > 0 and timing["peak_rss_mib"] > 50, stage
        assert 50 < timing["peak_process_mib"] <= timing["peak_rss_mib"], stage
    assert size["total_s"] == round(sum(t["median_s"] for t in size["stages"].values()), 2)

    # Drift at scale: the planted shift is found with the gate's sampling and on every row.
    drift = size["drift"]
    assert drift["features"] == 32
    assert drift["sampled"]["drifted_features"] and drift["every_row"]["drifted_features"]
    assert drift["detection"]["found_by_both"] >= 1

    # The GX gate on every row as one batch: the clean generated data passes every expectation.
    one_batch = size["validate_one_batch"]
    assert one_batch["rows"] == 3000 and one_batch["success"] is True and one_batch["failures"] == []
    assert one_batch["expectations"] > 32 and one_batch["median_s"] > 0

    # Online lookups on SQLite and on the local Redis (its own database, flushed afterwards).
    assert 0 < size["online"]["p50_ms"] <= size["online"]["p99_ms"]
    redis = size["online_redis"]
    assert "error" not in redis, redis
    assert 0 < redis["p50_ms"] <= redis["p99_ms"] and redis["materialize_rows_per_s"] > 0

    parse = saved["dag_parse"]
    assert parse["queries"] == 0 and parse["import_errors"] == 0
    assert {f["file"] for f in parse["files"]} >= {"model_data.py", "model_training.py", "model_landing.py"}

    # The canary split's cost and the abort latency (the figures `make bench` reports at 1M rows).
    split = saved["rollout"]
    assert split["rows"] > 2000 and split["single_s"] > 0 and split["overhead_ratio"] > 0
    assert 0 < split["abort_to_scoring_s"] < split["abort_to_flag_s"] <= 5

    targets = {t["target"]: t for t in saved["targets"]}
    assert targets["abort -> zero share seen by the next scoring run (s)"]["met"] is True
    assert targets["DB queries while parsing"]["met"] is True
    assert results["targets"] == saved["targets"]
    table = (out / "results.md").read_text()
    assert "Speed probe (fixed CPU workload" in table.splitlines()[0]
    assert "| validate |" in table and "| target | measured | limit | met |" in table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "work").exists()  # generated data is removed
