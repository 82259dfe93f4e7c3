"""Real-browser timings of the dashboard at paper scale: first render of each page and widget interactions.

    python benchmarks/make_paper_scale_workspace.py /tmp/ws-paper     # once (~40 s)
    python benchmarks/bench_dashboard.py /tmp/ws-paper [--screenshots /tmp/shots]

Headless Debian Chromium through playwright. A page counts as rendered when its main element
is drawn (Plotly's SVG / WebGL canvas, or a table) and Streamlit's "running" indicator is gone.
"cold" = first visit after the server started (caches empty, the SQL runs); "warm" = the same
page opened again in a new tab (cached data, a new session). Baseline, measured in the same
run: the dashboard shell on a page with nothing heavy (the error page of a missing workspace),
so ratios show what each page costs over Streamlit's own floor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from workbench.dashboard.serve import CHROMIUM, CHROMIUM_ARGS, serve

PAGES = {  # page -> selector that means "the main content is drawn"
    "overview": "[data-testid=stPlotlyChart] .main-svg",
    "coverage": "[data-testid=stPlotlyChart] .main-svg",
    "images": "[data-testid=stPlotlyChart] .main-svg",
    "map": "[data-testid=stPlotlyChart] canvas",
    "referees": "[data-testid=stPlotlyChart] .main-svg",
    "adjudicate": "[data-testid=stDataFrame]",
    "prompts": "[data-testid=stDataFrame]",
    "plan": "[data-testid=stDataFrame]",
    "review": "[data-testid=stMain] [data-testid=stMetric]",
    # Gaps opens on its discovered-clusters section: a table, or a note naming `workbench discover`.
    "gaps": "[data-testid=stMain] [data-testid=stDataFrame], [data-testid=stMain] [data-testid=stAlert]",
}


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
    from workbench.dashboard.main import PAGES as registered

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


def interactions(context, base: str, shots: Path | None) -> dict[str, float]:
    out = {}
    page = context.new_page()
    page.goto(f"{base}/?page=images", wait_until="commit")
    page.wait_for_selector(PAGES["images"], timeout=180_000)
    wait_idle(page)
    t0 = time.perf_counter()
    page.get_by_text("Stack by category").click()
    page.wait_for_function("() => { const p = document.querySelector('.js-plotly-plot');"
                           " return p && p.data && p.data.length > 1; }", timeout=60_000)
    wait_idle(page)
    out["images: stack by category"] = time.perf_counter() - t0
    if shots:
        page.screenshot(path=str(shots / "images-stacked.png"))
    page.close()

    page = context.new_page()
    page.goto(f"{base}/?page=coverage", wait_until="commit")
    page.wait_for_selector(PAGES["coverage"], timeout=180_000)
    wait_idle(page)
    t0 = time.perf_counter()
    page.get_by_text("Node table", exact=True).click()
    page.wait_for_selector("[data-testid=stDataFrame]", timeout=60_000)
    wait_idle(page)
    out["coverage: chart -> node table"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    page.get_by_text("Chart", exact=True).click()
    page.wait_for_selector(PAGES["coverage"], timeout=60_000)
    wait_idle(page)
    out["coverage: node table -> chart"] = time.perf_counter() - t0
    page.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--screenshots", type=Path, default=None, help="folder for one screenshot per page")
    ap.add_argument("--repeat", type=int, default=2, help="warm visits per page (median reported)")
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
        # Baseline: the shell with no workspace behind it (a separate server, same machine, same run).
        with serve(args.workspace.parent / "__no_workspace__") as base0:
            timed_open(context, f"{base0}/", "[data-testid=stAlert]")           # first paint of the JS bundle
            baseline = statistics.median(timed_open(context, f"{base0}/", "[data-testid=stAlert]")
                                         for _ in range(3))
        print(f"baseline (shell, error page): {baseline:.2f}s")
        with serve(args.workspace) as base:
            rows = []
            for name, sel in PAGES.items():
                if name not in TITLES:
                    continue
                shot = args.screenshots / f"{name}.png" if args.screenshots else None
                cold = timed_open(context, f"{base}/?page={name}", sel, shot)
                warm = statistics.median(timed_open(context, f"{base}/?page={name}", sel)
                                         for _ in range(args.repeat))
                rows.append((name, cold, warm))
                print(f"{name:10s} first render cold {cold:6.2f}s  warm {warm:6.2f}s  "
                      f"(warm/baseline {warm / baseline:4.1f}x)", flush=True)
            sw = switches(context, base)
            for k, v in sw.items():
                print(f"switch via sidebar to {k:10s} {v:6.2f}s  ({v / baseline:4.1f}x baseline)", flush=True)
            inter = interactions(context, base, args.screenshots)
            for k, v in inter.items():
                print(f"interaction {k:32s} {v:6.2f}s  ({v / baseline:4.1f}x baseline)")
        browser.close()
    worst_warm = max(w for _, _, w in rows)
    worst_cold = max(c for _, c, _ in rows)
    print(f"worst first render: cold {worst_cold:.2f}s, warm {worst_warm:.2f}s, via sidebar {max(sw.values()):.2f}s; "
          f"worst interaction {max(inter.values()):.2f}s; baseline {baseline:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
