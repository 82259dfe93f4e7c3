"""The dashboard's access token (`workbench dashboard --auth`, on by default beyond loopback).

Streamlit has no authentication of its own. The launcher puts a random token in the server's environment
(`serve.TOKEN_ENV`) and prints the address with `?token=…` once; `gate()` runs first on every script run and stops it
(`st.stop`) unless the session has shown that token, compared in constant time. A session that showed it keeps it
in its state, so page switches and reruns need nothing more; a new browser tab opens the printed address again.

What it does not do, said where it is offered: it gates the dashboard's pages (every page's script, so no read,
run or write of the workspace), not Streamlit's own endpoints (its static JavaScript, the health check, the
websocket, which answers with the refusal), and there is no TLS: on an untrusted network the token and the pages
travel in clear, so an SSH tunnel or an authenticating, TLS-terminating reverse proxy stays the better way.
"""

from __future__ import annotations

import hmac
import os

import streamlit as st

from workbench.apps.dashboard.serve import TOKEN_ENV, TOKEN_PARAM

_STATE = "workbench_auth_token"


def _matches(given: object, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def gate() -> None:
    """Let the run go on when no token is required or this session has shown it; otherwise say so and stop."""
    expected = os.environ.get(TOKEN_ENV)
    if not expected:
        return
    if _matches(st.session_state.get(_STATE), expected):
        return
    if _matches(st.query_params.get(TOKEN_PARAM), expected):
        st.session_state[_STATE] = st.query_params[TOKEN_PARAM]
        return
    st.error("This dashboard needs its access token: open the address `workbench dashboard` printed when it "
             "started (it ends in `?token=…`).")
    st.stop()
