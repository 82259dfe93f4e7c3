"""`python -m workbench.apps.dashboard.perf.launch run SCRIPT [options] -- --workspace DIR`: Streamlit's own command
line (what `workbench dashboard` and the tests run, see serve.streamlit_command), with a head start for the first
page.

A new server is idle while the browser loads Streamlit's JavaScript (~1 s on 2 cores); only then does the first
script run import pandas and the dashboard (~1 s) and read the overview's figures (~1 s at paper scale). Here a
thread does both meanwhile: it imports the modules the first page needs, and, once Streamlit's runtime exists
(its caches live there), computes the first page's cached figures (its `prewarm`), which the script run then finds,
or waits for under the same cache key (never computed twice). Nothing else is started early: the other pages'
prewarm still waits for the first page to render (perf/prewarm.py).

Measured at paper scale (`benchmarks/bench_cold_start.py`, a new server three times per version in one run): the
first page took 5.1-5.7 s before three changes (this head start, the table versions' separate subqueries in data.py,
the overview's task types counted in SQL) and 3.4-3.8 s after; the error page's own cold start is 1.9-2.5 s.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

from workbench.apps.dashboard.perf.prewarm import PREWARM_ENV
from workbench.apps.dashboard.registry import PAGES
from workbench.apps.dashboard.serve import workspace_from_args

log = logging.getLogger(__name__)
RUNTIME_WAIT_S = 30


def head_start(root: str | None, prewarm: bool) -> None:
    """Import what the first page needs; then, when `prewarm`, fill its caches once the runtime is up. Failures are
    only logged: the page computes (and reports) them itself."""
    try:
        # Imported here, in this thread, on purpose: that is the head start (pandas is most of the time). At the top
        # of this module they would hold up the server's start instead.
        from streamlit import runtime

        from workbench.apps.dashboard import data  # lazy: the head start imports it in this thread

        first = PAGES[0]
        first.load()
        if not (prewarm and root and first.prewarm):
            return
        deadline = time.monotonic() + RUNTIME_WAIT_S
        while not runtime.exists():   # before it exists a cache would be a throwaway in-memory one
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        t0 = time.monotonic()
        data.open_workspace(root)
        first.prewarm(root)
        print(f"workbench: the {first.title.lower()}'s figures read in {time.monotonic() - t0:.1f}s", file=sys.stderr,
              flush=True)
    except Exception as exc:
        log.warning("dashboard head start failed: %s", exc)


def run(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    root = workspace_from_args(args[args.index("--") + 1:] if "--" in args else [])   # the script's own arguments
    prewarm = os.environ.get(PREWARM_ENV, "1") != "0"
    if root and not os.path.isdir(root):
        root = None   # the page itself says what is wrong with it
    threading.Thread(target=head_start, args=(root, prewarm), name="workbench-head-start", daemon=True).start()
    from streamlit.web.cli import main as streamlit_main  # after the thread has started (the head start's point)

    sys.argv = ["streamlit", *args]
    streamlit_main(prog_name="streamlit")


if __name__ == "__main__":
    run()
