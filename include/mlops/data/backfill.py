"""Backfill landed days in one process: ``python -m mlops.data.backfill MODEL START END`` (``make backfill``).

Runs, for every day from START to END inclusive (oldest first), the data DAG's steps: ingest, the Great
Expectations gate and Feast materialization, exactly as the ``<model>__landing`` run does. The day named is
the day processed (the batch files ``YYYY-MM-DD*.csv|parquet`` of that date). A bad day is quarantined and
the others still go through; a day already published and materialized is skipped. One process instead of
one ``airflow dags test`` per day: start-up (Airflow, GX, Feast imports) is paid once.

No Asset events are emitted (no Airflow run): train afterwards with
``airflow dags test <model>__training -c '{"window_end": "END", "window_days": N}'``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import date, timedelta

from mlops.core.errors import NothingToDo


def days_between(start: date, end: date) -> list[str]:
    """Every day from ``start`` to ``end`` inclusive, as ISO dates; refuses an empty or reversed range."""
    if end < start:
        raise ValueError(f"END {end} is before START {start}")
    if (end - start).days > 3660:
        raise ValueError(f"{start}..{end} is more than ten years of days: backfill it in parts")
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops.data.backfill", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="model name (include/models/<model>.yaml)")
    parser.add_argument("start", type=date.fromisoformat, help="first day, YYYY-MM-DD")
    parser.add_argument("end", type=date.fromisoformat, help="last day, YYYY-MM-DD (inclusive)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from mlops.data.steps import process_landed

    began = time.monotonic()
    try:
        result = process_landed(args.model, days_between(args.start, args.end))
    except NothingToDo as exc:
        print(f"backfill {args.model}: {exc}")
        return 0
    except ValueError as exc:
        print(f"backfill {args.model}: {exc}", file=sys.stderr)
        return 2
    result["seconds"] = round(time.monotonic() - began, 1)
    print(json.dumps(result, default=str, indent=2))
    for line in result["quarantined"]:
        print(f"quarantined: {line}", file=sys.stderr)
    return 1 if result["quarantined"] else 0


if __name__ == "__main__":
    sys.exit(main())
