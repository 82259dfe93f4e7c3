"""Referees: pass rate per referee, pairwise Cohen's kappa, Fleiss' kappa, agreement per category,
and a browser of disagreements with each referee's raw output.

Agreement (and, once any referee voted adaptively, the pass rates) is computed on fully voted samples only:
adaptive voting asks a later referee mostly where the earlier ones disagreed, which would bias every figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from workbench.analysis import agreement
from workbench.apps.dashboard import charts, data

# Lazily loaded element kinds this page's first screen draws: main.py sends them first (primer.py).
FIRST_SCREEN = ("vega", "table")
# What the page's figures read: the referees' votes alone (a person's vote leaves them cached).
TABLES = ("machine_votes", "samples", "nodes", "stage_runs")


@st.cache_data(show_spinner="Summarising fully voted samples…", max_entries=4)
def fully_voted(root: str, v: tuple, audit_fraction: float):
    """(patterns of the fully voted samples, adaptive referee runs)."""
    store = data.open_workspace(root).store
    return (agreement.load_patterns(store, by_node=True, fully_voted=True, audit_fraction=audit_fraction)[0],
            agreement.adaptive_runs(store))


@st.cache_data(show_spinner=False, max_entries=4)
def summary(root: str, v: tuple, audit_fraction: float) -> dict:
    """Every figure the page's first screen shows, computed once per vote-table version (~0.3 s at paper scale
    that each view and click would otherwise repeat)."""
    all_patterns, names = data.vote_patterns(root, v)
    patterns, adaptive = fully_voted(root, v, audit_fraction)
    frame = data.node_table(root)
    cat_of = pd.Series(frame["category"].to_numpy(), index=frame["id"].to_numpy())
    per_cat = agreement.agreement_by(
        patterns.assign(category=patterns["node_id"].map(cat_of).fillna("(not in taxonomy)")), names, "category")
    return {"names": names, "adaptive": adaptive, "voted": int(all_patterns["n"].sum()),
            "fully_voted": int(patterns["n"].sum()),
            "complete": int(agreement.complete(patterns, names)["n"].sum()),
            "rates": agreement.pass_rates(patterns if adaptive else all_patterns, names),
            "fleiss": agreement.fleiss_from_patterns(patterns, names),
            "kappa": agreement.pairwise_kappa(patterns, names), "per_cat": per_cat}


def render(root: str, ws) -> None:
    v = data.version(root, *TABLES)
    _, names = data.vote_patterns(root, v)
    if not names:
        data.empty_state("No referee votes", "votes")
        return
    sm = summary(root, v, ws.config.referee.audit_fraction)
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
    dis = data.disagreements(root, v, node_ids, 500)
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
        st.markdown(f"**Task type:** {_path(frame, row['node_id'])}")
        st.markdown(f"**Question:** {row['question']}")
        st.markdown(f"**Answer:** {row['answer']}")
        st.dataframe(agreement.votes_of(ws.store, row["sample_id"]), hide_index=True, key="ref_votes")


def _path(frame: pd.DataFrame, node_id: str) -> str:
    hit = frame.loc[frame["id"] == node_id, "path"]
    return hit.iloc[0] if len(hit) else node_id


def prewarm(root: str) -> None:
    v = data.version(root, *TABLES)
    data.vote_patterns(root, v)
    summary(root, v, data.open_workspace(root).config.referee.audit_fraction)
    data.disagreements(root, v, None, 500)
