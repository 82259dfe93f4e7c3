"""Referees: pass rate per referee, pairwise Cohen's kappa, Fleiss' kappa, agreement per category,
and a browser of disagreements with each referee's raw output.

Agreement (and, once any referee voted adaptively, the pass rates) is computed on fully voted samples only:
adaptive voting asks a later referee mostly where the earlier ones disagreed, which would bias every figure."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from workbench.analysis import agreement
from workbench.dashboard import data

# Lazily loaded element kinds this page's first screen draws: main.py sends them first (primer.py).
FIRST_SCREEN = ("plotly", "table")


@st.cache_data(show_spinner="Summarising fully voted samples…", max_entries=4)
def fully_voted(root: str, v: tuple, audit_fraction: float):
    """(patterns of the fully voted samples, adaptive referee runs)."""
    store = data.open_workspace(root).store
    return (agreement.load_patterns(store, by_node=True, fully_voted=True, audit_fraction=audit_fraction)[0],
            agreement.adaptive_runs(store))


def render(root: str, ws) -> None:
    v = data.version(root, "votes", "samples", "nodes", "stage_runs")
    all_patterns, names = data.vote_patterns(root, v)
    if not names:
        data.empty_state("No referee votes", "votes")
        return
    patterns, adaptive = fully_voted(root, v, ws.config.referee.audit_fraction)
    rates = agreement.pass_rates(patterns if adaptive else all_patterns, names)
    fleiss = agreement.fleiss_from_patterns(patterns, names)
    full = agreement.complete(patterns, names)
    c = st.columns(5)
    c[0].metric("referees", len(names))
    c[1].metric("samples voted", f"{int(all_patterns['n'].sum()):,}")
    c[2].metric("fully voted samples", f"{int(patterns['n'].sum()):,}")
    c[3].metric("samples with every vote valid", f"{int(full['n'].sum()):,}")
    c[4].metric("Fleiss' κ", "–" if np.isnan(fleiss) else f"{fleiss:.3f}")
    st.caption(f"κ figures use the {int(patterns['n'].sum()):,} fully voted samples"
               + (f" (adaptive voting: the audit set, [referee] audit_fraction = {ws.config.referee.audit_fraction:g}; "
                  "pass rates too)" if adaptive else "") + ".")

    left, right = st.columns(2)
    with left:
        st.subheader("Pass rate per referee")
        fig = go.Figure(go.Bar(x=rates["referee"], y=rates["pass_rate"], text=[f"{r:.1%}" for r in rates["pass_rate"]],
                               textposition="outside"))
        fig.update_layout(height=320, margin=dict(l=0, r=0, t=10, b=0), yaxis=dict(range=[0, 1.05], tickformat=".0%"))
        st.plotly_chart(fig, key="ref_pass")
        st.dataframe(rates, hide_index=True, key="ref_rates")
    with right:
        st.subheader("Pairwise Cohen's κ")
        kappa = agreement.pairwise_kappa(patterns, names)
        fig = go.Figure(go.Heatmap(z=kappa.to_numpy(), x=names, y=names, zmin=-1, zmax=1, colorscale="RdBu",
                                   text=np.round(kappa.to_numpy(), 3), texttemplate="%{text}"))
        fig.update_layout(height=320, margin=dict(l=0, r=0, t=10, b=0))
        st.plotly_chart(fig, key="ref_kappa")

    st.subheader("Agreement per first-level category")
    frame = data.node_table(root)
    cat_of = dict(zip(frame["id"], frame["category"]))
    patterns = patterns.assign(category=patterns["node_id"].map(cat_of).fillna("(not in taxonomy)"))
    per_cat = agreement.agreement_by(patterns, names, "category")
    st.dataframe(per_cat, hide_index=True, key="ref_cat", column_config={
        "unanimous": st.column_config.NumberColumn(format="percent"),
        "all_pass": st.column_config.NumberColumn(format="percent"),
        "fleiss_kappa": st.column_config.NumberColumn(format="%.3f")})

    st.subheader("Disagreements")
    cat = st.selectbox("Category", ["(all)"] + per_cat["category"].tolist(), key="ref_dis_cat")
    node_ids = None if cat == "(all)" else tuple(frame.loc[frame["category"] == cat, "id"])
    dis = data.disagreements(root, v, node_ids, 500)
    if dis.empty:
        st.success("The referees agree on every sample here.")
        return
    path_of = dict(zip(frame["id"], frame["path"]))
    st.caption(f"{len(dis)} disagreement(s){' (first 500)' if len(dis) == 500 else ''}")
    i = st.number_input("Disagreement #", 1, len(dis), 1, key="ref_dis_i") - 1
    row = dis.iloc[int(i)]
    imgs = data.image_table(root, data.version(root, "images"))
    a, b = st.columns([1, 2])
    with a:
        if row["image_id"] in imgs.index:
            img = imgs.loc[row["image_id"]]
            p = data.image_path(img["root"], img["path"])
            if p.exists():
                st.image(str(p), caption=img["path"], width="stretch")
            else:
                st.warning(f"image file missing: {p}")
    with b:
        st.markdown(f"**Task type:** {path_of.get(row['node_id'], row['node_id'])}")
        st.markdown(f"**Question:** {row['question']}")
        st.markdown(f"**Answer:** {row['answer']}")
        st.dataframe(agreement.votes_of(ws.store, row["sample_id"]), hide_index=True, key="ref_votes")


def prewarm(root: str) -> None:
    v = data.version(root, "votes", "samples", "nodes", "stage_runs")
    data.vote_patterns(root, v)
    fully_voted(root, v, data.open_workspace(root).config.referee.audit_fraction)
    data.disagreements(root, v, None, 500)
