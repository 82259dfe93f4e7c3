"""Referees: pass rate per referee, pairwise Cohen's kappa, Fleiss' kappa, agreement per category,
and a browser of disagreements with each referee's raw output (figures: queries/referees.py, on fully voted samples
only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from workbench.apps.dashboard import charts, data
from workbench.apps.dashboard.queries import referees as rq
from workbench.apps.dashboard.text import md
from workbench.core.workspace import Workspace


def render(root: str, ws: Workspace) -> None:
    v = data.version(root, *rq.TABLES)
    _, names = rq.vote_patterns(root, v)
    if not names:
        data.empty_state("No referee votes", "votes")
        return
    sm = rq.summary(root, v, ws.config.referee.audit_fraction)
    rates, fleiss, adaptive = sm["rates"], sm["fleiss"], sm["adaptive"]
    c = st.columns(5)
    c[0].metric("referees", len(names))
    c[1].metric("samples voted", f"{sm['voted']:,}")
    c[2].metric("fully voted samples", f"{sm['fully_voted']:,}")
    c[3].metric("samples with every vote valid", f"{sm['complete']:,}")
    c[4].metric("Fleiss' κ", "–" if np.isnan(fleiss) else f"{fleiss:.3f}")
    st.caption(f"κ figures use the {sm['fully_voted']:,} fully voted samples"
               + (f" (adaptive voting: the audit set, [referee] audit_fraction = {ws.config.referee.audit_fraction:g}; "
                  "pass rates too)" if adaptive else "") + ".")

    left, right = st.columns(2)
    with left:
        st.subheader("Pass rate per referee")
        st.vega_lite_chart(rates[["referee", "pass_rate"]], charts.vbars("referee", "pass_rate", fmt=".1%",
                                                                          y_domain=(0, 1.05)),
                           width="stretch", key="ref_pass")
        st.dataframe(rates, hide_index=True, key="ref_rates")
    with right:
        st.subheader("Pairwise Cohen's κ")
        kappa = sm["kappa"]
        cells = pd.DataFrame([{"a": a, "b": b, "kappa": float(kappa.loc[a, b])} for a in names for b in names])
        st.vega_lite_chart(cells, charts.heatmap("a", "b", "kappa", domain=(-1, 1), scheme="redblue"),
                           width="stretch", key="ref_kappa")

    st.subheader("Agreement per first-level category")
    per_cat = sm["per_cat"]
    st.dataframe(per_cat, hide_index=True, key="ref_cat", column_config={
        "unanimous": st.column_config.NumberColumn(format="percent"),
        "all_pass": st.column_config.NumberColumn(format="percent"),
        "fleiss_kappa": st.column_config.NumberColumn(format="%.3f")})

    st.subheader("Disagreements")
    cat = st.selectbox("Category", ["(all)"] + per_cat["category"].tolist(), key="ref_dis_cat")
    frame = data.node_table(root)
    node_ids = None if cat == "(all)" else tuple(frame.loc[frame["category"] == cat, "id"])
    dis = rq.disagreements(root, v, node_ids, 500)
    if dis.empty:
        st.success("The referees agree on every sample here.")
        return
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
        st.markdown(f"**Task type:** {md(_path(frame, row['node_id']))}")
        st.markdown(f"**Question:** {md(row['question'])}")
        st.markdown(f"**Answer:** {md(row['answer'])}")
        st.dataframe(rq.votes_of(ws, row["sample_id"]), hide_index=True, key="ref_votes")


def _path(frame: pd.DataFrame, node_id: str) -> str:
    hit = frame.loc[frame["id"] == node_id, "path"]
    return hit.iloc[0] if len(hit) else node_id


def prewarm(root: str) -> None:
    v = data.version(root, *rq.TABLES)
    if not rq.vote_patterns(root, v)[1]:   # no votes: the page shows its empty state and reads nothing more
        return
    rq.summary(root, v, data.open_workspace(root).config.referee.audit_fraction)
    rq.disagreements(root, v, None, 500)
