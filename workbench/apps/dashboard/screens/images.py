"""Images per task: task types per paper bin (0, 1–10, 11–20, 21–40, …) of images or samples,
per first-level category, long-tail figures; choosing a bin lists its task types, choosing a task
type shows thumbnails of its matched images."""

from __future__ import annotations

import plotly.colors as pc
import streamlit as st

from workbench.analysis import coverage
from workbench.apps.dashboard import charts, data
from workbench.apps.dashboard.queries import images as iq
from workbench.apps.dashboard.text import md
from workbench.core.workspace import Workspace

MEASURES = {"samples (Q&A written)": "samples", "images (CLIP matches)": "images", "selected samples": "selected"}
THUMBS = 24       # thumbnails shown for a chosen task type (its best-scoring matches)
THUMB_PX = 160
PICK = "pick"     # the histogram's bar selection
PALETTE = list(pc.qualitative.Dark24) + list(pc.qualitative.Light24)   # 48 distinct colours, not the default 10


def default_measure(leaves) -> int:
    """Index of the first measure that has data (samples, else images, else selected); samples when none do,
    so an empty workspace names the stage to run first."""
    for i, m in enumerate(MEASURES.values()):
        if leaves[m].sum() > 0:
            return i
    return 0


def render(root: str, ws: Workspace) -> None:
    frame = data.node_table(root)
    if frame.empty:
        data.empty_state("The taxonomy is empty", "nodes")
        return
    leaves = frame[frame["is_leaf"]]
    c1, c2, c3 = st.columns([1.3, 1.3, 1])
    measure_label = c1.radio("Count per task type", list(MEASURES), key="ipt_measure", horizontal=True,
                             index=default_measure(leaves))
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
    event = st.vega_lite_chart(hist, charts.histogram(order, f"{measure} per task type", pick=PICK, stacked=by_cat,
                                                      palette=PALETTE),
                               width="stretch", key="ipt_hist", on_select="rerun", selection_mode=[PICK])
    picked = None
    try:
        chosen = event["selection"][PICK]
        picked = chosen[0].get("bin") if chosen else None
    except (KeyError, TypeError, AttributeError):
        pass
    # A newly clicked bar sets the bin (the box keeps its own value otherwise: a widget's index applies only when
    # it is first drawn, so the click is written into its state before it is drawn).
    if picked in order and picked != st.session_state.get("ipt_last_pick"):
        st.session_state["ipt_bin"] = picked
    st.session_state["ipt_last_pick"] = picked
    choice = st.selectbox("Bin", order, index=None, key="ipt_bin",
                          placeholder="choose a bin (or click a bar) to list its task types")
    if choice:
        lab = coverage.bin_labels(leaves[measure].to_numpy(), bins)
        sel = leaves[lab == choice].sort_values(measure, ascending=False)
        st.caption(f"{len(sel):,} task type(s) with {choice} {measure}")
        st.dataframe(sel[["path", "category", "images", "samples", "selected", "id"]].head(5000), hide_index=True,
                     key="ipt_list")
    _task_images(root, sel if choice else leaves.sort_values("images", ascending=False))


def _task_images(root: str, candidates) -> None:
    """Thumbnails of the images matched to one chosen task type (of the listed bin, else any with images)."""
    candidates = candidates[candidates["images"] > 0].head(5000)
    if candidates.empty:
        return
    path_of = dict(zip(candidates["id"], candidates["path"]))
    node = st.selectbox("Show the images of a task type", list(path_of), index=None, format_func=path_of.get,
                        key="ipt_task", placeholder="choose a task type to see its matched images")
    if not node:
        return
    shown = iq.task_images(root, data.version(root, "matches", "images"), node, THUMBS)
    total = int(candidates.loc[candidates["id"] == node, "images"].iloc[0])
    st.caption(f"{len(shown):,} of {total:,} matched image(s), best CLIP score first")
    thumbs, captions, missing = [], [], []
    for r in shown:
        t = data.thumbnail(root, r["image_id"], THUMB_PX)
        if t is None:
            missing.append(r["path"])
            continue
        thumbs.append(t)
        captions.append(f"#{r['rank']} · {r['score']:.2f}")
    if thumbs:
        st.image(thumbs, caption=captions, width=THUMB_PX)
    if missing:
        st.warning(f"{len(missing)} image file(s) missing or changed since registration, e.g. {md(missing[0])}")


def prewarm(root: str) -> None:
    data.node_table(root)
