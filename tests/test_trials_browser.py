"""The Prompts page in headless Chromium: a three-version referee trial on five samples is started from New trial,
shown as a matrix, and reopened from the trial history after the dashboard is restarted."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from openai_server import OpenAIServer
from test_trials import edited, script
from test_vision_stages import make_workspace
from workbench.analysis.trials import list_trials
from workbench.apps.dashboard.serve import CHROMIUM, CHROMIUM_ARGS, serve
from workbench.core.workspace import Workspace
from workbench.stages.filter.stage import run_filter
from workbench.stages.qa.stage import run_qa
from workbench.stages.referee.stage import run_referees

SHOTS = Path("/tmp/workbench-trial-shots")

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} missing: install Debian's chromium (scripts/setup.sh --browser)"),
]


def _idle(page):
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=90_000)
    page.wait_for_timeout(400)
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=90_000)


def _until(page, pred, timeout=60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        page.wait_for_timeout(250)
    return True


def _no_exception(page):
    errors = page.locator("[data-testid=stException]")
    assert errors.count() == 0, errors.first.inner_text()


def test_three_version_referee_trial_in_chromium_reopened_after_restart(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(exist_ok=True)
    with OpenAIServer(script, models=("vlm", "judge-a", "judge-b", "judge-c")) as server:
        ws = make_workspace(tmp_path, server.base_url)
        run_filter(ws, progress=False)
        run_qa(ws, progress=False)
        run_referees(ws, progress=False)
        (ws.root / "prompts").mkdir(exist_ok=True)
        edited(ws, "referee.j2", "STRICT")
        edited(ws, "referee.j2", "TERSE")
        ws = Workspace.open(ws.root)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1400})
            with serve(ws.root) as url:
                page.goto(f"{url}/prompts")
                page.wait_for_selector(".st-key-tr_new", timeout=90_000)
                _idle(page)
                page.locator(".st-key-tr_new label").click()
                page.wait_for_selector(".st-key-tr_stage", timeout=60_000)
                _idle(page)
                page.get_by_role("combobox", name="Stage").click()
                page.get_by_role("option", name="referee:a").first.click()
                _idle(page)
                for name in ("strict_referee.j2", "terse_referee.j2"):
                    box = page.locator(".st-key-tr_files input")
                    box.click()
                    box.fill(name)
                    box.press("Enter")
                    _idle(page)
                page.keyboard.press("Escape")
                _idle(page)
                page.screenshot(path=str(SHOTS / "new_trial.png"), full_page=True)
                page.wait_for_selector(".st-key-tr_run button:has-text('Run 3 version(s) on 5 item(s)')",
                                       timeout=60_000)
                _no_exception(page)
                page.locator(".st-key-tr_run button").click()
                assert _until(page, lambda: len(list_trials(ws)) == 1
                              and list_trials(ws).iloc[0]["status"] != "running", timeout=90)
                page.wait_for_selector("text=Trial 1 stored: done", timeout=60_000)
                page.wait_for_selector("text=trial 1 (referee:a", timeout=90_000)
                _idle(page)
                _no_exception(page)
                main = page.locator("[data-testid=stMain]")
                # the strict version's five verdicts, in the matrix the page opened
                assert _until(page, lambda: main.get_by_text("FAIL (0)").count() == 5), \
                    main.get_by_text("FAIL (0)").count()
                page.screenshot(path=str(SHOTS / "trial.png"), full_page=True)
            # A restarted dashboard reopens the trial from the history (newest first).
            with serve(ws.root) as url:
                page.goto(f"{url}/prompts")
                page.wait_for_selector("text=trial 1 (referee:a", timeout=90_000)
                _idle(page)
                _no_exception(page)
                main = page.locator("[data-testid=stMain]")
                assert _until(page, lambda: main.get_by_text("FAIL (0)").count() == 5)
                for header in ("current (referee.j2)", "strict_referee.j2", "terse_referee.j2"):
                    assert main.get_by_text(header, exact=True).count() >= 1, header
                assert main.locator("[data-testid=stImage] img").count() == 5     # one thumbnail per sample
                main.get_by_text("FAIL (0)").first.scroll_into_view_if_needed()
                page.screenshot(path=str(SHOTS / "reopened.png"))
            browser.close()
    t = list_trials(ws)
    assert len(t) == 1 and t.iloc[0]["rows"] == 5 and t.iloc[0]["ok"] == 15
