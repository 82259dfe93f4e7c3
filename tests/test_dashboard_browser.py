"""End to end in headless Chromium: the dashboard server on 127.0.0.1, every page loaded, charts
drawn, no exception or error element; one chart interaction; screenshots in /tmp."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from workbench.apps.dashboard.serve import CHROMIUM, CHROMIUM_ARGS, serve
from workbench.core.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
SHOTS = Path("/tmp/workbench-dashboard-shots")
PAGES = {
    "overview": "[data-testid=stMain] [data-testid=stVegaLiteChart] svg.marks",
    "coverage": "[data-testid=stMain] [data-testid=stVegaLiteChart] svg.marks",
    "images": "[data-testid=stMain] [data-testid=stVegaLiteChart] svg.marks",
    "map": "[data-testid=stMain] [data-testid=stVegaLiteChart] canvas",
    "referees": "[data-testid=stMain] [data-testid=stVegaLiteChart] svg.marks",
    "prompts": "[data-testid=stMain] [data-testid=stDataFrame]",
}

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} missing: install Debian's chromium (scripts/setup.sh --browser)"),
]


def _small_workspace(root: Path) -> Path:
    spec = importlib.util.spec_from_file_location("make_paper_scale_workspace",
                                                  REPO / "benchmarks" / "make_paper_scale_workspace.py")
    mod = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
    if spec.name not in sys.modules:
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    mod.build(root, mod.SMALL, log=lambda *a: None)
    return root


def _idle(page):
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=60_000)
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=60_000)


def _no_errors(page, name):
    assert page.locator("[data-testid=stException]").count() == 0, f"{name}: exception shown"
    alerts = page.locator("[data-testid=stAlertContentError]")
    assert alerts.count() == 0, f"{name}: error shown: {alerts.first.inner_text()}"


def test_every_page_renders_in_chromium(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    root = _small_workspace(tmp_path / "ws")
    SHOTS.mkdir(exist_ok=True)
    with serve(root) as url, playwright.sync_playwright() as p:
        assert url.startswith("http://127.0.0.1:")
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for name, selector in PAGES.items():
            page.goto(f"{url}/?page={name}")
            page.wait_for_selector(selector, state="visible", timeout=90_000)
            _idle(page)
            _no_errors(page, name)
            page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        # Clicking a histogram bar (a Vega-Lite point selection) lists that bin's task types.
        page.goto(f"{url}/?page=images")
        page.wait_for_selector(PAGES["images"], state="visible", timeout=90_000)
        _idle(page)
        page.locator(f"{PAGES['images']} g.mark-rect path").nth(1).click()
        page.wait_for_selector("text=task type(s) with 1–10 samples", timeout=60_000)
        _no_errors(page, "images/bar click")
        # The coverage icicle painted; clicking a category's band focuses on it (its breadcrumb appears).
        page.goto(f"{url}/?page=coverage")
        page.wait_for_selector(PAGES["coverage"], timeout=90_000)
        _idle(page)
        bands = page.locator(f"{PAGES['coverage']} g.mark-rect.role-mark path")
        assert bands.count() == 9   # 3 categories + their 6 children (two levels by default)
        name = page.locator(f"{PAGES['coverage']} g.mark-text.role-mark text").first.text_content()
        bands.first.click()
        page.get_by_role("button", name=name, exact=True).wait_for(timeout=30_000)
        _idle(page)
        assert page.locator(f"{PAGES['coverage']} g.mark-rect.role-mark path").count() < 9
        _no_errors(page, "coverage/icicle click")
        page.screenshot(path=str(SHOTS / "coverage-icicle-focus.png"), full_page=True)
        # Switch to the treemap: the same focused nodes redrawn as nested rectangles (the focus holds the rest).
        chart = f"document.querySelector({PAGES['coverage']!r})"
        page.evaluate(f"() => {{ window.__before = {chart}.innerHTML; }}")
        n_focused = page.locator(f"{PAGES['coverage']} g.mark-rect.role-mark path").count()
        page.get_by_role("combobox", name="Chart", exact=True).click()
        page.get_by_role("option", name="treemap").click()
        page.wait_for_function(f"() => !!{chart} && {chart}.innerHTML !== window.__before", timeout=30_000)
        _idle(page)
        rects = page.locator(f"{PAGES['coverage']} g.mark-rect.role-mark path")
        assert rects.count() == n_focused
        outer, inner = rects.nth(0).bounding_box(), rects.nth(1).bounding_box()
        assert outer["x"] <= inner["x"] and inner["x"] + inner["width"] <= outer["x"] + outer["width"]
        assert outer["y"] < inner["y"] and inner["y"] + inner["height"] <= outer["y"] + outer["height"]
        _no_errors(page, "coverage/treemap")
        page.screenshot(path=str(SHOTS / "coverage-treemap.png"), full_page=True)
        # Sidebar navigation reaches the embedding map, drawn on a canvas; a drag across it is a box selection that
        # lists every point; the wheel zooms in (the same drag then boxes fewer points); Lasso brings Plotly's WebGL.
        page.locator("[data-testid=stSidebar]").get_by_text("Embedding map", exact=True).click()
        page.wait_for_selector("h1:has-text('Embedding map')", timeout=30_000)
        canvas = "[data-testid=stMain] [data-testid=stVegaLiteChart] canvas"
        page.wait_for_selector(canvas, timeout=60_000)
        _idle(page)

        def drag():
            box = page.locator(canvas).bounding_box()
            page.mouse.move(box["x"] + 2, box["y"] + 2)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
            page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2, steps=5)
            page.mouse.up()

        drag()
        page.wait_for_selector("h3:has-text('Selection: 40 image(s), 24 task type(s)')", timeout=60_000)
        _idle(page)
        _no_errors(page, "map/box")
        page.screenshot(path=str(SHOTS / "map-box.png"), full_page=True)
        # The selection is an action: a task type proposed for its images (analysis.gap_items, kind 'map').
        page.get_by_label("Name").fill("boxed on the map")
        page.get_by_role("button", name="Add as proposed").click()
        page.wait_for_selector("text=boxed on the map (proposed)", timeout=60_000)
        _idle(page)
        _no_errors(page, "map/propose")
        assert page.get_by_role("button", name="Export the 64 ids (TSV)").count() == 1
        page.dblclick(canvas)   # clears the box
        page.wait_for_function("() => !/Selection: /.test(document.querySelector('[data-testid=stMain]').innerText)",
                               timeout=60_000)
        _idle(page)
        box = page.locator(canvas).bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        for _ in range(5):
            page.mouse.wheel(0, -300)
            page.wait_for_timeout(100)
        drag()
        page.wait_for_function("() => /Selection: |No points in the box/.test("
                               "document.querySelector('[data-testid=stMain]').innerText)", timeout=60_000)
        _idle(page)
        assert page.locator("h3:has-text('Selection: 40 image(s), 24 task type(s)')").count() == 0
        page.locator("[data-testid=stRadio]").get_by_text("Lasso", exact=True).click()
        page.wait_for_selector("[data-testid=stMain] [data-testid=stPlotlyChart] canvas", timeout=60_000)
        _idle(page)
        n = page.evaluate("() => document.querySelector('[data-testid=stMain] .js-plotly-plot')"
                          "._fullData.reduce((a, t) => a + t._length, 0)")
        assert n == 40 + 24
        _no_errors(page, "map/lasso")
        browser.close()
    ws = Workspace.open(root)
    node = ws.store.one("SELECT status, note FROM nodes WHERE name = 'boxed on the map'")
    assert node["status"] == "proposed" and node["note"].startswith("gap (map selection): 40 image(s)")


def test_missing_workspace_shows_an_error_not_a_traceback(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    with serve(tmp_path / "nowhere") as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("[data-testid=stAlertContentError]", timeout=60_000)
        assert "workbench init" in page.locator("[data-testid=stAlertContentError]").inner_text()
        assert page.locator("[data-testid=stException]").count() == 0
        browser.close()
