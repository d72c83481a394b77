"""Synthetic credit-risk applications: a seeded population of customers whose profiles evolve by day.

Every quantity for day D is a pure function of ``(seed, n_customers, D)``: the population is drawn
once from the seed, its state on D is ``base + trend * days_since_epoch + noise`` where the noise comes
from a generator keyed on the day. Generating day D therefore never depends on which other days were
generated, so backfills, reruns and parallel writers all see the same rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_dev.datagen.corrupt import corrupt_rows

EPOCH = dt.date(2026, 1, 1)
DAY_SEED_OFFSET = 1_000_000  # keeps SeedSequence entropy non-negative for days before the epoch
CUSTOMER_ID_BASE = 100_000
DAYS_PER_YEAR = 365.25
DAYS_PER_MONTH = 30.4375

HOME_OWNERSHIP = ("RENT", "OWN", "MORTGAGE")
LOAN_PURPOSES = ("debt_consolidation", "home_improvement", "car", "education", "medical", "other")
EMPLOYMENT_TYPES = ("salaried", "self_employed", "unemployed", "retired")
GENDERS = ("female", "male", "other")
AGE_BANDS = ("18-29", "30-49", "50+")
LOAN_TERMS = (12, 24, 36, 48, 60)

COLUMNS = (
    "customer_id",
    "event_timestamp",
    "age",
    "annual_income",
    "debt_to_income",
    "credit_utilization",
    "num_open_accounts",
    "credit_history_months",
    "loan_amount",
    "loan_term_months",
    "interest_rate",
    "home_ownership",
    "loan_purpose",
    "employment_type",
    "gender",
    "age_band",
    "defaulted",
)

_PURPOSE_P = np.array([0.33, 0.15, 0.18, 0.08, 0.07, 0.19])
_PURPOSE_P_DRIFTED = np.array([0.50, 0.06, 0.10, 0.06, 0.18, 0.10])
_TERM_P = np.array([0.10, 0.20, 0.35, 0.15, 0.20])
_PURPOSE_RISK = np.array([0.20, -0.15, -0.10, 0.15, 0.30, 0.0])
_EMPLOYMENT_RISK = np.array([0.0, 0.30, 0.90, 0.0])
_HOME_RISK = np.array([0.25, -0.20, 0.0])
_INTERCEPT = -1.75
_LATENT_SD = 0.9  # unobserved per-customer risk: caps achievable AUC near 0.8


@dataclass(frozen=True)
class _Population:
    """Time-invariant customer traits plus the per-customer trends that move the profile."""

    age0: np.ndarray
    gender: np.ndarray
    employment: np.ndarray
    home: np.ndarray
    log_income0: np.ndarray
    income_trend: np.ndarray
    util0: np.ndarray
    util_amp: np.ndarray
    util_period: np.ndarray
    util_phase: np.ndarray
    util_trend: np.ndarray
    dti0: np.ndarray
    accounts0: np.ndarray
    accounts_rate: np.ndarray
    history0: np.ndarray
    latent: np.ndarray


def _population(seed: int, n: int) -> _Population:
    """Draw the fixed customer population; depends only on seed and size."""
    rng = np.random.default_rng([seed, n, 0])
    age0 = np.clip(rng.normal(42.0, 13.0, n), 18.0, 85.0)
    gender = rng.choice(len(GENDERS), n, p=[0.49, 0.48, 0.03])
    retired_p = np.where(age0 >= 63, 0.70, 0.02)
    u = rng.random(n)
    employment = np.select(
        [u < retired_p, u < retired_p + 0.08, u < retired_p + 0.08 + 0.14],
        [3, 2, 1],
        default=0,
    )
    log_income0 = (
        rng.normal(np.log(55_000.0), 0.45, n)
        + 0.10 * np.tanh((age0 - 30.0) / 12.0)
        + np.choose(employment, [0.0, 0.10, -0.90, -0.35])
    )
    own_score = 0.06 * (age0 - 42.0) + 0.8 * (log_income0 - np.log(55_000.0)) + rng.normal(0, 1.0, n)
    home = np.where(own_score > 1.2, 1, np.where(own_score > -0.3, 2, 0))
    util0 = rng.beta(2.0, 3.5, n)
    dti0 = np.clip(rng.normal(0.30, 0.12, n) + 0.15 * (util0 - 0.36), 0.01, 1.5)
    history0 = np.floor(rng.uniform(0.2, 0.9, n) * (age0 - 17.5) * 12.0)
    return _Population(
        age0=age0,
        gender=gender,
        employment=employment,
        home=home,
        log_income0=log_income0,
        income_trend=rng.normal(0.02, 0.03, n),
        util0=util0,
        util_amp=rng.uniform(0.0, 0.15, n),
        util_period=rng.uniform(60.0, 365.0, n),
        util_phase=rng.uniform(0.0, 2 * np.pi, n),
        util_trend=rng.normal(0.0, 0.05, n),
        dti0=dti0,
        accounts0=rng.poisson(3.0 + 5.0 * util0),
        accounts_rate=rng.uniform(0.0, 2.0, n),
        history0=history0,
        latent=rng.normal(0.0, _LATENT_SD, n),
    )


def _day_rng(seed: int, n: int, offset: int, stream: int) -> np.random.Generator:
    """A generator keyed on (seed, population size, day, stream) so days are independent."""
    return np.random.default_rng([seed, n, offset + DAY_SEED_OFFSET, stream])


def _check_knob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within 0..1, got {value}")


def _risk_logit(
    frame: pd.DataFrame,
    *,
    latent: np.ndarray,
    employment: np.ndarray,
    home: np.ndarray,
    purpose: np.ndarray,
    concept_drift: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (observable risk as priced by the lender, true default logit after concept drift)."""
    log_income = np.log(frame["annual_income"].to_numpy())
    util_z = (frame["credit_utilization"].to_numpy() - 0.40) / 0.25
    dti_z = (frame["debt_to_income"].to_numpy() - 0.35) / 0.15
    income_z = (log_income - np.log(55_000.0)) / 0.5
    history_z = (frame["credit_history_months"].to_numpy() - 120.0) / 80.0
    burden_z = (frame["loan_amount"].to_numpy() / frame["annual_income"].to_numpy() - 0.25) / 0.15
    term_z = (frame["loan_term_months"].to_numpy() - 36.0) / 16.0
    age_z = (frame["age"].to_numpy() - 42.0) / 13.0
    accounts_z = (frame["num_open_accounts"].to_numpy() - 6.0) / 3.0
    rest = (
        0.70 * dti_z
        - 0.50 * income_z
        - 0.10 * history_z
        + 0.35 * np.clip(burden_z, -3, 6)
        + 0.20 * term_z
        - 0.03 * age_z
        + 0.15 * accounts_z
        + _EMPLOYMENT_RISK[employment]
        + _HOME_RISK[home]
        + _PURPOSE_RISK[purpose]
    )
    priced = _INTERCEPT + 0.9 * util_z + rest
    # Concept drift: utilisation stops signalling risk and then inverts, debt load matters more.
    util_weight = 0.9 * (1.0 - 2.0 * concept_drift)
    true = _INTERCEPT + util_weight * util_z + rest + 0.5 * concept_drift * dti_z + latent
    return priced, true


def _age_band(age: np.ndarray) -> np.ndarray:
    return np.where(age < 30, AGE_BANDS[0], np.where(age < 50, AGE_BANDS[1], AGE_BANDS[2]))


# Each breaks one data-quality rule of credit_risk.yaml; planted in turn by ``bad_rows``.
CORRUPTIONS: tuple[tuple[str, object], ...] = (
    ("annual_income", np.nan),
    ("age", 250),
    ("annual_income", -5_000.0),
    ("home_ownership", "CASTLE"),
    ("credit_utilization", 3.5),
    ("loan_purpose", None),
    ("employment_type", "astronaut"),
    ("debt_to_income", np.nan),
    ("num_open_accounts", -3),
    ("gender", None),
)


def generate_credit_batch(
    day: dt.date,
    *,
    rows_per_batch: int = 400,
    covariate_drift: float = 0.0,
    concept_drift: float = 0.0,
    bad_rows: int = 0,
    seed: int = 7,
    n_customers: int | None = None,
) -> pd.DataFrame:
    """One day of loan applications; identical output for identical arguments.

    ``covariate_drift`` lowers incomes, raises utilisation and debt-to-income and moves the purpose mix;
    ``concept_drift`` changes how utilisation relates to default; ``bad_rows`` corrupts that many rows.
    """
    _check_knob("covariate_drift", covariate_drift)
    _check_knob("concept_drift", concept_drift)
    if rows_per_batch < 1:
        raise ValueError(f"rows_per_batch must be positive, got {rows_per_batch}")
    n = n_customers if n_customers is not None else max(2000, rows_per_batch * 5)
    if rows_per_batch > n:
        raise ValueError(f"rows_per_batch={rows_per_batch} exceeds the population of {n} customers")
    pop = _population(seed, n)
    offset = (day - EPOCH).days
    years = offset / DAYS_PER_YEAR
    state_rng = _day_rng(seed, n, offset, 1)
    app_rng = _day_rng(seed, n, offset, 2)

    # Profile state of every customer on this day.
    age = np.floor(pop.age0 + years).astype(np.int64)
    log_income = pop.log_income0 + pop.income_trend * years + state_rng.normal(0, 0.03, n) - 0.25 * covariate_drift
    income = np.clip(np.exp(log_income), 1_000.0, 4_000_000.0)
    season = pop.util_amp * np.sin(2 * np.pi * offset / pop.util_period + pop.util_phase)
    util = np.clip(
        pop.util0 + season + pop.util_trend * years + state_rng.normal(0, 0.03, n) + 0.15 * covariate_drift,
        0.0,
        1.2,
    )
    dti = np.clip(pop.dti0 + 0.1 * (util - pop.util0) + state_rng.normal(0, 0.02, n) + 0.10 * covariate_drift, 0.0, 3.0)
    accounts = np.clip(pop.accounts0 + np.floor(pop.accounts_rate * max(years, 0.0)), 0, 60).astype(np.int64)
    history = np.clip(pop.history0 + np.floor(offset / DAYS_PER_MONTH), 0, 900).astype(np.int64)

    # Who applies today (at most once each) and for what.
    propensity = 0.5 + util
    chosen = np.sort(app_rng.choice(n, rows_per_batch, replace=False, p=propensity / propensity.sum()))
    m = rows_per_batch
    purpose_p = (1 - covariate_drift) * _PURPOSE_P + covariate_drift * _PURPOSE_P_DRIFTED
    purpose = app_rng.choice(len(LOAN_PURPOSES), m, p=purpose_p)
    term = np.asarray(LOAN_TERMS)[app_rng.choice(len(LOAN_TERMS), m, p=_TERM_P)]
    ratio = np.exp(app_rng.normal(np.log(0.2), 0.5, m)) * np.where(purpose == 1, 1.4, 1.0)
    loan_amount = np.clip(np.round(income[chosen] * ratio, -1), 500.0, 1_000_000.0)
    seconds = np.sort(app_rng.choice(86_400, m, replace=False))
    midnight = pd.Timestamp(day, tz="UTC")
    timestamps = midnight + pd.to_timedelta(seconds, unit="s")

    frame = pd.DataFrame(
        {
            "customer_id": (CUSTOMER_ID_BASE + chosen).astype(np.int64),
            "event_timestamp": timestamps,
            "age": age[chosen],
            "annual_income": np.round(income[chosen], 2),
            "debt_to_income": np.round(dti[chosen], 4),
            "credit_utilization": np.round(util[chosen], 4),
            "num_open_accounts": accounts[chosen],
            "credit_history_months": history[chosen],
            "loan_amount": loan_amount,
            "loan_term_months": term.astype(np.int64),
        }
    )
    priced, true_logit = _risk_logit(
        frame,
        latent=pop.latent[chosen],
        employment=pop.employment[chosen],
        home=pop.home[chosen],
        purpose=purpose,
        concept_drift=concept_drift,
    )
    rate = 0.04 + 0.28 / (1.0 + np.exp(-(priced + 0.5))) + app_rng.normal(0, 0.01, m)
    frame["interest_rate"] = np.round(np.clip(rate, 0.03, 0.35), 4)
    frame["home_ownership"] = np.asarray(HOME_OWNERSHIP, dtype=object)[pop.home[chosen]]
    frame["loan_purpose"] = np.asarray(LOAN_PURPOSES, dtype=object)[purpose]
    frame["employment_type"] = np.asarray(EMPLOYMENT_TYPES, dtype=object)[pop.employment[chosen]]
    frame["gender"] = np.asarray(GENDERS, dtype=object)[pop.gender[chosen]]
    frame["age_band"] = _age_band(frame["age"].to_numpy()).astype(object)
    default_p = 1.0 / (1.0 + np.exp(-true_logit))
    frame["defaulted"] = (app_rng.random(m) < default_p).astype(np.int64)
    frame = frame.sort_values(["event_timestamp", "customer_id"], ignore_index=True)
    return corrupt_rows(frame[list(COLUMNS)], bad_rows, _day_rng(seed, n, offset, 3), CORRUPTIONS)
