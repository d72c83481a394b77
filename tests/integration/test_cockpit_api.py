"""The cockpit plugin's FastAPI app, behind Airflow's own auth manager, on both run modes.

On the embedded default, the app is the one the api-server mounts (``plugins/mlops_cockpit.py``), called
in this process with JWTs that Airflow's configured auth manager (the simple auth manager) signed. On the
production stack, it is the stack's api-server over HTTP, with the JWTs its simple auth manager hands out
at login: ``admin`` (a reader of every DAG) and ``nobody`` (signed in, no role). MLflow (local files, or
the stack's tracking server) holds a small seeded registry (``mlops_dev.cockpit_bench.seed``): versions
with gate verdicts, a training run with its four gate reports, champion moves with a rollback, and
monitored days.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlops_dev.cockpit_bench import Seeded, seed
from production_stack import NO_DAG_ACCESS, SEEDED_MODEL, Stack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODEL = "credit_risk"


@dataclass(frozen=True)
class Cockpit:
    """The plugin's app on one run mode, its seeded registry, and credentials for each kind of caller."""

    client: Any  # a TestClient or an httpx.Client on the app's root: get(path, params=, headers=)
    seeded: Seeded
    token: Callable[[str | None], dict[str, str]]  # "viewer": reads the model's DAGs; None: no DAG permission

    @property
    def model(self) -> str:
        return self.seeded.model

    @property
    def dag(self) -> str:
        return f"{self.model}__training"


MODES = ["embedded", pytest.param("production_stack", marks=pytest.mark.production_stack)]


@pytest.fixture(scope="module", params=MODES)
def api(request: pytest.FixtureRequest) -> Cockpit:
    """The cockpit on the embedded default, then on the production stack: the same assertions on both."""
    return request.getfixturevalue(f"{request.param}_cockpit")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def production_stack_cockpit(production_stack: Stack) -> Iterator[Cockpit]:
    """The stack's api-server over HTTP; its MLflow server seeded under SEEDED_MODEL (a model of its own)."""
    import httpx

    stack = production_stack
    with stack.project_env():
        seeded = seed(SEEDED_MODEL, versions=3, days=8)
    users = {"viewer": stack.user("admin"), None: stack.user(NO_DAG_ACCESS)}  # real logins, real JWTs

    def token(role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {users[role].token}"}

    with httpx.Client(base_url=f"{stack.ui_url}/cockpit", timeout=120) as client:
        yield Cockpit(client, seeded, token)


@pytest.fixture(scope="module")
def embedded_cockpit(airflow_db: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cockpit]:
    """The plugin's app and one seeded embedded state, shared by this module's tests (read-only)."""
    from airflow.api_fastapi.app import init_auth_manager
    from fastapi.testclient import TestClient

    state = tmp_path_factory.mktemp("cockpit") / "state"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "cockpit-test-secret-" + "x" * 48)
        env.setenv("MLOPS_ENV", "local")
        env.setenv("MLOPS_STATE_DIR", str(state))
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_MODELS_DIR", "MLOPS_LAKE_URI"):
            env.delenv(name, raising=False)
        init_auth_manager()
        spec = importlib.util.spec_from_file_location("mlops_cockpit", REPO / "plugins" / "mlops_cockpit.py")
        assert spec is not None and spec.loader is not None
        plugin = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(plugin)
        seeded = seed(MODEL, versions=3, days=8)
        with TestClient(plugin.app) as client:
            yield Cockpit(client, seeded, _token)
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # set by mlflow.set_tracking_uri
            env.delenv(name, raising=False)


def _token(role: str | None) -> dict[str, str]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    user = SimpleAuthManagerUser(username=f"user-{role}", role=role)
    return {"Authorization": f"Bearer {get_auth_manager().generate_jwt(user)}"}


def test_a_reader_of_the_dag_sees_reports_gates_and_the_models_page(api: Cockpit) -> None:
    client, seeded, model, dag = api.client, api.seeded, api.model, api.dag
    viewer = api.token("viewer")
    run = seeded.dag_run_id

    tab = client.get("/report", params={"dag_id": dag, "run_id": run, "task_id": "gate_champion"}, headers=viewer)
    assert tab.status_code == 200, tab.text
    assert 'data-verdict="FAIL"' in tab.text and "champion gate failed: roc_auc 0.790 &lt; 0.802" in tab.text
    assert "tolerance 0.01" in tab.text  # the threshold from the model's config
    raw = client.get("/report/raw", params={"dag_id": dag, "run_id": run, "task_id": "gate_champion"}, headers=viewer)
    assert raw.status_code == 200 and '<div class="mlops-banner fail" data-verdict="FAIL">' in raw.text

    gates = client.get("/gates", params={"dag_id": dag, "run_id": run}, headers=viewer)
    assert gates.status_code == 200
    verdicts = dict(re.findall(r'data-gate="(\w+)"><h3>\w+ <span class="pill \w+" data-verdict="(\w+)"', gates.text))
    assert verdicts == {"drift": "PASS", "quality": "PASS", "fairness": "PASS", "champion": "FAIL"}
    assert f"registered as <b>v{seeded.versions[-1]}</b>" in gates.text
    # A task that is no gate shows the run's gates on its Report tab.
    other = client.get("/report", params={"dag_id": dag, "run_id": run, "task_id": "register"}, headers=viewer)
    assert other.status_code == 200 and other.text.count('class="card gate"') == 4
    data = {"dag_id": f"{model}__data", "run_id": run, "task_id": "ingest"}
    elsewhere = client.get("/report", params=data, headers=viewer)
    assert elsewhere.status_code == 200 and "writes no gate report" in elsewhere.text

    page = client.get("/models", params={"model": model}, headers=viewer)
    assert page.status_code == 200
    assert f'data-alias="champion">champion: <b>v{seeded.champion}</b>' in page.text
    assert page.text.count("<tr data-version=") == len(seeded.versions)
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="monitoring-chart"' in page.text
    assert page.text.count('class="threshold"') >= 3  # drift, prediction drift, live quality guardrail
    assert 'data-series="drift share"' in page.text
    index = client.get("/models", headers=viewer)
    assert f"?model={model}" in index.text
    svg = client.get("/models/chart.svg", params={"model": model}, headers=viewer)
    assert svg.headers["content-type"].startswith("image/svg+xml") and "<polyline" in svg.text


def test_a_user_without_dag_permission_gets_no_report(api: Cockpit) -> None:
    client, seeded, model, dag = api.client, api.seeded, api.model, api.dag
    nobody = api.token(None)  # authenticated, but no role: no permission on any DAG
    query = {"dag_id": dag, "run_id": seeded.dag_run_id, "task_id": "gate_champion"}
    for path, params in [
        ("/report", query),
        ("/report/raw", query),
        ("/gates", {"dag_id": dag, "run_id": seeded.dag_run_id}),
        ("/models", {"model": model}),
        ("/models/chart.svg", {"model": model}),
    ]:
        response = client.get(path, params=params, headers=nobody)
        assert response.status_code == 403, (path, response.status_code)
        assert "champion gate" not in response.text and "svg" not in response.text
        assert client.get(path, params=params).status_code == 401  # no credential at all
    index = client.get("/models", headers=nobody)
    assert index.status_code == 200 and model not in index.text
    unknown = client.get("/gates", params={"dag_id": "nope__training", "run_id": "x"}, headers=api.token("viewer"))
    assert unknown.status_code == 404


def test_monitoring_is_an_mlflow_time_series_per_champion_version(embedded_cockpit: Cockpit) -> None:
    """Beside the per-interval runs (which the chart reads), and never mistaken for one.

    What the monitoring DAG logs, read in this process: not the plugin's API, so on the embedded default only.
    """
    from mlops.core.tracking import client
    from mlops.quality.monitoring import MonitorResult, log_series, series_step

    def result(day: str, version: str, share: float) -> MonitorResult:
        return MonitorResult("credit_risk", day, version, False, [], {}, share, 0.1, {"roc_auc": 0.8}, [], {}, rows=10)

    first = log_series(result("2026-03-01", "1", 0.1))
    assert log_series(result("2026-03-02", "1", 0.2)) == first
    assert log_series(result("2026-03-02", "1", 0.9)) == first  # a rerun of a day adds nothing
    second = log_series(result("2026-03-03", "2", 0.3))
    assert second != first
    history = client().get_metric_history(first, "drift_share")
    assert [(m.step, m.value) for m in history] == [(series_step("2026-03-01"), 0.1), (series_step("2026-03-02"), 0.2)]
    assert series_step("2026-03-02") - series_step("2026-02-27") == 3  # uniform across month ends
    assert [m.value for m in client().get_metric_history(second, "quality_roc_auc")] == [0.8]
    from mlops.quality import cockpit

    cockpit.clear_cache()
    assert len(cockpit.monitoring_points(MODEL)) == len(embedded_cockpit.seeded.days)
