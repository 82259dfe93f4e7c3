"""The dashboard's cold start: the first page (overview) right after a new server starts, against the error page's
own cold start (a new server with no workspace) measured in the same run, alternately, N times each.

    python benchmarks/bench_cold_start.py /tmp/ws-paper [--repeat 3]

Run it with the background prewarm on (WORKBENCH_DASHBOARD_PREWARM=1, the default outside the test suite): the
server's head start (workbench/apps/dashboard/perf/launch.py) is part of what is measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dashboard import PAGES, timed_open

from workbench.apps.dashboard.serve import CHROMIUM, CHROMIUM_ARGS, serve


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1500, "height": 1000})
        shells, colds = [], []
        for _ in range(args.repeat):
            with serve(Path("/nonexistent/__no_workspace__")) as base:
                shells.append(timed_open(context, f"{base}/", "[data-testid=stAlert]"))
            with serve(args.workspace) as base:
                colds.append(timed_open(context, f"{base}/", PAGES["overview"]))
        browser.close()
    shell, cold = statistics.median(shells), statistics.median(colds)
    print(f"error page, new server: {' '.join(f'{x:.2f}' for x in shells)} s (median {shell:.2f})")
    print(f"overview, new server:   {' '.join(f'{x:.2f}' for x in colds)} s (median {cold:.2f})")
    print(f"cold first page / cold error page: {cold / shell:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
