"""DAG integrity: every DAG imports, carries docs/tags/retries, and parsing does no work."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
MODELS = ["credit_risk", "tumor_diagnosis"]
KINDS = ("data", "landing", "training", "scoring", "monitoring", "rollback", "rollout")
NO_RETRY = {"approve_promotion"}  # a person's answer is not retried
HEAVY = [
    "pandas",
    "sklearn",
    "mlflow",
    "feast",
    "great_expectations",
    "evidently",
    "xgboost",
    "fairlearn",
    # Not boto3: creating any Asset makes Airflow load every installed provider's asset URI handlers, and the
    # amazon provider's (needed for the SQS landing watcher) imports boto3.s3.transfer (~0.15 s). The
    # parse-time budget below still bounds what that costs.
    "kubernetes",
]


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS))


def test_every_dag_file_imports(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    expected = {f"{m}__{kind}" for m in MODELS for kind in KINDS}
    assert expected <= set(dagbag.dag_ids)


@pytest.mark.parametrize("model", MODELS)
def test_dag_ids_and_tags_carry_the_model(dagbag: DagBag, model: str) -> None:
    for kind in KINDS:
        dag = dagbag.dags[f"{model}__{kind}"]
        assert dag is not None
        assert f"model:{model}" in dag.tags and "mlops" in dag.tags
        assert dag.doc_md and model in dag.doc_md


def test_every_dag_has_owner_retries_and_docs(dagbag: DagBag) -> None:
    for dag in dagbag.dags.values():
        assert dag.tags, dag.dag_id
        assert dag.doc_md, dag.dag_id
        assert dag.catchup is False, dag.dag_id
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", (dag.dag_id, task.task_id)
            assert task.retries >= 1 or task.task_id in NO_RETRY, (dag.dag_id, task.task_id)


def test_training_dag_shape(dagbag: DagBag) -> None:
    dag = dagbag.dags["credit_risk__training"]
    gates = {"gate_drift", "gate_quality", "gate_fairness", "gate_champion"}
    assert gates <= set(dag.task_ids)
    assert dag.get_task("build_training_set").upstream_task_ids == {"plan_training"}
    assert dag.max_active_runs == 1
    # Every gate sits between training and registration: no path around a gate to promotion.
    register = dag.get_task("register")
    assert gates <= register.upstream_task_ids
    assert dag.get_task("promote").upstream_task_ids == {"register", "approve_promotion", "auto_approve"}
    # The branch never points at promote directly, or choosing approval would skip promotion.
    assert dag.get_task("approval_route").downstream_task_ids == {"approve_promotion", "auto_approve"}
    assert set(dag.params.keys()) >= {
        "window_end",
        "window_days",
        "estimator_params",
        "require_approval",
        "force",
    }


def test_assets_close_the_loop(dagbag: DagBag) -> None:
    """features -> scoring -> predictions -> monitoring -> drift -> training (or the cron)."""

    def outlets(dag_id: str, task_id: str) -> list[str]:
        return [o.name for o in dagbag.dags[dag_id].get_task(task_id).outlets]

    def names(condition: object) -> set[str]:
        if hasattr(condition, "objects"):
            return set().union(*(names(o) for o in condition.objects))
        return {condition.name}  # type: ignore[attr-defined]

    def schedule_assets(dag_id: str) -> set[str]:
        return names(dagbag.dags[dag_id].timetable.asset_condition)

    assert outlets("credit_risk__data", "materialize") == ["credit_risk.features"]
    assert outlets("credit_risk__scoring", "score") == ["credit_risk.predictions"]
    assert outlets("credit_risk__monitoring", "emit_drift") == ["credit_risk.drift"]
    assert outlets("credit_risk__monitoring", "circuit_breaker") == []
    assert schedule_assets("credit_risk__scoring") == {"credit_risk.features"}
    assert schedule_assets("credit_risk__monitoring") == {"credit_risk.predictions"}
    training = dagbag.dags["credit_risk__training"]
    assert type(training.timetable).__name__ == "AssetOrTimeSchedule"  # drift OR the config's cron
    assert schedule_assets("credit_risk__training") == {"credit_risk.drift"}
    assert type(dagbag.dags["credit_risk__rollback"].timetable).__name__ == "NullTimetable"  # UI only


def test_landing_watcher_waits_for_the_ready_flag(dagbag: DagBag) -> None:
    """landed (AssetWatcher on the ready flag) -> landing -> features + labels."""
    from airflow.providers.standard.triggers.file import FileDeleteTrigger

    from mlops.core.settings import get_settings

    landing = dagbag.dags["credit_risk__landing"]
    (asset,) = landing.timetable.asset_condition.objects
    assert asset.name == "credit_risk.landed"
    (watcher,) = asset.watchers
    assert isinstance(watcher.trigger, FileDeleteTrigger)
    assert watcher.trigger.filepath == str(Path(get_settings().landing_uri) / "credit_risk" / "_READY")
    outlets = {o.name for o in landing.get_task("publish").outlets}
    assert outlets == {"credit_risk.features", "credit_risk.labels"}


def test_new_labels_schedule_training_only_when_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    for path in (REPO / "include" / "models").glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        if data["name"] == "credit_risk":
            data["retraining"]["on_new_labels"] = True
        (tmp_path / path.name).write_text(yaml.safe_dump(data))
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("MLOPS_LANDING_URI", "s3://bucket/landing")  # an S3 landing root: no file to watch
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    condition = bag.dags["credit_risk__training"].timetable.asset_condition
    assert {o.name for o in condition.objects} == {"credit_risk.drift", "credit_risk.labels"}
    assert type(condition).__name__ == "AssetAny"  # either one starts a retrain
    other = bag.dags["tumor_diagnosis__training"].timetable.asset_condition
    assert {o.name for o in other.objects} == {"tumor_diagnosis.drift"}
    (asset,) = bag.dags["credit_risk__landing"].timetable.asset_condition.objects
    assert asset.watchers == []


def _parse_probe(models_dir: Path | None = None) -> dict[str, object]:
    """Import every DAG file in a fresh interpreter, counting SQL statements and heavy imports."""
    code = textwrap.dedent(f"""
        import importlib.util, json, sys, time
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
        queries = []
        event.listen(Engine, "before_cursor_execute", lambda *a, **k: queries.append(a[2]))
        import airflow.sdk  # the SDK itself is not what we measure
        before = set(sys.modules)
        started = time.perf_counter()
        sys.path.insert(0, {str(DAGS)!r})
        for path in sorted(__import__("pathlib").Path({str(DAGS)!r}).glob("*.py")):
            spec = importlib.util.spec_from_file_location("probe_" + path.stem, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        elapsed = time.perf_counter() - started
        heavy = sorted({{m.split(".")[0] for m in set(sys.modules) - before}} & set({HEAVY!r}))
        new = len(set(sys.modules) - before)
        print(json.dumps({{"queries": len(queries), "heavy": heavy, "modules": new, "seconds": elapsed}}))
    """)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO / "include"),
        "AIRFLOW_HOME": str(REPO / ".mlops" / "parse-probe"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    if models_dir:
        env["MLOPS_MODELS_DIR"] = str(models_dir)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_parsing_does_no_db_access_no_heavy_imports_and_stays_lean() -> None:
    probe = _parse_probe()
    assert probe["queries"] == 0, probe
    assert probe["heavy"] == [], probe
    # A machine-independent guard on what parsing pulls in (416 modules beyond airflow.sdk today, mostly
    # providers and pydantic); the parse time itself is a benchmark (`make bench`, target 1 s), not a test.
    assert int(probe["modules"]) < 600, probe  # type: ignore[call-overload]


def test_malformed_config_is_an_import_error_naming_file_key_and_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "credit_risk.yaml").write_text((REPO / "include/models/credit_risk.yaml").read_text())
    bad = (
        (REPO / "include/models/tumor_diagnosis.yaml")
        .read_text()
        .replace("min_metrics: {roc_auc: 0.85, f1: 0.7}", "min_metrics: {roc_auc: high, f1: 0.7}")
    )
    (models / "tumor_diagnosis.yaml").write_text(bad)
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    bag = DagBag(dag_folder=str(DAGS))
    assert {"credit_risk__data", "credit_risk__training"} <= set(bag.dag_ids)
    assert not any(d.startswith("tumor_diagnosis") for d in bag.dag_ids)
    assert len(bag.import_errors) == len(list(DAGS.glob("model_*.py")))  # every DAG file reports it
    for message in bag.import_errors.values():
        assert "tumor_diagnosis.yaml" in message
        assert "gates.quality.min_metrics.roc_auc" in message
        assert "valid number" in message


@pytest.mark.parametrize(
    ("conf", "ok"),
    [
        ({}, True),
        (
            {"window_days": 14, "window_end": "2026-03-08", "force": True, "estimator_params": {"n_estimators": 60}},
            True,
        ),
        ({"estimator_params": {"max_depth": None, "learning_rate": 0.05, "tree_method": "hist"}}, True),
        ({"window_days": "many"}, False),
        ({"window_days": 1}, False),
        ({"estimator_params": [1, 2]}, False),
        ({"estimator_params": {"n": 1}}, False),  # not an XGBClassifier parameter
        ({"estimator_params": {"n_estimators": 0}}, False),
        ({"estimator_params": {"learning_rate": 2.0}}, False),
        ({"estimator_params": {"tree_method": "os.system"}}, False),
        ({"estimator_params": {"callbacks": ["x"]}}, False),  # takes Python objects: never from a form
        ({"require_approval": "yes"}, False),
    ],
)
def test_training_form_validates_params(dagbag: DagBag, conf: dict[str, object], ok: bool) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.dags["credit_risk__training"].params)
    if ok:
        params.update(conf)
        assert params.validate()["window_days"] == conf.get("window_days", 30)
    else:
        with pytest.raises(ParamValidationError):
            params.update(conf)
            params.validate()


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"n": 1}, "key 'params.n': unknown parameter 'n'"),
        ({"max_depth": -3}, "key 'params.max_depth'"),
        ({"device": "$(id)"}, "key 'params.device'"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_training_run_checks_estimator_params_with_the_loaders_function(overrides: object, problem: str) -> None:
    """A bad form value (e.g. from the REST API) fails the run's first task at once, without retries."""
    import importlib.util

    from airflow.sdk.exceptions import AirflowFailException

    from mlops.core.config import get_config

    spec = importlib.util.spec_from_file_location("training_dag_probe", DAGS / "model_training.py")
    assert spec is not None and spec.loader is not None
    training = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(training)
    cfg = get_config("credit_risk", REPO / "include" / "models").config
    assert training._checked_estimator_params(cfg, {"estimator_params": {"n_estimators": 10}}) == {"n_estimators": 10}
    with pytest.raises(AirflowFailException) as err:
        training._checked_estimator_params(cfg, {"estimator_params": overrides})
    assert problem in str(err.value)
    assert "\n" not in str(err.value)


def _models_with(tmp_path: Path, **changes: object) -> Path:
    """The repository's model configs plus extra files (name -> YAML data) in a fresh folder."""
    import yaml

    models = tmp_path / "models"
    models.mkdir()
    for path in (REPO / "include" / "models").glob("*.yaml"):
        (models / path.name).write_text(path.read_text())
    for name, data in changes.items():
        (models / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return models


def _credit_data() -> dict[str, object]:
    import yaml

    return dict(yaml.safe_load((REPO / "include/models/credit_risk.yaml").read_text()))


def test_a_conflicting_model_is_refused_and_other_models_keep_their_dags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new model that lands where credit_risk lands and redefines its entity: both refused, tumor unaffected."""
    intruder = _credit_data()
    intruder["name"] = "credit_copy"
    intruder["entity"] = {"name": "customer", "join_key": "customer_ref", "dtype": "string"}
    intruder["features"]["numeric"].remove("age")  # type: ignore[index]
    intruder["features"]["categorical"].append("customer_id")  # type: ignore[index]
    del intruder["data_quality"]["columns"]["age"]  # type: ignore[index]
    models = _models_with(tmp_path, credit_copy=intruder)
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    bag = DagBag(dag_folder=str(DAGS))
    assert {f"tumor_diagnosis__{kind}" for kind in KINDS} <= set(bag.dag_ids)
    assert not any(d.startswith(("credit_risk__", "credit_copy__")) for d in bag.dag_ids)
    assert len(bag.import_errors) == len(list(DAGS.glob("model_*.py")))
    for message in bag.import_errors.values():
        assert str(models / "credit_copy.yaml") in message and str(models / "credit_risk.yaml") in message
        assert "key 'source.landing'" in message and "key 'entity.name'" in message


def test_an_import_path_as_estimator_is_an_import_error_and_other_models_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = _credit_data()
    bad["training"]["estimator"] = {"class": "os.system", "params": {"command": "touch /tmp/pwned"}}  # type: ignore[index]
    models = _models_with(tmp_path, credit_risk=bad)
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    bag = DagBag(dag_folder=str(DAGS))
    assert {f"tumor_diagnosis__{kind}" for kind in KINDS} <= set(bag.dag_ids)
    assert not any(d.startswith("credit_risk__") for d in bag.dag_ids)
    for message in bag.import_errors.values():
        assert "credit_risk.yaml" in message and "key 'training.estimator.class'" in message
        assert "family" in message


@pytest.mark.parametrize("kind", ["training", "monitoring", "rollback"])
def test_registry_doctor_runs_beside_every_dag_that_moves_an_alias(dagbag: DagBag, kind: str) -> None:
    """A root and a leaf: it repairs before and beside the moves, never holds back a rollback or a retrain,
    and its failure marks the run failed."""
    from mlops.orchestration.dagkit import DOCTOR_TASK

    doctor = dagbag.dags[f"credit_risk__{kind}"].get_task(DOCTOR_TASK)
    assert doctor.upstream_task_ids == set() and doctor.downstream_task_ids == set()
    assert doctor.retries >= 1  # MLflow unreachable is retried; a broken invariant fails at once
