"""The dashboard shell: workspace from argv / env, sidebar navigation, one module per page.

The page is chosen by a sidebar radio mirrored in the URL (`?page=coverage`), so a page can be
opened directly (the browser test and the benchmark do) and AppTest can switch pages.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import threading
import time

import streamlit as st

from workbench.apps.dashboard import primer
from workbench.core.errors import WorkbenchError

log = logging.getLogger(__name__)
ENV_VAR = "WORKBENCH_WORKSPACE"
PAGES = {
    "overview": "Overview",
    "coverage": "Taxonomy coverage",
    "images": "Images per task",
    "map": "Embedding map",
    "referees": "Referees",
    "adjudicate": "Adjudicate",
    "prompts": "Prompts",
    "plan": "Plan",
    "review": "Review",
    "gaps": "Gaps",
}


def workspace_from_args(argv: list[str] | None = None) -> str | None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workspace", default=None)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args.workspace or os.environ.get(ENV_VAR)


def _page_module(name: str):
    import importlib

    return importlib.import_module(f"workbench.apps.dashboard.page_{name}")


PREWARM_DELAY_S = 1.5
PREWARM_ENV = "WORKBENCH_DASHBOARD_PREWARM"   # "0": no background prewarm (the test suite sets it)
_STOP_PREWARM = threading.Event()


def _stop_prewarm(thread: threading.Thread) -> None:
    """At exit: let the prewarm thread finish its current step instead of dying inside torch (a daemon thread
    still in a native thread pool at interpreter exit aborts the process: exit 134)."""
    _STOP_PREWARM.set()
    thread.join(timeout=60)


def prewarm_all(root: str) -> float | None:
    """Every page's `prewarm`, then every page's `prewarm_late` (slow extras, e.g. importing open_clip); returns
    the seconds taken, or None when stopped (at exit) before the end."""
    t0 = time.monotonic()
    for phase in ("prewarm", "prewarm_late"):
        for name in PAGES:
            if _STOP_PREWARM.is_set():
                return None
            fn = getattr(_page_module(name), phase, None)
            try:
                if fn is not None:
                    fn(root)
            except Exception as exc:  # a page that fails to prewarm will say so when opened
                log.warning("%s of page %s failed: %s", phase, name, exc)
    return time.monotonic() - t0


@st.cache_resource(show_spinner=False)
def _prewarm(root: str) -> threading.Thread:
    """Once per server process and workspace: fill the heavy caches of every page in the background,
    so the page a user opens next is already computed (the one being viewed computes its own)."""
    def work():
        time.sleep(PREWARM_DELAY_S)   # let the browser paint the first page before competing for the CPU
        took = prewarm_all(root)
        if took is not None:   # in the server's terminal (and the log the benchmark waits on)
            print(f"workbench: every page's data loaded in {took:.1f}s", file=sys.stderr, flush=True)

    thread = threading.Thread(target=work, name="workbench-prewarm", daemon=True)
    if os.environ.get(PREWARM_ENV, "1") == "0":
        return thread   # never started
    # No script-run context on purpose: cache spinners from this thread must not draw into a page.
    thread.start()
    atexit.register(_stop_prewarm, thread)
    return thread


def main(argv: list[str] | None = None) -> None:
    st.set_page_config(page_title="TaskGalaxy Workbench", layout="wide")
    root = workspace_from_args(argv)
    if not root:
        st.error(f"No workspace given. Start with `workbench dashboard DIR`, "
                 f"`streamlit run app.py -- --workspace DIR`, or set {ENV_VAR}.")
        return
    from workbench.apps.dashboard import data

    try:
        ws = data.open_workspace(str(root))
    except WorkbenchError as exc:
        st.error(str(exc))
        return
    keys = list(PAGES)
    wanted = st.query_params.get("page", "overview")
    if "page" not in st.session_state:
        st.session_state["page"] = wanted if wanted in PAGES else "overview"
    if st.session_state["page"] in PAGES:   # the page this run draws (the radio below keeps this value)
        mod = _page_module(st.session_state["page"])
        primer.send(mod.first_screen() if hasattr(mod, "first_screen") else getattr(mod, "FIRST_SCREEN", ()))
    with st.sidebar:
        st.markdown("### TaskGalaxy Workbench")
        st.caption(f"workspace **{ws.config.workspace.name}**  \n`{ws.root}`")
        page = st.radio("Page", keys, format_func=PAGES.get, key="page")
        if st.button("Reload data", help="Re-read the workspace now (otherwise new rows show within seconds)."):
            data.forget_derived(str(root))
    if st.query_params.get("page") != page:
        st.query_params["page"] = page
    st.title(PAGES[page])
    try:
        _page_module(page).render(str(root), ws)
    except WorkbenchError as exc:
        st.error(str(exc))
    finally:
        _prewarm(str(root))   # after this page's own queries, so the first page does not wait for the others
