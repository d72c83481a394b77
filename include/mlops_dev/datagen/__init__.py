"""Deterministic synthetic daily batches for the example models, written into a landing folder.

``python -m mlops_dev.datagen --model credit_risk --landing DIR --start 2026-03-01 --days 10`` writes one
``YYYY-MM-DD.csv`` (or ``.parquet``) per day. The same arguments always produce the same files, so a
demo, a test and a backfill can regenerate exactly the data an earlier run saw.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_dev.datagen.credit import generate_credit_batch
from mlops_dev.datagen.delivery import generate_delivery_batch
from mlops_dev.datagen.tickets import generate_ticket_batch
from mlops_dev.datagen.tumor import generate_tumor_batch

GENERATORS: dict[str, Callable[..., pd.DataFrame]] = {
    "credit_risk": generate_credit_batch,
    "tumor_diagnosis": generate_tumor_batch,
    "support_ticket": generate_ticket_batch,  # multiclass
    "delivery_time": generate_delivery_batch,  # regression
}
FORMATS = ("csv", "parquet")
DRIFT_KNOBS = ("covariate_drift", "concept_drift")

__all__ = [
    "GENERATORS",
    "generate_credit_batch",
    "generate_delivery_batch",
    "generate_ticket_batch",
    "generate_tumor_batch",
    "main",
    "write_batch",
    "write_batches",
]


def _generator(model: str) -> Callable[..., pd.DataFrame]:
    try:
        return GENERATORS[model]
    except KeyError:
        raise ValueError(f"no generator for model '{model}'; known: {sorted(GENERATORS)}") from None


def _check_knobs(model: str, knobs: dict[str, Any]) -> None:
    """Reject knobs the model's generator does not take, naming the ones it does."""
    accepted = set(inspect.signature(_generator(model)).parameters) - {"day"}
    unknown = set(knobs) - accepted
    if unknown:
        raise ValueError(f"model '{model}' does not take {sorted(unknown)}; it takes {sorted(accepted)}")


def write_batch(frame: pd.DataFrame, path: Path) -> Path:
    """Write one batch; CSV timestamps become ISO-8601 with offset so they read back tz-aware."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        out = frame.copy()
        for column in out.columns:
            if isinstance(out[column].dtype, pd.DatetimeTZDtype):
                out[column] = out[column].map(lambda ts: ts.isoformat())
        out.to_csv(path, index=False)
    else:
        raise ValueError(f"unknown batch format '{path.suffix}'; use one of {FORMATS}")
    return path


def write_batches(
    model: str,
    landing_dir: Path,
    start: dt.date,
    days: int,
    *,
    fmt: str = "csv",
    ramp: bool = False,
    **knobs: Any,
) -> list[Path]:
    """Write ``days`` daily files ``YYYY-MM-DD.<fmt>`` from ``start`` into ``landing_dir``.

    ``knobs`` go to the model's generator. With ``ramp`` the drift knobs grow linearly over the days,
    reaching the given value on the last one, so drift arrives progressively.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}'; use one of {FORMATS}")
    generate = _generator(model)
    _check_knobs(model, knobs)
    landing_dir = Path(landing_dir)
    landing_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for i in range(days):
        day = start + dt.timedelta(days=i)
        day_knobs = dict(knobs)
        if ramp:
            for name in DRIFT_KNOBS:
                if name in day_knobs:
                    day_knobs[name] = float(day_knobs[name]) * (i + 1) / days
        paths.append(write_batch(generate(day, **day_knobs), landing_dir / f"{day.isoformat()}.{fmt}"))
    return paths


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlops_dev.datagen", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, choices=sorted(GENERATORS))
    parser.add_argument("--landing", required=True, type=Path, help="folder to write the daily files into")
    parser.add_argument("--start", required=True, type=dt.date.fromisoformat, help="first day, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=1, help="number of consecutive days (default 1)")
    parser.add_argument("--rows", type=int, default=None, help="rows per batch (generator default)")
    parser.add_argument("--covariate-drift", type=float, default=None, help="0..1")
    parser.add_argument("--concept-drift", type=float, default=None, help="0..1 (credit_risk only)")
    parser.add_argument("--bad-rows", type=int, default=None, help="rows that break data-quality rules")
    parser.add_argument("--seed", type=int, default=None, help="generator seed (generator default)")
    parser.add_argument("--ramp", action="store_true", help="grow the drift knobs linearly over the days")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="csv")
    parser.add_argument(
        "--ready-flag",
        default=None,
        metavar="NAME",
        help="after writing, create this empty file in the landing folder (e.g. _READY) so the landing "
        "watcher picks the batches up",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: print one line per file written."""
    args = _parser().parse_args(argv)
    given = {
        "rows_per_batch": args.rows,
        "covariate_drift": args.covariate_drift,
        "concept_drift": args.concept_drift,
        "bad_rows": args.bad_rows,
        "seed": args.seed,
    }
    knobs = {k: v for k, v in given.items() if v is not None}
    try:
        paths = write_batches(args.model, args.landing, args.start, args.days, fmt=args.fmt, ramp=args.ramp, **knobs)
    except ValueError as exc:
        _parser().error(str(exc))
    for path in paths:
        print(path)
    if args.ready_flag:
        flag = Path(args.landing) / args.ready_flag
        flag.touch()
        print(flag)
    return 0
