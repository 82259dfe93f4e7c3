"""Real-browser timings of the dashboard at paper scale: first render of each page and widget interactions.

    python benchmarks/make_paper_scale_workspace.py /tmp/ws-paper     # once (~40 s)
    python benchmarks/bench_dashboard.py /tmp/ws-paper [--screenshots /tmp/shots] [--map-only]

Headless Debian Chromium through playwright. A page counts as rendered when its main element
is drawn (a Vega-Lite SVG or canvas, a Plotly canvas, the map's picture, or a table) and Streamlit's "running"
indicator is gone.
"cold" = the first page opened after the server started (the default page: imports and SQL run while
the browser loads Streamlit's bundle); then the benchmark waits until the dashboard has filled every
page's caches in the background (it prints when) and opens each page in a new tab (a new session:
what a user sees following a link) and through the sidebar (the same session), then times interactions,
each from a settled page (`settle`) until its visible effect is drawn, in `--repeat` passes (medians). Each
pass also opens the overview and the referees in a new tab right after three votes on the Adjudicate page
(a person's vote is a new version of the vote table), then takes the votes back.

Baselines, measured in the same run on this machine: "shell" = the dashboard's error page (no workspace,
no chart); "floor" = `floor_app.py`, a page with a title, a metric, a 3-bar Plotly chart and a 3-row
dataframe and no data behind it: the time Streamlit, Plotly and the data grid need before any of our
work (on a 2-core machine with software rendering most of a page's time). Each page is printed with its
excess over the floor.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

from workbench.apps.dashboard.registry import PAGES as REGISTERED
from workbench.apps.dashboard.serve import CHROMIUM, CHROMIUM_ARGS, serve
from workbench.core.workspace import Workspace
from workbench.review import adjudication as adj

PAGES = {  # page -> selector that means "the main content is drawn" (Streamlit's Vega-Lite draws SVG)
    "overview": "[data-testid=stMain] [data-testid=stVegaLiteChart] svg.marks",
    "coverage": "[data-testid=stMain] [data-testid=stVegaLiteChart] svg.marks",
    "images": "[data-testid=stMain] [data-testid=stVegaLiteChart] svg.marks",
    # The map: Plotly's chart over the picture of every point (a large map draws no markers over it by default).
    "map": "[data-testid=stMain] [data-testid=stPlotlyChart] .imagelayer image",
    "referees": "[data-testid=stMain] [data-testid=stVegaLiteChart] svg.marks",
    "adjudicate": "[data-testid=stMain] [data-testid=stDataFrame]",
    "prompts": "[data-testid=stMain] [data-testid=stDataFrame]",
    "plan": "[data-testid=stMain] [data-testid=stDataFrame]",
    "review": "[data-testid=stMain] [data-testid=stMetric]",
    # Gaps opens on its discovered-clusters section: a table, or a note naming `workbench discover`.
    "gaps": "[data-testid=stMain] [data-testid=stDataFrame], [data-testid=stMain] [data-testid=stAlert]",
}


MAP_GOALS = {"first render": 3, "lasso": 1}   # seconds, on this machine (the map's issue)


def wait_idle(page, timeout_ms: int = 120_000) -> None:
    """Until Streamlit has finished the script run (no running indicator) — checked twice, 100 ms apart."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=stStatusWidget]') "
        "&& document.querySelector('[data-testid=stApp]')", timeout=timeout_ms)
    page.wait_for_timeout(100)
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=timeout_ms)


def timed_open(context, url: str, selector: str | None, shot: Path | None = None) -> float:
    page = context.new_page()
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit")
    if selector:
        page.wait_for_selector(selector, state="visible", timeout=180_000)
    wait_idle(page)
    dt = time.perf_counter() - t0
    if shot:
        page.screenshot(path=str(shot), full_page=False)
    page.close()
    return dt


def _titles() -> dict[str, str]:
    """Page titles as the dashboard registers them (its sidebar labels); a registered page missing from
    PAGES above is reported, not silently skipped."""
    registered = {p.key: p.title for p in REGISTERED}
    missing = sorted(set(registered) - set(PAGES))
    if missing:
        print(f"not timed (no selector in PAGES): {', '.join(missing)}", file=sys.stderr)
    return {k: registered[k] for k in PAGES if k in registered}


TITLES = _titles()


def switches(context, base: str) -> dict[str, float]:
    """Open the dashboard once, then go to every page through the sidebar (what a user does)."""
    out = {}
    page = context.new_page()
    page.goto(f"{base}/?page=prompts", wait_until="commit")
    page.wait_for_selector(PAGES["prompts"], timeout=180_000)
    wait_idle(page)
    for name, sel in PAGES.items():
        if name not in TITLES:
            continue
        t0 = time.perf_counter()
        page.locator("[data-testid=stSidebar]").get_by_text(TITLES[name], exact=True).click()
        page.wait_for_selector(f"h1:has-text('{TITLES[name]}')", timeout=180_000)
        page.wait_for_selector(sel, state="visible", timeout=180_000)
        wait_idle(page)
        out[name] = time.perf_counter() - t0
    page.close()
    return out


def _open(context, base: str, name: str):
    page = context.new_page()
    page.goto(f"{base}/?page={name}", wait_until="commit")
    page.wait_for_selector(PAGES[name], state="visible", timeout=180_000)
    wait_idle(page)
    return page


def settle(page) -> None:
    """Until the page has drawn what it was doing: no script run, then two animation frames in a row 300 ms apart
    (a frame waits for the main thread, so a chart still drawing holds it back). An interaction is timed from a
    settled page: otherwise Playwright's click waits for the previous step's drawing and that wait counts as
    the click's (measured: 0.6 s of a 1.1 s 'chart -> node table')."""
    wait_idle(page)
    for _ in range(2):
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        page.wait_for_timeout(300)


def _timed(out: dict, label: str, page, act, done: str | None = None, fn: str | None = None) -> None:
    """From a settled page, run `act`, then wait until `done` (a selector) is visible or `fn` (JS) is true, then
    idle."""
    settle(page)
    t0 = time.perf_counter()
    act()
    if done:
        page.wait_for_selector(done, state="visible", timeout=120_000)
    if fn:
        page.wait_for_function(fn, timeout=120_000)
    wait_idle(page)
    out.setdefault(label, []).append(time.perf_counter() - t0)


def _remember(page, element: str) -> None:
    """Keep the current drawing of `element` (a JS expression) for `_redrawn`."""
    page.evaluate(f"() => {{ window.__before = {element}.innerHTML; }}")


def _redrawn(element: str) -> str:
    """A JS test: `element` is drawn and differs from what `_remember` kept."""
    return f"(!!{element} && {element}.innerHTML !== window.__before)"


def _choose(page, label: str, option: str):
    """Open a Streamlit selectbox by its label and pick an option."""
    page.get_by_label(label).first.click()   # the combobox input
    page.get_by_role("option", name=option, exact=True).click()


def map_interactions(context, base: str, shots: Path | None, out: dict[str, list[float]]) -> None:
    """The embedding map's: colour by outcome, a lasso (until the selection is listed), and a task type proposed
    from a lasso selection (`map_propose`)."""
    page = _open(context, base, "map")
    _timed(out, "map: colour by referee outcome", page, lambda: _choose(page, "Colour by", "referee outcome"),
           fn="() => /all passed|not refereed/.test(document.querySelector('[data-testid=stMain]').innerText)")
    if shots:
        page.screenshot(path=str(shots / "map-outcome.png"))
    _timed(out, "map: lasso (the selection listed)", page, lambda: _lasso(page),
           fn="() => /Selection: |No points in the selection/.test("
              "document.querySelector('[data-testid=stMain]').innerText)")
    if shots:
        page.screenshot(path=str(shots / "map-lasso.png"), full_page=True)
    page.close()
    map_propose(context, base, out)


def _lasso(page) -> None:
    """Draw a lasso around the middle of the map (30 mouse moves)."""
    b = page.locator("[data-testid=stMain] [data-testid=stPlotlyChart] .nsewdrag").first.bounding_box()
    path = [(0.3, 0.3), (0.7, 0.3), (0.75, 0.6), (0.5, 0.75), (0.3, 0.65), (0.31, 0.31)]
    page.mouse.move(b["x"] + b["width"] * path[0][0], b["y"] + b["height"] * path[0][1])
    page.mouse.down()
    for fx, fy in path[1:]:
        page.mouse.move(b["x"] + b["width"] * fx, b["y"] + b["height"] * fy, steps=6)
    page.mouse.up()


def map_propose(context, base: str, out: dict[str, list[float]]) -> None:
    """A selection turned into an action: a lasso, then "Add as proposed" with a new name (this adds a `proposed`
    node to the workspace; timed last, on its own page, so the node it adds does not slow the other map steps)."""
    page = _open(context, base, "map")
    settle(page)
    _lasso(page)
    page.wait_for_function("() => /Selection: \\d/.test(document.querySelector('[data-testid=stMain]').innerText)",
                           timeout=120_000)
    name = f"bench proposal {time.time_ns()}"
    page.get_by_label("Name").fill(name)
    _timed(out, "map: propose a task type from the lasso selection", page,
           lambda: page.get_by_role("button", name="Add as proposed").click(), done=f"text={name} (proposed)")
    page.close()


def interactions(context, base: str, shots: Path | None, ws_root: Path, out: dict[str, list[float]]) -> None:
    """One pass over the interactions, each time appended to `out` (label -> seconds)."""
    page = _open(context, base, "images")
    chart = "document.querySelector('[data-testid=stMain] [data-testid=stVegaLiteChart] svg.marks')"

    def stack():   # remember the drawn histogram, then ask for the stacked one: done when the drawing changed
        _remember(page, chart)
        page.get_by_text("Stack by category").click()
    _timed(out, "images: stack by category", page, stack, fn=f"() => {_redrawn(chart)}")
    if shots:
        page.screenshot(path=str(shots / "images-stacked.png"))
    page.close()

    page = _open(context, base, "coverage")
    icicle = f"document.querySelector({PAGES['coverage']!r})"
    name = page.locator(f"{PAGES['coverage']} g.mark-text.role-mark text").first.text_content()

    def focus():   # click the first category's band: done when its breadcrumb shows and the icicle was redrawn
        _remember(page, icicle)
        page.locator(f"{PAGES['coverage']} g.mark-rect.role-mark path").first.click()
    _timed(out, "coverage: click a category (focus)", page, focus,
           fn=f"() => [...document.querySelectorAll('[data-testid=stMain] button')].some(b => b.innerText === {name!r})"
              f" && {_redrawn(icicle)}")

    page.get_by_role("button", name="⌂ All").click()   # back to the top (its breadcrumb gone), untimed
    page.wait_for_function(f"() => ![...document.querySelectorAll('[data-testid=stMain] button')]"
                           f".some(b => b.innerText === {name!r})", timeout=120_000)
    for kind, mark in [("sunburst", "arc"), ("treemap", "rect"), ("icicle", "rect")]:
        def switch(kind=kind):   # done when the chart was redrawn with this kind's marks
            _remember(page, icicle)
            page.get_by_role("combobox", name="Chart", exact=True).click()
            page.get_by_role("option", name=kind, exact=True).click()
        marks = f"{PAGES['coverage']} g.mark-{mark}.role-mark"
        _timed(out, f"coverage: chart -> {kind}", page, switch,
               fn=f"() => {_redrawn(icicle)} && !!document.querySelector({marks!r})")
        if shots and kind != "icicle":
            page.screenshot(path=str(shots / f"coverage-{kind}.png"))
    _timed(out, "coverage: chart -> node table", page, lambda: page.get_by_text("Node table", exact=True).click(),
           done="[data-testid=stMain] [data-testid=stDataFrame]")
    _timed(out, "coverage: node table -> chart", page, lambda: page.get_by_text("Chart", exact=True).click(),
           done=PAGES["coverage"])
    page.close()

    map_interactions(context, base, shots, out)

    # Three votes on the Adjudicate queue as reviewer "bench" (taken back afterwards through the library).
    page = _open(context, base, "adjudicate")
    box = page.get_by_role("textbox", name="Reviewer")
    box.fill("bench")
    box.press("Enter")
    wait_idle(page)
    page.wait_for_timeout(500)
    wait_idle(page)
    voted = []
    for _ in range(3):
        sid = page.locator("p:has-text('Sample') code").first.inner_text()
        voted.append(sid)
        _timed(out, "adjudicate: vote 1 (next sample shown)", page,
               lambda: page.get_by_role("button", name="1 — good").click(),
               done=f"text=voted 1 on {sid}")
    if shots:
        page.screenshot(path=str(shots / "adjudicate-voted.png"), full_page=True)
    page.close()
    # Pages that read votes, right after a person's vote (a new version of the vote table), before taking it back.
    for name in ("overview", "referees"):
        out.setdefault(f"{name} after a vote (new tab)", []).append(timed_open(context, f"{base}/?page={name}",
                                                                                PAGES[name]))
    _take_back(ws_root, voted)

    page = _open(context, base, "review")
    _timed(out, "review: proposals -> duplicates", page,
           lambda: page.locator("[data-testid=stRadio]").get_by_text("Duplicates", exact=True).click(),
           done="button:has-text('Find near-duplicates')")
    _timed(out, "review: duplicates -> log", page,
           lambda: page.locator("[data-testid=stRadio]").get_by_text("Log", exact=True).click(),
           done="[data-testid=stMain] [data-testid=stDataFrame], [data-testid=stMain] [data-testid=stAlert]")
    page.close()

    page = _open(context, base, "gaps")
    _timed(out, "gaps: clusters -> audited datasets", page,
           lambda: page.locator("[data-testid=stRadio]").get_by_text("Audited datasets", exact=True).click(),
           fn="() => /audit/i.test(document.querySelector('[data-testid=stMain]').textContent"
              ".split('Audited datasets')[1] || '')")
    page.close()

    page = _open(context, base, "prompts")
    _timed(out, "prompts: open a new trial", page,
           lambda: page.get_by_text("Start a new trial (nothing in the workspace's data changes)").click(),
           done="[data-testid=stMain] textarea")
    page.close()


def _take_back(ws_root: Path, samples: list[str]) -> None:
    ws = Workspace.open(ws_root)
    for sid in samples:
        adj.unvote(ws, sid, "bench")


def wait_prewarm(log: Path, timeout: float = 900) -> float | None:
    """Seconds the dashboard reported for filling every page's caches (None: not reported in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"every page's data loaded in ([0-9.]+)s", log.read_text(errors="replace"))
        if m:
            return float(m.group(1))
        time.sleep(1)
    return None


def floor_time(context, repeat: int) -> tuple[float, float]:
    """(shell, floor) medians: the dashboard's error page, and floor_app.py (see the module docstring)."""
    with serve(Path("/nonexistent/__no_workspace__")) as base0:
        timed_open(context, f"{base0}/", "[data-testid=stAlert]")           # first paint of the JS bundle
        shell = statistics.median(timed_open(context, f"{base0}/", "[data-testid=stAlert]") for _ in range(3))
    floor_sel = "[data-testid=stMain] [data-testid=stPlotlyChart] .main-svg"
    with serve(Path("/nonexistent/__no_workspace__"), script=Path(__file__).with_name("floor_app.py")) as base1:
        timed_open(context, f"{base1}/", floor_sel)
        floor = statistics.median(timed_open(context, f"{base1}/", floor_sel) for _ in range(max(3, repeat)))
    return shell, floor


def sidebar_open(context, base: str, name: str, start: str = "review") -> float:
    """From a settled page of the open dashboard (`start`), a click on `name` in the sidebar until its content is
    drawn: a page's first render as a user who has the dashboard open meets it (Streamlit's and Plotly's code
    already loaded, a new script run)."""
    page = _open(context, base, start)
    settle(page)
    t0 = time.perf_counter()
    page.locator("[data-testid=stSidebar]").get_by_text(TITLES[name], exact=True).click()
    page.wait_for_selector(f"h1:has-text('{TITLES[name]}')", timeout=180_000)
    page.wait_for_selector(PAGES[name], state="visible", timeout=180_000)
    wait_idle(page)
    dt = time.perf_counter() - t0
    page.close()
    return dt


def _map_only(context, base: str, args) -> int:
    """--map-only: the map's first render (new tab, and from another page through the sidebar) and
    `map_interactions`, `--repeat` times each (medians)."""
    for how, timed in (("new tab", lambda: timed_open(context, f"{base}/?page=map", PAGES["map"])),
                       ("sidebar, from Review", lambda: sidebar_open(context, base, "map"))):
        times = [timed() for _ in range(args.repeat)]
        print(f"map        first render ({how}) {statistics.median(times):5.2f}s "
              f"(goal <= {MAP_GOALS['first render']} s)  "
              f"(min {min(times):.2f} max {max(times):.2f})", flush=True)
    passes: dict[str, list[float]] = {}
    for i in range(args.repeat):
        map_interactions(context, base, args.screenshots if i == 0 else None, passes)
    for k, v in passes.items():
        goal = f" (goal <= {MAP_GOALS['lasso']} s)" if "lasso (" in k else ""
        print(f"interaction {k:42s} {statistics.median(v):5.2f}s{goal}  (min {min(v):.2f} max {max(v):.2f})",
              flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--screenshots", type=Path, default=None, help="folder for one screenshot per page")
    ap.add_argument("--repeat", type=int, default=3,
                    help="new-tab visits per page and passes over the interactions (medians reported)")
    ap.add_argument("--map-only", action="store_true",
                    help="only the embedding map: its first render and its interactions (a quick A/B of the map)")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} missing: apt-get install -y chromium", file=sys.stderr)
        return 2
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1500, "height": 1000})
        shell, floor = floor_time(context, args.repeat)
        print(f"baselines: shell (error page) {shell:.2f}s; floor (title, metric, 3-bar Plotly chart, "
              f"3-row dataframe) {floor:.2f}s", flush=True)
        with serve(args.workspace) as base:
            log = Path(os.environ.get("TMPDIR", "/tmp")) / f"workbench-dashboard-{base.rsplit(':', 1)[1]}.log"
            first = "map" if args.map_only else "overview"
            cold = timed_open(context, f"{base}/?page={first}", PAGES[first])
            print(f"cold: first page after the server started ({first}) {cold:.2f}s", flush=True)
            pre = wait_prewarm(log)
            print(f"every page's data loaded in the background in {pre}s" if pre is not None else
                  "the background prewarm did not finish in 15 minutes", flush=True)
            if args.map_only:
                return _map_only(context, base, args)
            rows = []
            for name in PAGES:
                if name not in TITLES:
                    continue
                shot = args.screenshots / f"{name}.png" if args.screenshots else None
                times = [timed_open(context, f"{base}/?page={name}", PAGES[name], shot if i == 0 else None)
                         for i in range(args.repeat)]
                t = statistics.median(times)
                rows.append((name, t))
                print(f"{name:10s} first render (new tab) {t:5.2f}s  (floor + {t - floor:5.2f}s; "
                      f"min {min(times):.2f} max {max(times):.2f})", flush=True)
            sw = switches(context, base)
            for k, v in sw.items():
                print(f"switch via sidebar to {k:10s} {v:5.2f}s", flush=True)
            passes: dict[str, list[float]] = {}
            for i in range(args.repeat):   # the median of `repeat` passes (screenshots in the first)
                interactions(context, base, args.screenshots if i == 0 else None, args.workspace, passes)
            inter = {k: statistics.median(v) for k, v in passes.items()}
            for k, v in inter.items():
                print(f"interaction {k:42s} {v:5.2f}s  (min {min(passes[k]):.2f} max {max(passes[k]):.2f})",
                      flush=True)
        browser.close()
    worst = max(rows + [(k, v) for k, v in inter.items() if "new tab" in k], key=lambda r: r[1])
    clicks = {k: v for k, v in inter.items() if "new tab" not in k}
    print(f"worst first render {worst[1]:.2f}s ({worst[0]}; floor {floor:.2f}s, so ours +{worst[1] - floor:.2f}s); "
          f"worst sidebar switch {max(sw.values()):.2f}s; worst interaction {max(clicks.values()):.2f}s "
          f"({max(clicks, key=clicks.get)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
