"""Overview: counts per stage, the funnel, tokens and cost per stage and model, recent stage runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.apps.dashboard import charts, data
from workbench.core.workspace import Workspace


def render(root: str, ws: Workspace) -> None:
    ov = data.overview(root)
    # The funnel mixes units (images, then image×task pairs, then samples): values only, no percentages.
    counts = ov["counts"]
    tt = data.task_types_note(root)
    if counts["task types"] == 0 and not tt["awaiting"]:
        data.empty_state("The taxonomy is empty", "nodes")
    names = list(counts)
    for row in range(0, len(names), 5):
        cols = st.columns(5)
        for col, name in zip(cols, names[row:row + 5]):
            col.metric(name, f"{counts[name]:,}")

    st.subheader("Funnel")
    funnel = [(k, v) for k, v in ov["funnel"]]
    if not any(v for _, v in funnel):
        data.empty_state("No images have gone through the pipeline", "images")
    else:
        st.vega_lite_chart(pd.DataFrame(funnel, columns=["step", "count"]), charts.hbars("step", "count"),
                           width="stretch", key="funnel")
        rule = ov["rule"]
        if rule and rule["consensus"] == "ds":
            st.caption(f"Passing the referees: Dawid–Skene consensus, P(good) ≥ {rule['min_posterior']:g}, as the "
                       f"current selection was made (select run #{rule['run']}). By k-of-N on the current votes "
                       f"({ws.config.select.min_votes} positive machine votes or a person's 1): "
                       f"{ov['kofn_passing']:,}.")
        else:
            st.caption(f"Passing the referees: select's k-of-N rule on the current votes "
                       f"({ws.config.select.min_votes} positive machine votes, or a person's 1; not flagged).")

    st.subheader("Tokens and cost per stage and model")
    usage = ov["usage"]
    if usage.empty:
        data.empty_state("No LLM calls recorded", "llm_calls")
    else:
        c1, c2, c3 = st.columns(3)
        c1.metric("prompt tokens", f"{int(usage['prompt_tokens'].sum()):,}")
        c2.metric("completion tokens", f"{int(usage['completion_tokens'].sum()):,}")
        c3.metric("cost (USD)", f"{usage['cost_usd'].sum():,.4f}")
        st.dataframe(usage, hide_index=True, key="usage")

    st.subheader("Recent stage runs")
    if ov["runs"].empty:
        data.empty_state("No stage runs yet", "stage_runs")
    else:
        st.dataframe(ov["runs"], hide_index=True, key="runs")


def prewarm(root: str) -> None:
    data.overview(root)
