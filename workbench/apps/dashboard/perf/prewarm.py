"""The background prewarm: once per server process and workspace, after the first page has rendered, every page's
module is imported and its caches filled (`Page.prewarm`, then every page's slower `Page.prewarm_late`), so the page
a user opens next is already computed (the one being viewed computes its own).

It starts 1.5 s after the first page's own queries, prints "every page's data loaded in N s" to the server's
terminal, stops between steps at exit (joined: a daemon thread inside torch at interpreter exit aborts the process)
and is off when `WORKBENCH_DASHBOARD_PREWARM=0` (the test suite). Nothing a page prewarms may take minutes: the
Gaps page's first reference match, for one, is prewarmed only when few task-type texts still need embedding."""

from __future__ import annotations

import atexit
import functools
import logging
import os
import sys
import threading
import time

import streamlit as st

from workbench.apps.dashboard.registry import PAGES, Page

log = logging.getLogger(__name__)
PREWARM_DELAY_S = 1.5
PREWARM_ENV = "WORKBENCH_DASHBOARD_PREWARM"   # "0": no background prewarm (the test suite sets it)
_STOP_PREWARM = threading.Event()


def _stop_prewarm(thread: threading.Thread) -> None:
    """At exit: let the prewarm thread finish its current step instead of dying inside torch (a daemon thread
    still in a native thread pool at interpreter exit aborts the process: exit 134)."""
    _STOP_PREWARM.set()
    thread.join(timeout=60)


def _steps(pages: tuple[Page, ...], root: str):
    """(page, what, step) in order: each page's module imported (a page opened later does not pay it) and its
    prewarm, page by page; then every page's prewarm_late."""
    for page in pages:
        yield page, "import", page.load
        if page.prewarm is not None:
            yield page, "prewarm", functools.partial(page.prewarm, root)
    for page in pages:
        if page.prewarm_late is not None:
            yield page, "prewarm_late", functools.partial(page.prewarm_late, root)


def prewarm_all(root: str, pages: tuple[Page, ...] = PAGES) -> float | None:
    """Every page's prewarm, then every page's prewarm_late; returns the seconds taken, or None when stopped (at
    exit) before the end."""
    t0 = time.monotonic()
    for page, what, step in _steps(pages, root):
        if _STOP_PREWARM.is_set():
            return None
        try:
            step()
        except Exception as exc:  # a page that fails to prewarm will say so when opened
            log.warning("%s of page %s failed: %s", what, page.key, exc)
    return time.monotonic() - t0


@st.cache_resource(show_spinner=False)
def start(root: str) -> threading.Thread:
    """Once per server process and workspace (the shell calls it after each page's own queries, so the first page
    does not wait for the others): fill the heavy caches of every page in the background."""
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
