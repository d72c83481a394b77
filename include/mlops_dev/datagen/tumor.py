"""Daily tumor-diagnosis batches resampled from scikit-learn's bundled breast-cancer data.

The 569 Wisconsin biopsies ship with scikit-learn, so no download is needed. Each day bootstraps rows
from them with a little multiplicative measurement noise, seeded by (seed, day), and adds a synthetic
patient id, timestamp, imaging device and clinic site.
"""

from __future__ import annotations

import datetime as dt
from functools import cache

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer

from mlops_dev.datagen.corrupt import corrupt_rows

EPOCH = dt.date(2026, 1, 1)
DAY_SEED_OFFSET = 1_000_000  # keeps SeedSequence entropy non-negative for days before the epoch
NOISE_SD = 0.015
DRIFT_SCALE = 0.3  # covariate_drift=1 makes every measurement 30% larger
DEVICE_BIAS = {"vendor_a": 1.0, "vendor_b": 1.01}

FEATURES = (
    "mean_radius",
    "mean_texture",
    "mean_perimeter",
    "mean_area",
    "mean_smoothness",
    "mean_compactness",
    "mean_concavity",
    "mean_symmetry",
    "worst_radius",
    "worst_concave_points",
)
IMAGING_DEVICES = ("vendor_a", "vendor_b")
CLINIC_SITES = ("north", "south", "east")
COLUMNS = ("patient_id", "measured_at", *FEATURES, "imaging_device", "clinic_site", "diagnosis")
# Upper bounds of tumor_diagnosis.yaml's data_quality rules; clean rows never leave them.
VALUE_CAPS = {"mean_radius": 50.0, "mean_area": 5000.0, "worst_radius": 60.0}


@cache
def _source() -> tuple[np.ndarray, np.ndarray]:
    """The bundled data as (features in FEATURES order, diagnosis strings); loaded once."""
    data = load_breast_cancer()
    names = [str(n).replace(" ", "_") for n in data.feature_names]
    index = [names.index(f) for f in FEATURES]
    diagnosis = np.asarray(data.target_names, dtype=object)[data.target]
    return np.asarray(data.data[:, index], dtype=np.float64), diagnosis


# Each breaks one data-quality rule of tumor_diagnosis.yaml; planted in turn by ``bad_rows``.
CORRUPTIONS: tuple[tuple[str, object], ...] = (
    ("mean_radius", np.nan),
    ("mean_radius", -3.0),
    ("mean_area", 99_999.0),
    ("imaging_device", "vendor_z"),
    ("clinic_site", "mars"),
    ("worst_radius", 500.0),
    ("mean_texture", np.nan),
    ("imaging_device", None),
)


def generate_tumor_batch(
    day: dt.date,
    *,
    rows_per_batch: int = 120,
    covariate_drift: float = 0.0,
    bad_rows: int = 0,
    seed: int = 11,
) -> pd.DataFrame:
    """One day of biopsies; identical output for identical arguments.

    ``covariate_drift`` (0..1) scales every measurement up; ``bad_rows`` corrupts that many rows.
    """
    if not 0.0 <= covariate_drift <= 1.0:
        raise ValueError(f"covariate_drift must be within 0..1, got {covariate_drift}")
    if not 1 <= rows_per_batch < 100_000:
        raise ValueError(f"rows_per_batch must be within 1..99999, got {rows_per_batch}")
    offset = (day - EPOCH).days
    rng = np.random.default_rng([seed, offset + DAY_SEED_OFFSET, 1])
    features, diagnosis = _source()
    m = rows_per_batch
    picked = rng.integers(0, len(features), m)
    device = rng.choice(len(IMAGING_DEVICES), m, p=[0.6, 0.4])
    site = rng.choice(len(CLINIC_SITES), m, p=[0.4, 0.35, 0.25])
    bias = np.asarray([DEVICE_BIAS[d] for d in IMAGING_DEVICES])[device]
    noise = np.clip(rng.normal(1.0, NOISE_SD, (m, len(FEATURES))), 0.9, 1.1)
    values = features[picked] * noise * bias[:, None] * (1.0 + DRIFT_SCALE * covariate_drift)
    seconds = np.sort(rng.integers(7 * 3600, 19 * 3600, m))
    midnight = pd.Timestamp(day, tz="UTC")

    frame = pd.DataFrame(
        {
            "patient_id": [f"P{offset:03d}{i:05d}" for i in range(m)],
            "measured_at": midnight + pd.to_timedelta(seconds, unit="s"),
        }
    )
    for j, name in enumerate(FEATURES):
        column = np.round(values[:, j], 5)
        frame[name] = np.minimum(column, VALUE_CAPS[name]) if name in VALUE_CAPS else column
    frame["imaging_device"] = np.asarray(IMAGING_DEVICES, dtype=object)[device]
    frame["clinic_site"] = np.asarray(CLINIC_SITES, dtype=object)[site]
    frame["diagnosis"] = diagnosis[picked]
    rng = np.random.default_rng([seed, offset + DAY_SEED_OFFSET, 2])
    return corrupt_rows(frame[list(COLUMNS)], bad_rows, rng, CORRUPTIONS)
