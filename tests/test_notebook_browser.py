"""Notebooks in a real JupyterLab (started here on 127.0.0.1) driven by headless Chromium. 01: Run All stops at the
review with one line, the review table is clicked (accept, reject, rename, Apply), the rest runs, and the workspace
has what was clicked; against a dead endpoint the trial shows the error, promotes nothing, and reopened the widget
cells say to re-run themselves. 03: a Q&A trial of three versions on four images with thumbnails and figures per
version. The notebooks' map: a lasso drawn with its tool reaches the kernel as ids. Screenshots in
/tmp/workbench-notebook-shots/."""

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
from openai_server import OpenAIServer, Reply
from test_notebook_taxonomy import script
from workbench.apps.dashboard.serve import CHROMIUM
from workbench.core.workspace import Workspace
from workbench.taxonomy.model import Taxonomy

SHOTS = Path("/tmp/workbench-notebook-shots")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} missing: install Debian's chromium (scripts/setup.sh --browser)"),
]
# The review walk-through (60-95 s) is opt-in; the trial tests (35-50 s each) run with the suite.
OPT_IN = [pytest.mark.slow,
          pytest.mark.skipif(os.environ.get("WORKBENCH_NOTEBOOK_BROWSER") != "1",
                             reason="opt-in: WORKBENCH_NOTEBOOK_BROWSER=1 pytest tests/test_notebook_browser.py")]


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


@OPT_IN[0]
@OPT_IN[1]
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
                         "PROMPT = 'expand_child_supplement.j2'\nAB_PARENTS = 2\ninteractive = True\n"
                         "BUDGET_USD = 1.0\nWINNER = None")
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
                ab = page.locator(".jp-OutputArea-output", has_text="every call answered").first
                ab.scroll_into_view_if_needed()
                ab.wait_for(timeout=15_000)
                assert page.locator(".jp-OutputArea-output", has_text="re-run this cell").count() >= 2   # the notes
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


def _run_all(p, port: int, token: str, name: str):
    """Open notebook `name` in the running lab, pick the kernel, Run All; returns (browser, page)."""
    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"http://127.0.0.1:{port}/lab/tree/{name}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    try:
        page.locator(".jp-Dialog button", has_text="Select").click(timeout=15_000)
    except Exception:
        pass
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    _menu(page, "Run", "runmenu:run-all")
    return browser, page


def _wait_text(page, text: str, shot: str, timeout: int = 90_000):
    loc = page.locator(".jp-OutputArea-output", has_text=text).first
    try:
        loc.wait_for(timeout=timeout)
    except Exception:
        page.screenshot(path=str(SHOTS / f"{shot}-failed.png"), full_page=True)
        (SHOTS / f"{shot}-failed.txt").write_text(page.locator(".jp-Notebook").inner_text())
        raise
    loc.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / f"{shot}.png"))
    return loc


def _with_lab(tmp_path, name: str, notebook: Path, params: str, body) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(exist_ok=True)
    root = tmp_path / "lab"
    root.mkdir()
    nb = nbformat.read(notebook, as_version=4)
    next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])).source = params
    nbformat.write(nb, root / name)
    token, port = secrets.token_hex(16), _free_port()
    lab = _start_lab(root, token, port)
    try:
        with playwright.sync_playwright() as p:
            browser, page = _run_all(p, port, token, name)
            try:
                body(page)
            finally:
                browser.close()
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=15)
        except subprocess.TimeoutExpired:
            lab.kill()


def test_notebook_01_dead_endpoint_trial_shows_the_error_and_promotes_nothing(tmp_path):
    """Every call fails (a 404 at once): the trial says 'no winner' with the error, WINNER is refused."""
    ws_dir = tmp_path / "ws"
    down = Reply(status=404, raw='{"error": {"message": "model m is not loaded"}}', content_type="application/json")

    def body(page):
        trial = _wait_text(page, "no winner", "5-dead-endpoint-trial")
        assert "model m is not loaded" in trial.inner_text() and "call failed" in trial.inner_text()
        _wait_text(page, "not promoted: the trial declared no winner", "6-dead-endpoint-promote")
        _wait_text(page, "Next: 02_images_and_matching.ipynb", "7-dead-endpoint-end")
        # Reopened with a fresh kernel (no widget models): the editor's cell still says how to get it back.
        _menu(page, "File", "docmanager:save")
        page.wait_for_timeout(1500)
        _menu(page, "Kernel", "kernelmenu:restart")
        page.locator(".jp-Dialog button", has_text="Restart").first.click(timeout=10_000)
        page.reload()
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        try:
            page.locator(".jp-Dialog button", has_text="Select").click(timeout=5_000)
        except Exception:
            pass
        note = _wait_text(page, "The prompt editor: a live widget", "7b-reopened", timeout=30_000)
        assert "re-run this cell" in note.inner_text()
        assert page.locator(".jp-OutputArea-output", has_text="Error displaying widget").count() >= 1

    with OpenAIServer(lambda req: down) as server:
        _with_lab(tmp_path, "01_taxonomy.ipynb", REPO / "notebooks" / "01_taxonomy.ipynb",
                  f"WORKSPACE = {str(ws_dir)!r}\nBASE_URL = {server.base_url!r}\nMODEL = 'm'\n"
                  "PROMPT = 'expand_child_supplement.j2'\nAB_PARENTS = 2\ninteractive = True\nBUDGET_USD = 1.0\n"
                  "WINNER = 'edited'", body)
    ws = Workspace.open(ws_dir)
    assert not (ws.prompts_dir / "expand_child_supplement.j2").exists()
    assert ws.store.scalar("SELECT count(*) FROM trial_promotions") == 0
    assert ws.store.scalar("SELECT status FROM trials ORDER BY id DESC LIMIT 1") == "failed"
    ws.close()


def test_notebook_03_qa_trial_of_three_versions_on_four_images(tmp_path):
    """Section 4 of 03: the Q&A prompt in use and two edited versions on the four images the filter kept task
    types for, each row with its thumbnail, then figures per version."""
    from test_vision_stages import make_workspace
    from test_vision_stages import script as vision_script

    def body(page):
        out = _wait_text(page, "Per version", "8-qa-trial", timeout=120_000)
        assert out.locator("img").count() == 4
        text = out.inner_text()
        for col in ("current (qa.j2)", "edited", "edited, second", "parse failures", "cost usd"):
            assert col in text
        assert "every call answered" in text and "parse failed" in text     # one image's reply is unreadable
        _wait_text(page, "exported", "9-export")

    with OpenAIServer(vision_script, models=("vlm", "judge-a", "judge-b", "judge-c")) as server:
        ws = make_workspace(tmp_path, server.base_url)
        ws.close()
        _with_lab(tmp_path, "03_vision_stages.ipynb", REPO / "notebooks" / "03_vision_stages.ipynb",
                  f"WORKSPACE = {str(tmp_path / 'ws')!r}\nBASE_URL = None\nMODEL = None\nREFEREE_MODELS = None\n"
                  "N_IMAGES = 6\nMIN_VOTES = None\nPROGRESS = False\nBUDGET_USD = 1.0\nTRIAL_STAGE = 'qa'\n"
                  "WINNER = None", body)


def test_notebook_map_lasso_selection_reaches_python(tmp_path):
    """The notebooks' map in JupyterLab: jupyter-scatter draws the points with its legend; a lasso (its lasso tool,
    then a drag) comes back to the kernel as ids."""
    pytest.importorskip("jscatter")
    from test_notebook_map import map_workspace

    ws = map_workspace(tmp_path)
    ws.close()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("WS = None", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(
                    "from workbench.analysis import projection\nfrom workbench.apps import notebook_map as nbmap\n"
                    "from workbench.core.workspace import Workspace\nws = Workspace.open(WS)\n"
                    "proj = projection.load(ws, 'k1')\nview = nbmap.MapView(ws, proj, projection.points(ws, proj))\n"
                    "view"),
                nbformat.v4.new_code_cell("print('SELECTED:', view.selection().summary())")]
    path = tmp_path / "map.ipynb"
    nbformat.write(nb, path)

    def body(page):
        _wait_text(page, "lasso tool", "8-map")
        canvas = page.locator(".jp-OutputArea-output canvas").first
        canvas.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)                      # the first frame
        assert page.locator(".jp-OutputArea-output", has_text="object recognition").count() >= 1   # the legend
        page.locator(".jp-OutputArea-output button[title='Activate lasso selection']").click()
        box = canvas.bounding_box()
        x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
        ring = [(0.02, 0.02), (0.98, 0.02), (0.98, 0.98), (0.02, 0.98), (0.02, 0.03)]
        page.mouse.move(x0 + ring[0][0] * w, y0 + ring[0][1] * h)
        page.mouse.down()
        for fx, fy in ring[1:]:
            page.mouse.move(x0 + fx * w, y0 + fy * h, steps=15)
        page.mouse.up()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(SHOTS / "9-map-lassoed.png"))
        last = page.locator(".jp-Notebook .jp-Cell").nth(2)
        last.locator(".jp-InputPrompt").click()
        page.keyboard.press("Shift+Enter")
        out = _wait_text(page, "SELECTED:", "10-map-selection", timeout=30_000)
        # The points lie on a diagonal; the first and last sit on the canvas's edge, outside the ring drawn.
        assert "3 image(s), 1 task type(s) selected" in out.inner_text(), out.inner_text()

    _with_lab(tmp_path, "map.ipynb", path, f"WS = {str(tmp_path / 'ws')!r}", body)
