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
    "map": "[data-testid=stMain] [data-testid=stPlotlyChart] .imagelayer image",
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


def lasso(page, path: list[tuple[float, float]]) -> None:
    """Draw a lasso on the map's Plotly plot area through `path` (fractions of its width and height)."""
    b = page.locator("[data-testid=stMain] [data-testid=stPlotlyChart] .nsewdrag").first.bounding_box()
    page.mouse.move(b["x"] + b["width"] * path[0][0], b["y"] + b["height"] * path[0][1])
    page.mouse.down()
    for fx, fy in path[1:]:
        page.mouse.move(b["x"] + b["width"] * fx, b["y"] + b["height"] * fy, steps=6)
    page.mouse.up()


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
        # Under load the icicle being replaced can stay in the page a moment after the run ends (once: 14 rectangles,
        # both charts): wait for the one chart to remain; a wrong count still fails, after 30 s.
        sel = f"{PAGES['coverage']} g.mark-rect.role-mark path"
        page.wait_for_function(f"() => document.querySelectorAll({sel!r}).length === {n_focused}", timeout=30_000)
        assert rects.count() == n_focused
        outer, inner = rects.nth(0).bounding_box(), rects.nth(1).bounding_box()
        assert outer["x"] <= inner["x"] and inner["x"] + inner["width"] <= outer["x"] + outer["width"]
        assert outer["y"] < inner["y"] and inner["y"] + inner["height"] <= outer["y"] + outer["height"]
        _no_errors(page, "coverage/treemap")
        page.screenshot(path=str(SHOTS / "coverage-treemap.png"), full_page=True)
        # Sidebar navigation reaches the embedding map (Plotly over the picture of every point); a lasso around it
        # selects every point; the selection proposes a task type.
        page.locator("[data-testid=stSidebar]").get_by_text("Embedding map", exact=True).click()
        page.wait_for_selector("h1:has-text('Embedding map')", timeout=30_000)
        page.wait_for_selector(PAGES["map"], timeout=60_000)
        _idle(page)
        # Around the whole plot: Plotly clamps a lasso to the plot area, so the corners outside it are its corners.
        lasso(page, [(0.5, 0.002), (1.05, -0.05), (1.05, 1.05), (-0.05, 1.05), (-0.05, -0.05), (0.49, 0.002)])
        page.wait_for_selector("h3:has-text('Selection: 40 image(s), 24 task type(s)')", timeout=60_000)
        _idle(page)
        _no_errors(page, "map/lasso")
        page.screenshot(path=str(SHOTS / "map-lasso.png"), full_page=True)
        # The selection is an action: a task type proposed for its images (analysis.gap_items, kind 'map').
        page.get_by_label("Name").fill("lassoed on the map")
        page.get_by_role("button", name="Add as proposed").click()
        page.wait_for_selector("text=lassoed on the map (proposed)", timeout=60_000)
        _idle(page)
        _no_errors(page, "map/propose")
        assert page.get_by_role("button", name="Export the 64 ids (TSV)").count() == 1
        browser.close()
    ws = Workspace.open(root)
    node = ws.store.one("SELECT status, note FROM nodes WHERE name = 'lassoed on the map'")
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
