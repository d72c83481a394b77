"""The Airflow UI of the production stack, driven by Debian's Chromium through Playwright.

Logs in with a real password, opens the training DAG, triggers it from the trigger form with a
non-default Param and watches the run reach success in the UI. Screenshots of every step go to
test-results/browser/ (CI keeps them as artifacts). No browser is downloaded: Playwright launches
/usr/bin/chromium, which `make test` installs from Debian's packages where it is missing.
"""

from __future__ import annotations

import re
import shutil
import time
from datetime import timedelta
from pathlib import Path

import pytest

from production_stack import DAYS, MODEL, START, Stack

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-results" / "browser"
WINDOW_DAYS = DAYS  # the form's default is the config's 30: a non-default value


def test_trigger_the_training_dag_from_the_ui_form(stack_with_data: Stack) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make test` installs Debian's chromium package"
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
            # Log in: the UI sends an anonymous visitor to the simple auth manager's login page.
            page.goto(f"{stack.ui_url}/dags/{dag_id}")
            page.get_by_label(re.compile("username", re.I)).fill(stack.api.username)
            page.get_by_label(re.compile("password", re.I)).fill(stack.api.password)
            page.screenshot(path=str(SHOTS / "1-login.png"))
            page.get_by_role("button", name=re.compile("sign in|log in|login", re.I)).click()
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
