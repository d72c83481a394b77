"""The estimator allow-list and the parse-time checks that stand in for the real libraries.

Config loading must not import scikit-learn or XGBoost (it runs at DAG parse time), so the parameter
table, the cron check and the cron presets are static copies: these tests keep each one equal to the
real thing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mlops.core.config import CRON_PRESETS, ConfigError, check_cron, check_estimator_overrides, get_config
from mlops.core.settings import SettingsError, extra_estimators
from mlops.model import estimators
from mlops.model.estimators import FAMILIES, EstimatorParamError, check_params, params_json_schema, signature_params

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "include" / "models"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_parameter_table_matches_the_real_constructor(family: str) -> None:
    spec = FAMILIES[family]
    assert set(spec.params) == signature_params(spec), family
    assert estimators.estimator_class(family).__module__.split(".")[0] == spec.class_path.split(".")[0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_accepted_shape_is_accepted_by_the_real_class(family: str) -> None:
    """A value the table accepts at its bound constructs the real estimator and survives get_params."""
    cls = estimators.estimator_class(family)
    for name, param in FAMILIES[family].params.items():
        for accepts in param.accepts:
            value: Any
            if accepts.type == "null":
                value = None
            elif accepts.type == "bool":
                value = True
            elif accepts.type == "str":
                value = accepts.choices[0] if accepts.choices else "cpu"
            elif accepts.type == "list":
                value = [1.0]
            else:
                value = accepts.maximum if accepts.maximum is not None else 1
            assert check_params(family, {name: value}) == {name: value}
            assert cls(**{name: value}).get_params()[name] == value, (family, name, value)


def test_check_params_refuses_names_types_ranges_and_object_params() -> None:
    with pytest.raises(EstimatorParamError, match="unknown parameter 'command'") as err:
        check_params("xgboost", {"command": "id"})
    assert err.value.key == "params.command"
    for bad in ({"n_estimators": 1.5}, {"n_estimators": 0}, {"learning_rate": float("inf")}, {"subsample": 0}):
        with pytest.raises(EstimatorParamError):
            check_params("xgboost", bad)
    with pytest.raises(EstimatorParamError, match="cannot be set from a config"):
        check_params("hist_gradient_boosting", {"monotonic_cst": [1, -1]})
    assert check_params("random_forest", {"max_features": 0.5, "n_estimators": 10}) == {
        "max_features": 0.5,
        "n_estimators": 10,
    }


@pytest.mark.parametrize(
    ("family", "params", "ok"),
    [
        ("xgboost", {"n_estimators": 60, "max_depth": 3, "tree_method": "hist"}, True),
        ("xgboost", {"n_estimators": 0}, False),
        ("xgboost", {"n": 1}, False),
        ("xgboost", {"device": "cuda:0"}, True),
        ("xgboost", {"device": "cuda; id"}, False),
        ("xgboost", {"callbacks": []}, False),
        ("logistic_regression", {"C": 0}, False),
        ("logistic_regression", {"C": 0.5, "solver": "saga"}, True),
        ("random_forest", {"max_features": "sqrt"}, True),
        ("random_forest", {"max_features": 1.5}, False),
        ("hist_gradient_boosting", {"early_stopping": "auto", "max_bins": 255}, True),
        ("hist_gradient_boosting", {"max_bins": 256}, False),
        ("extra_trees", {"class_weight": "balanced_subsample"}, True),
    ],
)
def test_form_json_schema_agrees_with_the_loader_check(family: str, params: dict[str, Any], ok: bool) -> None:
    schema = params_json_schema(family)
    schema_ok = jsonschema.Draft7Validator(schema).is_valid(params)
    try:
        check_params(family, params)
        loader_ok = True
    except EstimatorParamError:
        loader_ok = False
    assert (schema_ok, loader_ok) == (ok, ok)


def test_training_form_overrides_use_the_loaders_check() -> None:
    cfg = get_config("credit_risk", MODELS).config
    merged = check_estimator_overrides(cfg, {"n_estimators": 10})
    assert merged["n_estimators"] == 10 and merged["max_depth"] == cfg.training.estimator.params["max_depth"]
    with pytest.raises(ConfigError, match=r"key 'params\.max_depth'"):
        check_estimator_overrides(cfg, {"max_depth": -1})
    with pytest.raises(ConfigError, match="JSON object"):
        check_estimator_overrides(cfg, [1])


def test_cron_presets_are_airflows() -> None:
    from airflow.utils.dates import cron_presets

    assert cron_presets == CRON_PRESETS


@pytest.mark.parametrize(
    "expression",
    [
        "0 3 * * 0",
        "*/5 * * * *",
        "0 0 1 */3 *",
        "@weekly",
        "@quarterly",
        "61 * * * *",
        "* * * *",
        "0 24 * * *",
        "0 0 0 * *",
        "0 0 * 13 *",
        "0 0 * * 8",
        "x y z a b",
        "@reboot",
        "0 0 31 2 *",
        "0 3 * * 0 0",
        "0 3 * * mon-fri",
    ],
)
def test_a_cron_airflow_rejects_never_loads(expression: str) -> None:
    """Airflow's own timetable decides; the loader is at least as strict (stricter only on crons that never fire)."""
    from airflow.exceptions import AirflowTimetableInvalid
    from airflow.timetables.trigger import CronTriggerTimetable

    try:
        CronTriggerTimetable(expression, timezone="UTC").validate()
        airflow_ok = True
    except (AirflowTimetableInvalid, ValueError):
        airflow_ok = False
    try:
        check_cron(expression)
        ours_ok = True
    except ValueError:
        ours_ok = False
    assert not (ours_ok and not airflow_ok), expression
    if airflow_ok and not ours_ok:
        assert expression in ("0 0 31 2 *", "0 3 * * 0 0", "@reboot"), expression  # never fires / not 5 fields


def test_only_the_platform_environment_extends_the_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.model import train

    monkeypatch.delenv("MLOPS_EXTRA_ESTIMATORS", raising=False)
    with pytest.raises(EstimatorParamError, match="unknown estimator family 'ridge_classifier'"):
        check_params("ridge_classifier", {})
    monkeypatch.setenv("MLOPS_EXTRA_ESTIMATORS", "ridge_classifier=sklearn.linear_model.RidgeClassifier")
    assert extra_estimators() == {"ridge_classifier": "sklearn.linear_model.RidgeClassifier"}
    assert check_params("ridge_classifier", {"alpha": 0.5}) == {"alpha": 0.5}
    with pytest.raises(EstimatorParamError, match="plain number"):
        check_params("ridge_classifier", {"alpha": {"nested": 1}})
    estimator, device = train.build_estimator("ridge_classifier", {"alpha": 0.5}, use_gpu=True)
    assert type(estimator).__name__ == "RidgeClassifier" and device == "cpu"
    with pytest.raises(ValueError, match="takes no parameter"):
        train.build_estimator("ridge_classifier", {"not_a_param": 1}, use_gpu=False)
    for bad in ("xgboost=os.system", "ridge_classifier", "Bad=x.Y", "ok=not a path", "a=b.C,a=b.D"):
        monkeypatch.setenv("MLOPS_EXTRA_ESTIMATORS", bad)
        with pytest.raises(SettingsError):
            extra_estimators()
    monkeypatch.setenv("MLOPS_EXTRA_ESTIMATORS", "ridge_classifier")
    with pytest.raises(EstimatorParamError, match="MLOPS_EXTRA_ESTIMATORS"):
        check_params("ridge_classifier", {})
    assert check_params("xgboost", {}) == {}  # a broken setting does not break the built-in families


def test_loading_configs_imports_no_ml_library() -> None:
    code = (
        "import sys, json; from pathlib import Path; from mlops.core.config import discover; "
        f"good, bad = discover(Path({str(MODELS)!r})); "
        "print(json.dumps([len(good), len(bad), sorted({m.split('.')[0] for m in sys.modules} "
        "& {'sklearn', 'xgboost', 'pandas', 'numpy', 'airflow'})]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [len(list(MODELS.glob("*.yaml"))), 0, []]


def test_check_command_lists_every_problem(tmp_path: Path) -> None:
    clean = subprocess.run(
        [sys.executable, "-m", "mlops.core.config", "--check", str(MODELS)], check=False, capture_output=True, text=True
    )
    assert clean.returncode == 0, clean.stderr
    (tmp_path / "credit_risk.yaml").write_text((MODELS / "credit_risk.yaml").read_text())
    (tmp_path / "tumor_diagnosis.yaml").write_text(
        (MODELS / "tumor_diagnosis.yaml").read_text().replace("family: logistic_regression", "class: os.system")
    )
    (tmp_path / "copy.yaml").write_text(
        (MODELS / "credit_risk.yaml").read_text().replace("name: credit_risk", "name: copy")
    )
    bad = subprocess.run(
        [sys.executable, "-m", "mlops.core.config", "--check", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    lines = [line for line in bad.stderr.splitlines() if line.startswith(str(tmp_path))]
    assert len(lines) == 3  # the code-naming file, and both files of the landing conflict
    assert any("tumor_diagnosis.yaml: key 'training.estimator.class'" in line for line in lines)
    assert sum("key 'source.landing'" in line for line in lines) == 2
    empty = subprocess.run(
        [sys.executable, "-m", "mlops.core.config", "--check", str(tmp_path / "none")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert empty.returncode == 1


def test_the_training_image_can_load_a_config() -> None:
    """The pod loads its model config too: every library the loader imports is in the training image."""
    code = (
        "import sys, json; from pathlib import Path; from mlops.core.config import discover; "
        f"discover(Path({str(MODELS)!r})); "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules if not m.startswith('_')})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    third_party = set(json.loads(out.stdout)) & {"yaml", "pydantic", "croniter", "airflow", "sklearn", "xgboost"}
    installed = {"yaml": "pyyaml", "pydantic": "pydantic", "croniter": "croniter"}
    dockerfile = (REPO / "deploy" / "docker" / "training.Dockerfile").read_text()
    assert third_party == set(installed)
    for module in third_party:
        assert f" {installed[module]} " in dockerfile, module
