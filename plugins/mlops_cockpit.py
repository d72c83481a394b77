"""The cockpit in Airflow's UI: a Report tab on gate task instances, a Gates view per run, a Models page.

An Airflow 3 UI plugin: a FastAPI app mounted in the api-server under ``/cockpit`` and external views
that the UI shows as tabs (task instance, DAG run) and a navigation entry (Models). Every route checks
the caller through Airflow's own auth manager (the session cookie or a bearer token) and the DAG
permission the core API checks for the same data, so a user without access to a model's DAGs gets
nothing. The data comes from :mod:`mlops.quality.cockpit`, the pages from :mod:`mlops.quality.cockpit_html`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.responses import HTMLResponse, Response

from mlops.quality import cockpit
from mlops.quality import cockpit_html as views


def _authorized(user: Any, dag_id: str, entity: DagAccessEntity) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.models.dag import DagModel

    team = DagModel.get_team_name(dag_id)
    details = DagDetails(id=dag_id, team_name=team)
    return bool(get_auth_manager().is_authorized_dag(method="GET", access_entity=entity, details=details, user=user))


def _require(user: Any, dag_id: str, entity: DagAccessEntity) -> str:
    """The model of ``dag_id`` when the user may read ``entity`` of that DAG; else 403 (or 404)."""
    if not _authorized(user, dag_id, entity):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")
    try:
        return cockpit.model_of(dag_id)
    except cockpit.UnknownModel as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


def _dag_access(entity: DagAccessEntity) -> Callable[..., str]:
    def check(user: GetUserDep, dag_id: Annotated[str, Query()]) -> str:
        return _require(user, dag_id, entity)

    return check


RunModel = Annotated[str, Depends(_dag_access(DagAccessEntity.RUN))]
TaskModel = Annotated[str, Depends(_dag_access(DagAccessEntity.TASK_INSTANCE))]

app = FastAPI(title="MLOps cockpit", docs_url=None, redoc_url=None, openapi_url=None)


def _html(text: str, code: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=code, headers={"Cache-Control": "no-store"})


@app.get("/report", response_class=HTMLResponse)
def report(model: TaskModel, dag_id: str, run_id: str, task_id: str) -> HTMLResponse:
    """The Report tab: a gate's verdict and HTML report; for any other task, the run's gates."""
    gate = cockpit.gate_of(task_id)
    if gate is None and cockpit.is_training_dag(dag_id):
        return gates(model, dag_id, run_id)
    if gate is None:
        text = f"{task_id} writes no gate report; the gates run in {model}__training (see its runs' Gates tab)."
        return _html(views.message_page(f"{task_id} · {run_id}", text))
    try:
        view, link = cockpit.gate_view(model, run_id, gate)
    except cockpit.NotFound as exc:
        return _html(views.message_page(f"{gate} gate · {run_id}", str(exc)), 404)
    if view.report is None:
        return _html(views.message_page(f"{gate} gate · {run_id}", f"{gate}: {view.summary}"), 404)
    return _html(views.report_page(dag_id, run_id, task_id, view, link))


@app.get("/report/raw", response_class=HTMLResponse)
def report_raw(model: TaskModel, run_id: str, task_id: str) -> HTMLResponse:
    """The gate's own HTML report, as the gate wrote it."""
    gate = cockpit.gate_of(task_id)
    if gate is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{task_id} is not a gate task")
    try:
        page = cockpit.gate_report(model, run_id, gate)
    except cockpit.NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return _html(page)


@app.get("/gates", response_class=HTMLResponse)
def gates(model: RunModel, dag_id: str, run_id: str) -> HTMLResponse:
    """The Gates view of a training run."""
    return _html(views.gates_page(dag_id, cockpit.training_view(model, run_id)))


@app.get("/models", response_class=HTMLResponse)
def models(user: GetUserDep, model: str | None = None) -> HTMLResponse:
    """The Models page of ``model``; without one, the models whose training DAG the user may read."""
    if model is None:
        names = [m for m in cockpit.model_names() if _authorized(user, f"{m}__training", DagAccessEntity.RUN)]
        return _html(views.models_index(names))
    _require(user, f"{model}__training", DagAccessEntity.RUN)
    view = cockpit.model_view(model)
    return _html(views.model_page(view, views.monitoring_chart(view)))


@app.get("/models/chart.svg")
def chart(user: GetUserDep, model: str) -> Response:
    """The monitoring chart alone (for a README or a link)."""
    _require(user, f"{model}__training", DagAccessEntity.RUN)
    svg = views.monitoring_chart(cockpit.model_view(model))
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


class MlopsCockpitPlugin(AirflowPlugin):
    name = "mlops_cockpit"
    fastapi_apps = [{"app": app, "url_prefix": views.PREFIX, "name": "MLOps cockpit"}]
    external_views = [
        {
            "name": "Report",
            "href": f"{views.PREFIX}/report?dag_id={{DAG_ID}}&run_id={{RUN_ID}}&task_id={{TASK_ID}}",
            "destination": "task_instance",
            "url_route": "mlops_report",
        },
        {
            "name": "Gates",
            "href": f"{views.PREFIX}/gates?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "mlops_gates",
        },
        {
            "name": "Models",
            "href": f"{views.PREFIX}/models",
            "destination": "nav",
            "url_route": "mlops_models",
            "category": "browse",
        },
    ]
