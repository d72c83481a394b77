"""Daily food-delivery batches for the regression example (``delivery_time``): minutes to deliver.

Minutes grow with distance (slower by bike), items, preparation time, rush hours and bad weather, plus
noise. The city zone is a sensitive attribute that plays no part in the time.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from mlops_dev.datagen.corrupt import corrupt_rows

EPOCH = dt.date(2026, 1, 1)
DAY_SEED_OFFSET = 1_000_000
WEATHER = ("clear", "rain", "snow")
VEHICLES = ("bike", "scooter", "car")
ZONES = ("north", "south", "center")
COLUMNS = (
    "order_id",
    "ordered_at",
    "distance_km",
    "items",
    "prep_minutes",
    "hour_of_day",
    "weather",
    "vehicle",
    "zone",
    "delivery_minutes",
)


# Each breaks one data-quality rule of delivery_time.yaml; planted in turn by ``bad_rows``.
CORRUPTIONS: tuple[tuple[str, object], ...] = (
    ("distance_km", np.nan),
    ("distance_km", -1.0),
    ("prep_minutes", 900.0),
    ("weather", "hail"),
    ("zone", "mars"),
    ("vehicle", None),
)


def generate_delivery_batch(
    day: dt.date,
    *,
    rows_per_batch: int = 300,
    covariate_drift: float = 0.0,
    bad_rows: int = 0,
    seed: int = 29,
) -> pd.DataFrame:
    """One day of deliveries; identical output for identical arguments.

    ``covariate_drift`` (0..1) makes trips longer (up to 60% more distance).
    """
    if not 0.0 <= covariate_drift <= 1.0:
        raise ValueError(f"covariate_drift must be within 0..1, got {covariate_drift}")
    if not 1 <= rows_per_batch < 100_000:
        raise ValueError(f"rows_per_batch must be within 1..99999, got {rows_per_batch}")
    offset = (day - EPOCH).days
    rng = np.random.default_rng([seed, offset + DAY_SEED_OFFSET, 1])
    m = rows_per_batch
    distance = np.clip(rng.gamma(2.0, 1.8, m) * (1.0 + 0.6 * covariate_drift), 0.2, 30.0).round(2)
    items = rng.integers(1, 12, m)
    prep = np.clip(rng.normal(15, 6, m), 2, 90).round(1)
    hour = rng.integers(10, 23, m)
    weather = rng.choice(len(WEATHER), m, p=[0.7, 0.22, 0.08])
    vehicle = rng.choice(len(VEHICLES), m, p=[0.4, 0.35, 0.25])
    zone = rng.choice(len(ZONES), m, p=[0.35, 0.35, 0.3])
    pace = np.asarray([4.0, 2.8, 2.2])[vehicle]  # minutes per km
    rush = np.isin(hour, (12, 13, 18, 19, 20)).astype(float)
    minutes = (
        6.0
        + pace * distance
        + 0.6 * items
        + prep
        + 6.0 * rush
        + np.asarray([0.0, 5.0, 12.0])[weather]
        + rng.normal(0.0, 3.0, m)
    )
    seconds = np.sort(rng.integers(10 * 3600, 23 * 3600, m))
    frame = pd.DataFrame(
        {
            "order_id": np.arange(m, dtype=np.int64) + (offset + DAY_SEED_OFFSET) * 100_000,
            "ordered_at": pd.Timestamp(day, tz="UTC") + pd.to_timedelta(seconds, unit="s"),
            "distance_km": distance,
            "items": items.astype(np.int64),
            "prep_minutes": prep,
            "hour_of_day": hour.astype(np.int64),
            "weather": np.asarray(WEATHER, dtype=object)[weather],
            "vehicle": np.asarray(VEHICLES, dtype=object)[vehicle],
            "zone": np.asarray(ZONES, dtype=object)[zone],
            "delivery_minutes": np.clip(minutes, 3.0, None).round(1),
        }
    )
    rng = np.random.default_rng([seed, offset + DAY_SEED_OFFSET, 2])
    return corrupt_rows(frame[list(COLUMNS)], bad_rows, rng, CORRUPTIONS)
