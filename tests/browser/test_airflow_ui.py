"""The Airflow UI of the production stack, driven by Debian's Chromium through Playwright.

Logs in with a real password, opens the training DAG, triggers it from the trigger form with a
non-default Param and watches the run reach success in the UI. Then the cockpit plugin on that run:
each gate's Report tab and the Gates view, the Models page with its monitoring chart, its Train button
and a rollback from the page that moves ``champion``. Screenshots of every step go to
test-results/browser/ (CI keeps them as artifacts). No browser is downloaded: Playwright launches
/usr/bin/chromium, which `make test` installs from Debian's packages where it is missing.
"""

from __future__ import annotations

import re
import shutil
import time
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from production_stack import DAYS, MODEL, START, Stack

if TYPE_CHECKING:
    from playwright.sync_api import FrameLocator, Page

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-results" / "browser"
WINDOW_DAYS = DAYS  # the form's default is the config's 30: a non-default value
EXPECT_TIMEOUT_MS = 60_000  # Playwright's 5 s default is too short for a loaded CI machine


def test_trigger_the_training_dag_from_the_ui_form(stack_with_data: Stack) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make test` installs Debian's chromium package"
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    stack = stack_with_data
    shutil.rmtree(SHOTS, ignore_errors=True)  # this run's screenshots only
    SHOTS.mkdir(parents=True)
    dag_id = f"{MODEL}__training"
    before = {r["dag_run_id"] for r in stack.api.call("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]}

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            _login(page, stack, f"/dags/{dag_id}", shots=True)
            expect(page.get_by_text(dag_id).first).to_be_visible()
            page.screenshot(path=str(SHOTS / "2-dag.png"))

            # The trigger form: Params rendered from the DAG's Param schema; change one from its default.
            page.get_by_role("button", name=re.compile("^trigger", re.I)).first.click()
            # Fields are found by the Param's name (the UI names inputs element_<param>).
            field = page.locator("input[name='element_window_days']")
            expect(field).to_have_value("30")
            field.fill(str(WINDOW_DAYS))
            page.locator("input[name='element_window_end']").fill(str(START + timedelta(days=DAYS - 1)))
            page.screenshot(path=str(SHOTS / "3-trigger-form.png"))
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
            page.screenshot(path=str(SHOTS / "4-run-success.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
            (SHOTS / "failure.html").write_text(page.content())
            raise
        finally:
            browser.close()


def _login(page: Page, stack: Stack, path: str, *, shots: bool = False) -> None:
    """The UI sends an anonymous visitor to the simple auth manager's login page; sign in there."""
    page.goto(f"{stack.ui_url}{path}")
    page.get_by_label(re.compile("username", re.I)).fill(stack.api.username)
    page.get_by_label(re.compile("password", re.I)).fill(stack.api.password)
    if shots:
        page.screenshot(path=str(SHOTS / "1-login.png"))
    page.get_by_role("button", name=re.compile("sign in|log in|login", re.I)).click()


def _successful_training(stack: Stack) -> str:
    """The newest successful training run (the test above leaves one); one is triggered if there is none."""
    dag_id = f"{MODEL}__training"
    runs = stack.api.call("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]
    done = [r["dag_run_id"] for r in sorted(runs, key=lambda r: r["start_date"] or "", reverse=True)]
    done = [run_id for run_id in done if any(r["dag_run_id"] == run_id and r["state"] == "success" for r in runs)]
    if done:
        return str(done[0])
    run_id = stack.api.trigger(dag_id, conf={"window_days": DAYS, "window_end": str(START + timedelta(days=DAYS - 1))})
    assert stack.api.wait_run(dag_id, run_id, 900)["state"] == "success", stack.api.task_states(dag_id, run_id)
    return run_id


def _champion(stack: Stack) -> str:
    from mlops.core.tracking import client

    with stack.project_env():
        return str(client().get_model_version_by_alias(MODEL, "champion").version)


def _seed_monitoring(stack: Stack, champion: str, days: int = 30) -> None:
    """Monitored days ending today, as the monitoring DAG logs them, so the chart has something to draw."""
    from mlops_dev.cockpit_bench import seed_monitoring

    today = date.today()
    day_list = [(today - timedelta(days=days - 1 - n)).isoformat() for n in range(days)]
    with stack.project_env():
        seed_monitoring(MODEL, day_list, dict.fromkeys(day_list, champion))


def _open_model_page(page: Page, stack: Stack) -> FrameLocator:
    """Browse > Models, then the model: the page inside the plugin's frame, freshly loaded."""
    page.goto(f"{stack.ui_url}/plugin/mlops_models")
    models = page.frame_locator("iframe[title='Models']")
    models.get_by_role("link", name=MODEL).click()
    return models


def _wait(stack: Stack, dag_id: str, run_id: str) -> None:
    run = stack.api.wait_run(dag_id, run_id, 900)
    assert run["state"] == "success", stack.api.task_states(dag_id, run_id)


def test_the_cockpit_shows_gates_reports_models_and_rolls_back(stack_with_data: Stack) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    stack = stack_with_data
    SHOTS.mkdir(parents=True, exist_ok=True)
    dag_id = f"{MODEL}__training"
    run_id = _successful_training(stack)
    first_champion = _champion(stack)
    _seed_monitoring(stack, first_champion)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            _login(page, stack, f"/dags/{dag_id}/runs/{run_id}/plugin/mlops_gates")
            # The run's Gates tab: four verdicts with numbers and thresholds, the version, the MLflow link.
            gates = page.frame_locator("iframe[title='Gates']")
            for gate in ("drift", "quality", "fairness", "champion"):
                card = gates.locator(f".card.gate[data-gate='{gate}']")
                expect(card.locator(".pill")).to_have_attribute("data-verdict", re.compile("PASS|SKIPPED"))
                expect(card).to_contain_text("thresholds:")
            expect(gates.locator(".registered")).to_contain_text("registered as v")
            expect(gates.get_by_role("link", name=re.compile("^MLflow run"))).to_be_visible()
            page.screenshot(path=str(SHOTS / "5-gates.png"), full_page=True)

            # Each gate task instance's Report tab: its verdict line and the gate's own HTML report.
            for gate in ("drift", "quality", "fairness", "champion"):
                page.goto(f"{stack.ui_url}/dags/{dag_id}/runs/{run_id}/tasks/gate_{gate}/plugin/mlops_report")
                tab = page.frame_locator("iframe[title='Report']")
                expect(tab.locator(f".verdict-line[data-gate='{gate}']")).to_contain_text(f"{gate} gate")
                report = tab.frame_locator("iframe.report")
                expect(report.locator(".mlops-banner").first).to_have_attribute(
                    "data-verdict", re.compile("PASS|SKIPPED")
                )
                page.screenshot(path=str(SHOTS / f"6-report-{gate}.png"), full_page=True)

            # The Models page (navigation entry): aliases, the monitoring chart, versions, alias history.
            started = time.monotonic()
            models = _open_model_page(page, stack)
            chart = models.locator("svg.monitoring-chart")
            expect(chart).to_be_visible()
            print(f"Models page with its chart shown {time.monotonic() - started:.2f} s after navigation")
            expect(chart.locator("polyline.series").first).to_be_visible()
            expect(models.locator(".alias[data-alias='champion']")).to_contain_text(f"v{first_champion}")
            page.screenshot(path=str(SHOTS / "7-models.png"), full_page=True)

            # Train now: the training DAG through Airflow's REST API as this user; its version becomes champion.
            models.get_by_role("button", name="Train now").click()
            result = models.locator("#action-result")
            expect(result).to_have_attribute("data-run-id", re.compile(".+"))
            _wait(stack, dag_id, str(result.get_attribute("data-run-id")))
            second = _champion(stack)
            assert second != first_champion

            # Roll back from the page: the rollback DAG moves champion back, and the page shows it.
            models = _open_model_page(page, stack)
            expect(models.locator(".alias[data-alias='champion']")).to_contain_text(f"v{second}")
            form = models.locator("#rollback-form")
            form.locator("input[name='reason']").fill("browser test: back to the previous champion")
            form.get_by_role("button", name="Roll back champion").click()
            result = models.locator("#action-result")
            expect(result).to_have_attribute("data-run-id", re.compile(".+"))
            _wait(stack, f"{MODEL}__rollback", str(result.get_attribute("data-run-id")))
            assert _champion(stack) == first_champion
            models = _open_model_page(page, stack)
            expect(models.locator(".alias[data-alias='champion']")).to_contain_text(f"v{first_champion}")
            expect(models.locator("svg .alias-mark[data-kind='rollback']")).to_have_count(1)
            page.screenshot(path=str(SHOTS / "8-models-after-rollback.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(SHOTS / "cockpit-failure.png"), full_page=True)
            (SHOTS / "cockpit-failure.html").write_text(page.content())
            raise
        finally:
            browser.close()
