"""Head starts for the browser: Streamlit's front end loads some element kinds' code only when the first such
element arrives (Plotly's 4.7 MB of JavaScript, the data grid, Vega-Lite). A hidden empty element of each kind a
run will draw, sent before the run's slow work, makes that load overlap the work instead of following it."""

from __future__ import annotations

import streamlit as st

KEY = "wb-primer"


def send(kinds: tuple[str, ...]) -> None:
    """Hidden empty elements of these kinds ("plotly", "table", "vega") in the sidebar (the main area keeps only
    the page's own elements). The shell sends the kinds a page's first screen draws before the page runs (measured:
    a page doing 0.6 s of work before its Plotly chart drew in 2.96 s without it and 2.57 s with it; the same page
    with no work 2.51 s); only kinds the page draws anyway, so the browser does no extra work."""
    if not kinds:
        return
    # Imported here: the error page (no workspace) sends nothing and so does not import pandas (~0.7 s cold).
    import pandas as pd
    import plotly.graph_objects as go

    with st.sidebar.container(key=KEY):
        st.html(f"<style>.st-key-{KEY}{{display:none}}</style>")
        if "plotly" in kinds:
            st.plotly_chart(go.Figure(), key=f"{KEY}-plotly")
        if "vega" in kinds:
            st.vega_lite_chart(pd.DataFrame({"x": [0]}), {"mark": "point"}, key=f"{KEY}-vega")
        if "table" in kinds:
            st.dataframe(pd.DataFrame({"-": []}), key=f"{KEY}-table")
