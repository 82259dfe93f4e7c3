"""Notebook 01 in a real JupyterLab (started here on 127.0.0.1) driven by headless Chromium: Run All stops at the
review with one line, the review table is clicked (accept, reject, rename, Apply), the rest runs, and the workspace
has what was clicked. Screenshots in /tmp/workbench-notebook-shots/."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from openai_server import OpenAIServer
from test_notebook_taxonomy import script
from workbench.apps.dashboard.serve import CHROMIUM
from workbench.core.workspace import Workspace
from workbench.taxonomy.model import Taxonomy

SHOTS = Path("/tmp/workbench-notebook-shots")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(os.environ.get("WORKBENCH_NOTEBOOK_BROWSER") != "1",
                       reason="opt-in (70-95 s): WORKBENCH_NOTEBOOK_BROWSER=1 pytest tests/test_notebook_browser.py"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} missing: install Debian's chromium (scripts/setup.sh --browser)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_lab(root: Path, token: str, port: int) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("jupyter")
    proc = subprocess.Popen(
        ["timeout", "200", str(exe), "lab", "--no-browser", "--allow-root", f"--IdentityProvider.token={token}",
         f"--port={port}", f"--LabApp.workspaces_dir={root.parent / 'lab-workspaces'}",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0"],
        stdout=subprocess.DEVNULL, stderr=open(root.parent / "lab.log", "w"), stdin=subprocess.DEVNULL,
        env={**os.environ, "OPENAI_API_KEY": "sk-browser-test", "HF_HUB_OFFLINE": "1",
             "JUPYTER_CONFIG_DIR": str(root.parent / "jupyter-config"),
             "JUPYTER_RUNTIME_DIR": str(root.parent / "jupyter-runtime"), "WORKBENCH_NO_LOCAL_PROBE": "1"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.kill()
    raise AssertionError("JupyterLab did not start: " + (root.parent / "lab.log").read_text()[-2000:])


def _menu(page, menu: str, command: str) -> None:
    page.locator(".lm-MenuBar-item", has_text=menu).first.click()
    try:
        page.locator(f".lm-Menu-item[data-command='{command}']").first.click(timeout=10_000)
    except Exception:
        page.screenshot(path=str(SHOTS / "menu-failed.png"))
        Path(SHOTS / "menu-failed.html").write_text(page.content())
        raise


def test_notebook_01_review_in_jupyterlab(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(exist_ok=True)
    root = tmp_path / "lab"
    root.mkdir()
    ws_dir = tmp_path / "ws"
    with OpenAIServer(script) as server:
        nb = nbformat.read(REPO / "notebooks" / "01_taxonomy.ipynb", as_version=4)
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        params.source = (f"WORKSPACE = {str(ws_dir)!r}\nBASE_URL = {server.base_url!r}\nMODEL = 'test-model'\n"
                         "PROMPT = 'expand_child_supplement.j2'\nAB_PARENTS = 2\ninteractive = True")
        nbformat.write(nb, root / "01_taxonomy.ipynb")
        gate = next(i for i, c in enumerate(nb.cells) if "require_apply()" in c.source)
        token, port = secrets.token_hex(16), _free_port()
        lab = _start_lab(root, token, port)
        try:
            with playwright.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/lab/tree/01_taxonomy.ipynb?token={token}")
                page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
                select = page.locator(".jp-Dialog button", has_text="Select")    # JupyterLab asks for a kernel
                try:
                    select.click(timeout=15_000)
                except Exception:
                    pass                                                        # it started one without asking
                page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
                _menu(page, "Run", "runmenu:run-all")
                # Run All stops at the review, with one line saying what to do.
                stop = page.locator(".jp-OutputArea-output", has_text="Stopped for review")
                try:
                    stop.wait_for(timeout=60_000)
                except Exception:
                    page.screenshot(path=str(SHOTS / "stop-failed.png"), full_page=True)
                    (SHOTS / "stop-failed.txt").write_text(page.locator(".jp-Notebook").inner_text())
                    raise
                assert "Traceback" not in stop.inner_text() and "press Apply" in stop.inner_text()
                names = page.get_by_placeholder("new name (rename, or accept as)")
                names.first.wait_for(timeout=30_000)
                news = page.locator(".jp-toast-button", has_text="No")       # JupyterLab's news question
                if news.count():
                    news.first.click()
                ab = page.locator(".jp-OutputArea-output", has_text="A/B of expand_child_supplement.j2").first
                ab.scroll_into_view_if_needed()
                page.locator(".jp-OutputArea-output", has_text="taxonomy unchanged").first.wait_for(timeout=15_000)
                page.screenshot(path=str(SHOTS / "0-ab-table.png"))
                stop.scroll_into_view_if_needed()
                page.screenshot(path=str(SHOTS / "1-stopped-for-review.png"))

                ws = Workspace.open(ws_dir)
                proposed_before = ws.store.scalar("SELECT count(*) FROM nodes WHERE status='proposed'")
                ws.close()
                selects = page.locator(".jp-OutputArea-output select:has(option:text-is('rename'))")
                rows = [selects.nth(i) for i in range(3)]
                rows[0].select_option(label="accept")
                rows[1].select_option(label="reject")
                names.nth(2).fill("Renamed in the browser")
                names.nth(2).press("Tab")
                page.wait_for_timeout(500)
                rows[0].scroll_into_view_if_needed()
                page.screenshot(path=str(SHOTS / "2-decisions-chosen.png"))
                page.get_by_role("button", name="Apply").click()
                page.locator(".jp-OutputArea-output", has_text="3 applied").wait_for(timeout=30_000)
                page.screenshot(path=str(SHOTS / "3-applied.png"))

                # Run the gate cell and everything below it.
                cell = page.locator(".jp-Notebook .jp-Cell").nth(gate)
                cell.scroll_into_view_if_needed()
                cell.locator(".jp-InputPrompt").click()
                _menu(page, "Run", "notebook:run-all-below")
                page.locator(".jp-OutputArea-output", has_text="Next: 02_images_and_matching.ipynb").wait_for(
                    timeout=90_000)
                page.screenshot(path=str(SHOTS / "4-done.png"), full_page=False)
                errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                      has_text="Error")
                assert errors.count() == 0
                browser.close()
        finally:
            lab.terminate()
            try:
                lab.wait(timeout=15)
            except subprocess.TimeoutExpired:
                lab.kill()

    ws = Workspace.open(ws_dir)
    ocr = Taxonomy.of(ws).find("optical character recognition")          # the first parent of level 2
    kids = {c.name: c for c in Taxonomy.of(ws).children(ocr.id)}
    assert kids["optical character recognition alpha"].status == "accepted"
    assert kids["optical character recognition beta"].status == "rejected"
    renamed = kids["Renamed in the browser"]
    assert renamed.status == "proposed"                                # a rename alone stays pending
    assert ws.store.scalar("SELECT count(*) FROM nodes WHERE status='proposed' AND level=2") == proposed_before - 2
    # Level 3 ran under the accepted generated node only.
    assert [c.name for c in Taxonomy.of(ws).children(kids["optical character recognition alpha"].id)][:1] == \
        ["optical character recognition alpha alpha"]
    assert Taxonomy.of(ws).children(renamed.id) == []
    ws.close()
