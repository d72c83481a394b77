"""Daily support-ticket batches for the multiclass example (``support_ticket``): priority low/medium/high.

The priority follows a hidden urgency score (long messages, open incidents, enterprise plans and phone
calls raise it; old accounts lower it) plus noise, cut at fixed points, so a model can learn it but not
perfectly. The region is a sensitive attribute that plays no part in the priority.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from mlops_dev.datagen.corrupt import corrupt_rows

EPOCH = dt.date(2026, 1, 1)
DAY_SEED_OFFSET = 1_000_000
PRIORITIES = ("low", "medium", "high")
PLANS = ("free", "pro", "enterprise")
CHANNELS = ("email", "chat", "phone")
REGIONS = ("emea", "amer", "apac")
COLUMNS = (
    "ticket_id",
    "opened_at",
    "message_length",
    "prior_tickets",
    "account_age_days",
    "open_incidents",
    "plan",
    "channel",
    "region",
    "priority",
)
CUTS = (-0.35, 0.75)  # urgency below the first is low, above the second high


# Each breaks one data-quality rule of support_ticket.yaml; planted in turn by ``bad_rows``.
CORRUPTIONS: tuple[tuple[str, object], ...] = (
    ("message_length", np.nan),
    ("message_length", -5.0),
    ("open_incidents", 500.0),
    ("plan", "platinum"),
    ("region", "mars"),
    ("channel", None),
)


def generate_ticket_batch(
    day: dt.date,
    *,
    rows_per_batch: int = 300,
    covariate_drift: float = 0.0,
    bad_rows: int = 0,
    seed: int = 23,
) -> pd.DataFrame:
    """One day of support tickets; identical output for identical arguments.

    ``covariate_drift`` (0..1) makes messages longer and incidents more frequent.
    """
    if not 0.0 <= covariate_drift <= 1.0:
        raise ValueError(f"covariate_drift must be within 0..1, got {covariate_drift}")
    if not 1 <= rows_per_batch < 100_000:
        raise ValueError(f"rows_per_batch must be within 1..99999, got {rows_per_batch}")
    offset = (day - EPOCH).days
    rng = np.random.default_rng([seed, offset + DAY_SEED_OFFSET, 1])
    m = rows_per_batch
    message = np.clip(rng.lognormal(6.0 + 0.5 * covariate_drift, 0.7, m), 20, 5000).round()
    prior = rng.poisson(3, m).clip(0, 50)
    age = rng.integers(0, 3650, m)
    incidents = rng.poisson(1.0 + 2.0 * covariate_drift, m).clip(0, 20)
    plan = rng.choice(len(PLANS), m, p=[0.5, 0.35, 0.15])
    channel = rng.choice(len(CHANNELS), m, p=[0.5, 0.3, 0.2])
    region = rng.choice(len(REGIONS), m, p=[0.4, 0.35, 0.25])
    urgency = (
        0.9 * (np.log(message) - 6.0)
        + 0.45 * incidents
        + np.asarray([0.0, 0.5, 1.1])[plan]
        + np.asarray([0.0, 0.3, 0.8])[channel]
        - 0.25 * age / 1000.0
        - 0.5
        + rng.normal(0.0, 0.45, m)
    )
    priority = np.digitize(urgency, CUTS)
    seconds = np.sort(rng.integers(0, 86_400, m))
    frame = pd.DataFrame(
        {
            "ticket_id": np.arange(m, dtype=np.int64) + (offset + DAY_SEED_OFFSET) * 100_000,
            "opened_at": pd.Timestamp(day, tz="UTC") + pd.to_timedelta(seconds, unit="s"),
            "message_length": message.astype(np.float64),
            "prior_tickets": prior.astype(np.int64),
            "account_age_days": age.astype(np.int64),
            "open_incidents": incidents.astype(np.float64),
            "plan": np.asarray(PLANS, dtype=object)[plan],
            "channel": np.asarray(CHANNELS, dtype=object)[channel],
            "region": np.asarray(REGIONS, dtype=object)[region],
            "priority": np.asarray(PRIORITIES, dtype=object)[priority],
        }
    )
    rng = np.random.default_rng([seed, offset + DAY_SEED_OFFSET, 2])
    return corrupt_rows(frame[list(COLUMNS)], bad_rows, rng, CORRUPTIONS)
