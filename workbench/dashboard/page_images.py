"""Images per task: task types per paper bin (0, 1–10, 11–20, 21–40, …) of images or samples,
per first-level category, long-tail figures; choosing a bin lists its task types."""

from __future__ import annotations

import plotly.colors as pc
import plotly.graph_objects as go
import streamlit as st

from workbench.analysis import coverage
from workbench.dashboard import data

MEASURES = {"samples (Q&A written)": "samples", "images (CLIP matches)": "images", "selected samples": "selected"}


def render(root: str, ws) -> None:
    frame = data.node_table(root)
    if frame.empty:
        data.empty_state("The taxonomy is empty", "nodes")
        return
    leaves = frame[frame["is_leaf"]]
    c1, c2, c3 = st.columns([1.3, 1.3, 1])
    measure_label = c1.radio("Count per task type", list(MEASURES), key="ipt_measure", horizontal=True)
    measure = MEASURES[measure_label]
    cats = sorted(leaves["category"].unique())
    cat = c2.selectbox("First-level category", ["(all)"] + cats, key="ipt_cat")
    stacked = c3.checkbox("Stack by category", value=False, key="ipt_stack", disabled=cat != "(all)")
    if cat != "(all)":
        leaves = leaves[leaves["category"] == cat]
    if leaves[measure].sum() == 0:
        table = {"samples": "samples", "images": "matches", "selected": "selections"}[measure]
        data.empty_state(f"No {measure} per task type yet", table)
        return

    tail = coverage.long_tail(leaves[measure])
    m = st.columns(6)
    m[0].metric("task types", f"{tail['task_types']:,}")
    m[1].metric(f"total {measure}", f"{tail['total']:,}")
    m[2].metric(f"with no {measure}", f"{tail['zero']:,}")
    m[3].metric("median per task type", f"{tail['median']:g}")
    m[4].metric("top 10% of task types hold", f"{tail['top10pct_share']:.1%}")
    m[5].metric("Gini", f"{tail['gini']:.3f}")

    by_cat = stacked and cat == "(all)"
    hist, bins = coverage.histogram(leaves, measure, by_category=by_cat)
    order = [b[2] for b in bins]
    if by_cat:
        palette = pc.qualitative.Dark24 + pc.qualitative.Light24   # 48 distinct colours, not the default 10
        fig = go.Figure([go.Bar(x=g["bin"], y=g["task_types"], name=name, marker_color=palette[i % len(palette)])
                         for i, (name, g) in enumerate(hist.groupby("category", sort=True))])
        fig.update_layout(barmode="stack")
    else:
        fig = go.Figure(go.Bar(x=hist["bin"], y=hist["task_types"], text=hist["task_types"], textposition="outside"))
    fig.update_layout(height=420, margin=dict(l=0, r=0, t=10, b=0), xaxis=dict(title=f"{measure} per task type",
                      categoryorder="array", categoryarray=order), yaxis_title="task types")
    event = st.plotly_chart(fig, key="ipt_hist", on_select="rerun", selection_mode=("points",))
    picked = None
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) or event else []
    if points:
        picked = points[0].get("x")
    choice = st.selectbox("Bin", order, index=order.index(picked) if picked in order else None, key="ipt_bin",
                          placeholder="choose a bin (or click a bar) to list its task types")
    if choice:
        lab = coverage.bin_labels(leaves[measure].to_numpy(), bins)
        sel = leaves[lab == choice].sort_values(measure, ascending=False)
        st.caption(f"{len(sel):,} task type(s) with {choice} {measure}")
        st.dataframe(sel[["path", "category", "images", "samples", "selected", "id"]].head(5000), hide_index=True,
                     key="ipt_list")


def prewarm(root: str) -> None:
    data.node_table(root)
