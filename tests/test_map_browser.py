"""The embedding map in headless Chromium at the paper's taxonomy scale: a lasso drawn on the map selects a region,
and the selection proposes a task type, stored with its provenance and shown.

Scale: the paper's 19,227 task types (a 4-level taxonomy of 40 first-level categories) and 10,000 images, 29,227
points (benchmarks/make_paper_scale_workspace.py with fewer images and no Q&A: its 100k images take ~70 s to
generate). The browser's share does not grow with the map: it draws the server's picture of every point (no markers
over it by default); the 119k-point map is timed by benchmarks/bench_dashboard.py.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from tests.test_dashboard_app import _generator
from tests.test_dashboard_browser import _idle, _no_errors, lasso

from workbench.apps.dashboard.serve import CHROMIUM, CHROMIUM_ARGS, serve
from workbench.core.workspace import Workspace

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} missing: install Debian's chromium (scripts/setup.sh --browser)"),
]
MAP = "[data-testid=stMain] [data-testid=stPlotlyChart] .imagelayer image"   # the picture of every point


def test_a_lasso_on_the_paper_scale_map_proposes_a_task_type(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    gen = _generator()
    root = tmp_path / "ws"
    scale = gen.Scale(l1=40, l2=10, l3=6, leaves=19_227, images=10_000, keep=0.0, pngs=12, llm_calls_per_stage=10)
    summary = gen.build(root, scale, log=lambda *a: None)
    assert summary["task_types"] == 19_227
    with serve(root) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(f"{url}/?page=map")
        page.wait_for_selector(MAP, timeout=90_000)
        _idle(page)
        _no_errors(page, "map")
        # Every point is in the picture; no markers over it until asked for (each would slow the lasso).
        assert page.locator(MAP).count() == 1
        assert page.get_by_text("No points are drawn as markers over the picture (29,227 points)").count() == 1
        # A lasso around the middle of the map: every point inside it, drawn in the sample or not.
        t0 = time.perf_counter()
        lasso(page, [(0.3, 0.3), (0.7, 0.3), (0.75, 0.6), (0.5, 0.75), (0.3, 0.65), (0.31, 0.31)])
        heading = page.wait_for_selector("h3:has-text('Selection: ')", timeout=60_000).inner_text()
        _idle(page)
        selected = time.perf_counter() - t0
        n_img, n_task = map(int, re.findall(r"[\d,]+", heading.replace(",", ""))[:2])
        assert 0 < n_img < 10_000 and 0 < n_task < 19_227, heading
        _no_errors(page, "map/lasso")
        page.get_by_label("Name").fill("lassoed at paper scale")
        page.get_by_role("button", name="Add as proposed").click()
        page.wait_for_selector("text=lassoed at paper scale (proposed)", timeout=60_000)
        _idle(page)
        _no_errors(page, "map/propose")
        assert page.get_by_role("button", name=f"Export the {n_img + n_task:,} ids (TSV)").count() == 1
        browser.close()
    with Workspace.open(root) as ws:
        node = ws.store.one("SELECT n.status, n.origin, n.note, p.level AS parent_level FROM nodes n "
                            "JOIN nodes p ON p.id = n.parent_id WHERE n.name = 'lassoed at paper scale'")
    assert (node["status"], node["origin"]) == ("proposed", "manual")
    assert node["note"].startswith(f"gap (map selection): {n_img} image(s)")
    assert node["parent_level"] == 3   # preselected: the parent of the task type the selection matches best
    print(f"lasso -> selection shown in {selected:.2f}s")
