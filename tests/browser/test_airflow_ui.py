"""The Airflow UI, driven by Debian's Chromium through Playwright, on both run modes.

On the production stack: logs in with a real password, opens the training DAG, triggers it from the
trigger form with a non-default Param and watches the run reach success in the UI. Then, on the
production stack and on the embedded default (Airflow's own processes on SQLite, signed in as ``admin``
with the password the simple auth manager generated), the same cockpit steps: each gate's Report tab and
the Gates view of a training run, the Models page with its monitoring chart, its Train button and a
rollback from the page that moves ``champion``. Screenshots of every step go to
test-results/browser/<mode>/ (CI keeps them as artifacts). No browser is downloaded: Playwright launches
/usr/bin/chromium, which `make test` installs from Debian's packages where it is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from production_stack import DAYS, MODEL, START, Stack

if TYPE_CHECKING:
    from playwright.sync_api import FrameLocator, Page

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]  # setup may start the production stack

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-results" / "browser"
STACK_SHOTS = SHOTS / "production-stack"
EMBEDDED_SHOTS = SHOTS / "embedded-default"
WINDOW_DAYS = DAYS  # the form's default is the config's 30: a non-default value
EXPECT_TIMEOUT_MS = 60_000  # Playwright's 5 s default is too short for a loaded CI machine


def test_trigger_the_training_dag_from_the_ui_form(stack_with_data: Stack) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make test` installs Debian's chromium package"
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    stack = stack_with_data
    shots = STACK_SHOTS
    shutil.rmtree(shots, ignore_errors=True)  # this run's screenshots only
    shots.mkdir(parents=True)
    dag_id = f"{MODEL}__training"
    before = {r["dag_run_id"] for r in stack.api.call("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]}

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            _login(page, stack.ui_url, f"/dags/{dag_id}", _credentials(stack), shot=shots / "1-login.png")
            expect(page.get_by_text(dag_id).first).to_be_visible()
            page.screenshot(path=str(shots / "2-dag.png"))

            # The trigger form: Params rendered from the DAG's Param schema; change one from its default.
            page.get_by_role("button", name=re.compile("^trigger", re.I)).first.click()
            # Fields are found by the Param's name (the UI names inputs element_<param>).
            field = page.locator("input[name='element_window_days']")
            expect(field).to_have_value("30")
            field.fill(str(WINDOW_DAYS))
            page.locator("input[name='element_window_end']").fill(str(START + timedelta(days=DAYS - 1)))
            page.screenshot(path=str(shots / "3-trigger-form.png"))
            page.get_by_role("dialog").get_by_role("button", name=re.compile("^trigger", re.I)).click()

            # The new run, found through the API, reaches success; the UI shows it.
            deadline = time.monotonic() + 900
            run_id = ""
            while time.monotonic() < deadline:
                runs = stack.api.call("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]
                new = [r for r in runs if r["dag_run_id"] not in before]
                if new:
                    run_id = new[0]["dag_run_id"]
                    if new[0]["state"] in ("success", "failed"):
                        break
                time.sleep(3)
            assert run_id, "the trigger form did not create a run"
            run = stack.api.run(dag_id, run_id)
            assert run["conf"]["window_days"] == WINDOW_DAYS  # the non-default Param reached the run
            assert run["state"] == "success", stack.api.task_states(dag_id, run_id)
            page.goto(f"{stack.ui_url}/dags/{dag_id}/runs/{run_id}")
            expect(page.get_by_text(re.compile("success", re.I)).first).to_be_visible()
            page.screenshot(path=str(shots / "4-run-success.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
            (shots / "failure.html").write_text(page.content())
            raise
        finally:
            browser.close()


def _credentials(stack: Stack) -> tuple[str, str]:
    return stack.api.username, stack.api.password


def _login(page: Page, ui_url: str, path: str, credentials: tuple[str, str], shot: Path | None = None) -> None:
    """The UI sends an anonymous visitor to the simple auth manager's login page; sign in there."""
    page.goto(f"{ui_url}{path}")
    page.get_by_label(re.compile("username", re.I)).fill(credentials[0])
    page.get_by_label(re.compile("password", re.I)).fill(credentials[1])
    if shot is not None:
        page.screenshot(path=str(shot))
    page.get_by_role("button", name=re.compile("sign in|log in|login", re.I)).click()


@dataclass
class Cockpit:
    """One run mode as the cockpit test sees it: the UI's address, the sign-in, a successful training run."""

    mode: str
    ui_url: str
    credentials: tuple[str, str]  # a user of the simple auth manager who may read and trigger the DAGs
    training_run: str
    wait: Callable[[str, str], None]  # a DAG run reaches success, else the test fails with its task states
    env: Callable[[], AbstractContextManager[None]]  # this process sees the mode's MLflow and settings

    @property
    def shots(self) -> Path:
        return SHOTS / self.mode


def _successful_training(stack: Stack) -> str:
    """The newest successful training run (the test above leaves one); one is triggered if there is none."""
    dag_id = f"{MODEL}__training"
    runs = stack.api.call("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]
    done = [r["dag_run_id"] for r in sorted(runs, key=lambda r: r["start_date"] or "", reverse=True)]
    done = [run_id for run_id in done if any(r["dag_run_id"] == run_id and r["state"] == "success" for r in runs)]
    if done:
        return str(done[0])
    run_id = stack.api.trigger(dag_id, conf={"window_days": DAYS, "window_end": str(START + timedelta(days=DAYS - 1))})
    _wait(stack, dag_id, run_id)
    return run_id


def _wait(stack: Stack, dag_id: str, run_id: str) -> None:
    run = stack.api.wait_run(dag_id, run_id, 900)
    assert run["state"] == "success", stack.api.task_states(dag_id, run_id)


def _on_the_stack(stack: Stack) -> Cockpit:
    return Cockpit(
        mode=STACK_SHOTS.name,
        ui_url=stack.ui_url,
        credentials=_credentials(stack),
        training_run=_successful_training(stack),
        wait=lambda dag_id, run_id: _wait(stack, dag_id, run_id),
        env=stack.project_env,
    )


def _first_champion(state: Path) -> str:
    """DAYS landed days taken through the data DAG's steps in this process (as ``make backfill`` does),
    then the training DAG with dag.test on the services' own metadata DB: its run, and a first champion."""
    from airflow.dag_processing.dagbag import DagBag

    from mlops.data.steps import process_landed
    from mlops_dev.datagen import write_batches

    write_batches(MODEL, state / "landing" / MODEL, START, DAYS, rows_per_batch=300)
    processed = process_landed(MODEL, [str(START + timedelta(days=n)) for n in range(DAYS)])
    assert not processed["quarantined"], processed
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    conf = {"window_end": str(START + timedelta(days=DAYS - 1)), "window_days": DAYS}
    run = bag.dags[f"{MODEL}__training"].test(run_conf=conf)
    assert run.state == "success"
    return str(run.run_id)


@pytest.fixture(scope="module")
def embedded_default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cockpit]:
    """The embedded default (local files, MLflow and Airflow on SQLite) with a first champion made with
    dag.test, then served by Airflow's own processes (scheduler, api-server, dag-processor, triggerer)."""
    from airflow import settings as airflow_settings
    from mlops.core.settings import get_settings
    from mlops_dev.services import AirflowServices

    root = tmp_path_factory.mktemp("cockpit-embedded")
    state, models = root / "state", root / "models"
    home = state / "airflow"
    home.mkdir(parents=True)
    models.mkdir()
    config = yaml.safe_load((REPO / "include" / "models" / f"{MODEL}.yaml").read_text())
    config["training"]["schedule"] = None  # as on the stack: training runs only when the test asks
    config.setdefault("promotion", {})["strategy"] = "immediate"  # canary rollouts have their own tests
    (models / f"{MODEL}.yaml").write_text(yaml.safe_dump(config))
    services: AirflowServices | None = None
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLOPS_ENV", "local")
        env.setenv("MLOPS_STATE_DIR", str(state))
        env.setenv("MLOPS_MODELS_DIR", str(models))
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_LANDING_URI", "MLOPS_LAKE_URI"):
            env.delenv(name, raising=False)
        env.delenv("MLOPS_TRAINING_BACKEND", raising=False)
        # The metadata DB the processes use (airflow_env: <state>/airflow), so dag.test's run is theirs too.
        env.setenv("AIRFLOW_HOME", str(home))
        env.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home / 'airflow.db'}")
        airflow = str(Path(sys.executable).with_name("airflow"))
        subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
        airflow_settings.configure_vars()
        airflow_settings.reconfigure_orm()
        try:
            run_id = _first_champion(state)
            services = AirflowServices(get_settings(), root / "airflow-logs")
            services.start()

            def wait(dag_id: str, run_id: str) -> None:
                assert services is not None
                run = services.wait_finished(dag_id, run_id, 900)
                assert run.state == "success", services.task_states(dag_id, run_id)

            # The simple auth manager's default user, with the password it generated at start.
            generated = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
            credentials = ("admin", generated["admin"])
            yield Cockpit(EMBEDDED_SHOTS.name, services.base_url, credentials, run_id, wait, nullcontext)
        finally:
            if services is not None:
                services.stop()
            for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # set by mlflow.set_tracking_uri
                env.delenv(name, raising=False)
    airflow_settings.configure_vars()
    airflow_settings.reconfigure_orm()


def _champion(cockpit: Cockpit) -> str:
    from mlops.core.tracking import client

    with cockpit.env():
        return str(client().get_model_version_by_alias(MODEL, "champion").version)


def _seed_monitoring(cockpit: Cockpit, champion: str, days: int = 30) -> None:
    """Monitored days ending today, as the monitoring DAG logs them, so the chart has something to draw."""
    from mlops_dev.cockpit_bench import seed_monitoring

    today = date.today()
    day_list = [(today - timedelta(days=days - 1 - n)).isoformat() for n in range(days)]
    with cockpit.env():
        seed_monitoring(MODEL, day_list, dict.fromkeys(day_list, champion))


def _open_model_page(page: Page, cockpit: Cockpit) -> FrameLocator:
    """Browse > Models, then the model: the page inside the plugin's frame, freshly loaded."""
    page.goto(f"{cockpit.ui_url}/plugin/mlops_models")
    models = page.frame_locator("iframe[title='Models']")
    models.get_by_role("link", name=MODEL).click()
    return models


def test_the_cockpit_on_the_production_stack(stack_with_data: Stack) -> None:
    _the_cockpit_shows_gates_reports_models_and_rolls_back(_on_the_stack(stack_with_data))


def test_the_cockpit_on_the_embedded_default(embedded_default: Cockpit) -> None:
    shutil.rmtree(embedded_default.shots, ignore_errors=True)  # this run's screenshots only
    _the_cockpit_shows_gates_reports_models_and_rolls_back(embedded_default)


def _the_cockpit_shows_gates_reports_models_and_rolls_back(cockpit: Cockpit) -> None:
    """A training run's Gates tab and each gate's Report tab with its verdict, the Models page with its
    chart, Train now, and a rollback from the page that moves ``champion``: the same steps on each mode."""
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make test` installs Debian's chromium package"
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    shots = cockpit.shots
    shots.mkdir(parents=True, exist_ok=True)
    dag_id = f"{MODEL}__training"
    run_id = cockpit.training_run
    first_champion = _champion(cockpit)
    _seed_monitoring(cockpit, first_champion)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            _login(page, cockpit.ui_url, f"/dags/{dag_id}/runs/{run_id}/plugin/mlops_gates", cockpit.credentials)
            # The run's Gates tab: four verdicts with numbers and thresholds, the version, the MLflow link.
            gates = page.frame_locator("iframe[title='Gates']")
            for gate in ("drift", "quality", "fairness", "champion"):
                card = gates.locator(f".card.gate[data-gate='{gate}']")
                expect(card.locator(".pill")).to_have_attribute("data-verdict", re.compile("PASS|SKIPPED"))
                expect(card).to_contain_text("thresholds:")
            expect(gates.locator(".registered")).to_contain_text("registered as v")
            expect(gates.get_by_role("link", name=re.compile("^MLflow run"))).to_be_visible()
            page.screenshot(path=str(shots / "5-gates.png"), full_page=True)

            # Each gate task instance's Report tab: its verdict line and the gate's own HTML report.
            for gate in ("drift", "quality", "fairness", "champion"):
                page.goto(f"{cockpit.ui_url}/dags/{dag_id}/runs/{run_id}/tasks/gate_{gate}/plugin/mlops_report")
                tab = page.frame_locator("iframe[title='Report']")
                expect(tab.locator(f".verdict-line[data-gate='{gate}']")).to_contain_text(f"{gate} gate")
                report = tab.frame_locator("iframe.report")
                expect(report.locator(".mlops-banner").first).to_have_attribute(
                    "data-verdict", re.compile("PASS|SKIPPED")
                )
                page.screenshot(path=str(shots / f"6-report-{gate}.png"), full_page=True)

            # The Models page (navigation entry): aliases, the monitoring chart, versions, alias history.
            started = time.monotonic()
            models = _open_model_page(page, cockpit)
            chart = models.locator("svg.monitoring-chart")
            expect(chart).to_be_visible()
            print(f"Models page with its chart shown {time.monotonic() - started:.2f} s after navigation")
            expect(chart.locator("polyline.series").first).to_be_visible()
            expect(models.locator(".alias[data-alias='champion']")).to_contain_text(f"v{first_champion}")
            page.screenshot(path=str(shots / "7-models.png"), full_page=True)

            # Train now: the training DAG through Airflow's REST API as this user; its version becomes champion.
            models.get_by_role("button", name="Train now").click()
            result = models.locator("#action-result")
            expect(result).to_have_attribute("data-run-id", re.compile(".+"))
            cockpit.wait(dag_id, str(result.get_attribute("data-run-id")))
            second = _champion(cockpit)
            assert second != first_champion

            # Roll back from the page: the rollback DAG moves champion back, and the page shows it.
            models = _open_model_page(page, cockpit)
            expect(models.locator(".alias[data-alias='champion']")).to_contain_text(f"v{second}")
            form = models.locator("#rollback-form")
            form.locator("input[name='reason']").fill("browser test: back to the previous champion")
            form.get_by_role("button", name="Roll back champion").click()
            result = models.locator("#action-result")
            expect(result).to_have_attribute("data-run-id", re.compile(".+"))
            cockpit.wait(f"{MODEL}__rollback", str(result.get_attribute("data-run-id")))
            assert _champion(cockpit) == first_champion
            models = _open_model_page(page, cockpit)
            expect(models.locator(".alias[data-alias='champion']")).to_contain_text(f"v{first_champion}")
            expect(models.locator("svg .alias-mark[data-kind='rollback']")).to_have_count(1)
            page.screenshot(path=str(shots / "8-models-after-rollback.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(shots / "cockpit-failure.png"), full_page=True)
            (shots / "cockpit-failure.html").write_text(page.content())
            raise
        finally:
            browser.close()
