"""The dashboard shell: the workspace from argv / env, `st.navigation` over the page registry (registry.py), the
sidebar, and the frame around each page (its heading, the primer ahead of it, the background prewarm after it).

Each page has its own URL path (/coverage); the older `?page=KEY` links still open that page: at the app's root
the requested page is the navigation's default (no extra run), and on another page's path the shell switches to it
(keeping the other query parameters, e.g. `?page=map&layer=clusters`). Before anything else, `auth.gate()` stops
the run of a session without the access token when the server was started with one (auth.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import streamlit as st

from workbench.apps.dashboard import auth
from workbench.apps.dashboard.perf import prewarm, primer
from workbench.apps.dashboard.registry import BY_KEY, PAGES, Page
from workbench.apps.dashboard.serve import ENV_VAR, workspace_from_args
from workbench.apps.dashboard.text import md
from workbench.core.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.core.workspace import Workspace

PAGE_PARAM = "page"   # ?page=KEY


def main(argv: list[str] | None = None) -> None:
    st.set_page_config(page_title="TaskGalaxy Workbench", layout="wide")
    auth.gate()   # first: without the token (when one is required) nothing below runs
    root = workspace_from_args(argv)
    if not root:
        st.error(f"No workspace given. Start with `workbench dashboard DIR`, "
                 f"`streamlit run app.py -- --workspace DIR`, or set {ENV_VAR}.")
        return
    # Imported once a workspace is given: the error page above does not wait for pandas and the workspace code
    # (~1 s on a cold server, where the launch head start imports them in the background meanwhile).
    from workbench.apps.dashboard import data  # lazy: the error page does not wait for pandas

    try:
        ws = data.open_workspace(str(root))
    except WorkbenchError as exc:
        st.error(md(exc))
        return
    page, st_page = _navigate(str(root), ws)
    primer.send(page.kinds())   # before the page's work: see perf/primer.py
    _sidebar(ws, reload=functools.partial(data.forget_derived, str(root)))
    st.title(page.title)
    try:
        st_page.run()
    except WorkbenchError as exc:
        st.error(md(exc))
    finally:
        prewarm.start(str(root))   # after this page's own queries, so the first page does not wait for the others


def _navigate(root: str, ws: Workspace) -> tuple[Page, st.Page]:
    """The registry's pages in the sidebar navigation; returns the page this run draws (and its st.Page)."""
    wanted = st.query_params.get(PAGE_PARAM)
    default = wanted if wanted in BY_KEY else PAGES[0].key
    st_pages = {p.key: st.Page(functools.partial(p.render, root, ws), title=p.title, icon=p.icon, url_path=p.key,
                               default=p.key == default) for p in PAGES}
    current = st.navigation(list(st_pages.values()))
    if wanted in BY_KEY and current is not st_pages[wanted]:   # ?page=KEY on another page's path
        st.switch_page(st_pages[wanted], query_params=[(k, v) for k in st.query_params if k != PAGE_PARAM
                                                       for v in st.query_params.get_all(k)])
    key = next(k for k, p in st_pages.items() if p is current)
    return BY_KEY[key], current


def _sidebar(ws: Workspace, reload: Callable[[], None]) -> None:
    with st.sidebar:
        st.markdown("### TaskGalaxy Workbench")
        st.caption(f"workspace **{md(ws.config.workspace.name)}**  \n`{ws.root}`")
        if st.button("Reload data", help="Re-read the workspace now (otherwise new rows show within seconds)."):
            reload()
