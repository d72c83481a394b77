"""A table the platform has never seen, from a sample to a champion: the starter config is inferred, only
the label and the sensitive attributes are chosen, the days are backfilled in one process, and the real
training DAG trains, gates and promotes. String label (Yes/No), a binned numeric sensitive attribute, an
integer 0/1 one, and missing values under both policies (imputed, and rejected beyond a tolerated rate)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.core.config import get_config
from mlops.data import backfill, onboard
from mlops.model import registry

pytestmark = pytest.mark.integration

START = date(2026, 3, 1)
DAYS = 4
ROWS = 160


def churn_table(day: date, rows: int, seed: int, boolean: bool = False) -> pd.DataFrame:
    """A telecom-churn-like day: churn depends on tenure, contract and charges, not on age. The label is
    Yes/No, or True/False with ``boolean`` (pandas reads that column back as a bool)."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, rows).astype(float)
    charges = rng.normal(70, 20, rows).round(2)
    contract = rng.choice(["monthly", "yearly", "two_year"], rows)
    logit = 1.0 - 0.06 * tenure + 1.5 * (contract == "monthly") + 0.02 * (charges - 70)
    churned = rng.random(rows) < 1 / (1 + np.exp(-logit))
    churn = churned if boolean else np.where(churned, "Yes", "No")
    age = rng.integers(18, 85, rows)
    stamps = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 86_000, rows)), unit="s")
    tenure[rng.random(rows) < 0.15] = np.nan  # many nulls: imputed
    charges[np.arange(rows) % 40 == 7] = np.nan  # a few (2.5%): tolerated, rejected beyond twice that
    return pd.DataFrame(
        {
            "customer_id": np.arange(rows) + 10_000 * (day - START).days + 1,
            "event_timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "age": age,
            "senior": (age >= 65).astype(int),
            "tenure_months": tenure,
            "monthly_charges": charges,
            "contract": contract,
            "churned": churn,
        }
    )


@pytest.fixture(params=["yes_no", "boolean"])
def boolean(request: pytest.FixtureRequest) -> bool:
    """The label as strings (Yes/No) or as booleans (True/False)."""
    return bool(request.param == "boolean")


@pytest.fixture
def models_dir(state_dir: Path, monkeypatch: pytest.MonkeyPatch, boolean: bool) -> Iterator[Path]:
    """The models folder the DAG files read, holding the starter config inferred from a sample: made
    before ``run_dag``'s DagBag parses it, with the only choices a person makes (label, sensitive attributes)."""
    folder = state_dir / "models"
    folder.mkdir()
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(folder))
    sample = state_dir / "sample.csv"
    churn_table(START - timedelta(days=30), 400, seed=99, boolean=boolean).to_csv(sample, index=False)
    out = folder / "telco_churn.yaml"
    chosen = ["--label", "churned", "--sensitive", "age,senior"]
    assert onboard.main([str(sample), "--name", "telco_churn", "--out", str(out), *chosen]) == 0
    assert onboard.main([str(sample), "--name", "telco_churn", "--out", str(out), *chosen]) == 1  # never overwrites
    yield folder


def test_sample_to_champion(models_dir: Path, state_dir: Path, run_dag: Callable[..., str], boolean: bool) -> None:
    text = (models_dir / "telco_churn.yaml").read_text()
    # Yes quoted: YAML would read it as a boolean; a True/False column keeps a real boolean.
    assert "column: churned" in text and ("positive_class: true" if boolean else "positive_class: 'Yes'") in text
    cfg = get_config("telco_churn", models_dir).config
    assert cfg.sensitive_attributes == ["age", "senior"]
    assert cfg.sensitive_groups["age"].quantiles == 4 and "senior" in cfg.numeric_columns
    tenure, charges = cfg.data_quality.columns["tenure_months"], cfg.data_quality.columns["monthly_charges"]
    assert (tenure.missing, charges.missing, charges.max_null_fraction) == ("impute", "reject", 0.05)

    landing = state_dir / "landing" / "telco_churn"
    landing.mkdir(parents=True)
    for n in range(DAYS):
        day = START + timedelta(days=n)
        churn_table(day, ROWS, seed=n, boolean=boolean).to_csv(landing / f"{day}.csv", index=False)
    too_many = churn_table(START + timedelta(days=DAYS), ROWS, seed=50, boolean=boolean)
    too_many.loc[:20, "monthly_charges"] = np.nan  # 13%: over the tolerated 5%, the day is quarantined
    too_many.to_csv(landing / f"{START + timedelta(days=DAYS)}.csv", index=False)
    assert backfill.main(["telco_churn", str(START), str(START + timedelta(days=DAYS))]) == 1
    from mlops.data.steps import validated_days

    assert len(validated_days("telco_churn")) == DAYS  # every day but the quarantined one

    conf = {"window_end": (START + timedelta(days=DAYS - 1)).isoformat(), "window_days": DAYS}
    assert run_dag("telco_churn__training", conf=conf) == "success"
    champion = registry.get_alias_version("telco_churn", registry.CHAMPION)
    assert champion is not None
    run = registry.client().get_run(registry.version_tags("telco_churn", champion)["lineage.training_run_id"])
    metrics = run.data.metrics
    age_groups = [k for k in metrics if k.startswith("gate_fairness_group.age.age ")]
    assert len(age_groups) >= 6, sorted(metrics)  # 4 quartile bins x (rate, rows), readable labels
    assert {"gate_fairness_group.senior.0.rows", "gate_fairness_group.senior.1.rows"} <= set(metrics)
    assert metrics["holdout_roc_auc"] >= 0.6
