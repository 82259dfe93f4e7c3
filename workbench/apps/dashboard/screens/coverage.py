"""Taxonomy coverage: the tree as icicle / sunburst / treemap (laid out on the server, drawn by Vega-Lite), drill-down
by a click, a breadcrumb or a search, a filterable node table, duplicate suggestions and quality figures.

A 20k-leaf tree is never shipped whole (measured: 12–16 s to ship a 21k-node figure): the
chart shows the focused node's subtree a few levels deep, capped at MAX_CHART_NODES, and the
user drills down by choosing a child or searching; the server does the slicing. The node table ships its first
2,000 rows unless the user asks for 10,000 or all (the browser decodes ~180 bytes a row).

The charts are laid out on the server (`analysis/coverage.py`: `partition` for the icicle, the default, and the
sunburst; `treemap`) and drawn as Vega-Lite (`charts.py`), one point selection on `id`: a click on an inner node
focuses the chart on it, a click on the focus goes up a level (`focus_after_click`). Labels are kept only where a
band has room. Measured at paper scale: the page in a new tab 3.05 s with Plotly's sunburst, 1.7 s with the icicle.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from workbench.analysis import coverage
from workbench.analysis.duplicates import suggest_merges
from workbench.apps.dashboard import charts, data
from workbench.apps.dashboard.queries import coverage as cq
from workbench.apps.dashboard.text import md
from workbench.core.workspace import Workspace

# Laid out here (coverage.partition / treemap) and drawn as Vega-Lite, whose code is in Streamlit's own bundle: a
# Plotly sunburst made a new tab load 4.7 MB of JavaScript first (~3 s to the first chart at paper scale, 1.7 s now),
# and switching between the kinds stays a redraw. A click on a node focuses the chart on it, in every kind.
CHARTS = ["icicle", "sunburst", "treemap"]
PICK = "node"        # the tree charts' click selection
CHART_PX = 620       # the tree charts' height
TREEMAP_W = 1000     # the treemap's canvas width: about the main column's on a laptop; the chart stretches to fit
LABEL_PX = 12        # a band or rectangle shorter than this shows no label (its tooltip still names it)
CHAR_PX = 6.5        # an average label character's width
SIZES = {"task types": "task_types", "images": "images", "samples": "samples", "selected": "selected"}
COLOURS = {"share of task types with samples": "cov_samples", "share of task types with images": "cov_images"}
SECTIONS = ["Chart", "Node table", "Duplicates", "Quality"]


def render(root: str, ws: Workspace) -> None:
    frame = data.node_table(root)
    tt = data.task_types_note(root)
    if frame.empty:
        if not tt["awaiting"]:
            data.empty_state("The taxonomy is empty", "nodes")
        return
    leaves = frame[frame["is_leaf"]]
    c = st.columns(4)
    c[0].metric("task types", f"{len(leaves):,}")
    c[1].metric("nodes", f"{len(frame):,}")
    c[2].metric("task types without images", f"{int((leaves['images'] == 0).sum()):,}")
    c[3].metric("task types without samples", f"{int((leaves['samples'] == 0).sum()):,}")
    section = st.radio("Section", SECTIONS, horizontal=True, key="cov_section", label_visibility="collapsed")
    if section == "Chart":
        _chart(root, frame)
    elif section == "Node table":
        _table(frame)
    elif section == "Duplicates":
        _duplicates(ws, frame)
    else:
        _quality(root, ws, frame)


def first_screen() -> tuple[str, ...]:
    """Lazily loaded element kinds this run draws first, for the shell to send ahead (perf/primer.py)."""
    section = st.session_state.get("cov_section", SECTIONS[0])
    return {"Chart": ("vega",), "Node table": ("table",), "Quality": ("table", "vega")}.get(section, ())


def _set_focus(node_id: str) -> None:
    st.session_state["cov_focus"] = node_id


def focus_after_click(frame: pd.DataFrame, focus: str, clicked: str) -> str:
    """The focus after a click on a tree chart: an inner node becomes the focus, the focus itself goes up a
    level; a task type or a folded "(n more)" band leaves the focus as it is."""
    by_id = frame.set_index("id")
    if clicked not in by_id.index:
        return focus
    if clicked == focus:
        parent = by_id.at[clicked, "parent_id"]
        return parent if isinstance(parent, str) else ""
    return focus if bool(by_id.at[clicked, "is_leaf"]) else clicked


def _on_pick(key: str, frame: pd.DataFrame, focus: str) -> None:
    try:
        chosen = st.session_state[key]["selection"][PICK]
    except (KeyError, TypeError):
        return
    if chosen:
        st.session_state["cov_focus"] = focus_after_click(frame, focus, chosen[0].get("id", ""))


def _chart(root: str, frame: pd.DataFrame) -> None:
    st.session_state.setdefault("cov_focus", "")
    by_id = frame.set_index("id")
    focus = st.session_state["cov_focus"]
    if focus and focus not in by_id.index:
        focus = st.session_state["cov_focus"] = ""
    c1, c2, c3, c4 = st.columns([1, 1, 1.4, 1])
    kind = c1.selectbox("Chart", CHARTS, key="cov_kind")
    size_label = c2.selectbox("Size by", list(SIZES), key="cov_size")
    colour_label = c3.selectbox("Colour by", list(COLOURS), key="cov_colour")
    depth = c4.slider("Levels shown", 1, 4, 2, key="cov_depth")

    s1, s2 = st.columns([1, 2])
    query = s1.text_input("Search a node", key="cov_search", placeholder="part of a name or path")
    if query:
        hits = frame[frame["path"].str.contains(query, case=False, regex=False)].head(200)
        if hits.empty:
            s2.warning(f"no node matches {md(repr(query))}")
        else:
            s2.selectbox(f"{len(hits)} match(es) (first 200) — choose one to focus", hits["id"].tolist(),
                         format_func=lambda i: by_id.at[i, "path"], index=None, key="cov_hit",
                         on_change=lambda: _set_focus(st.session_state["cov_hit"] or ""))

    # Breadcrumbs: the focus and its ancestors; children to drill into.
    crumbs = []
    nid = focus
    while nid:
        crumbs.append(nid)
        parent = by_id.at[nid, "parent_id"]
        nid = parent if isinstance(parent, str) else ""   # a root's parent reads back as NaN
    b = st.columns([1] + [1] * min(len(crumbs), 5) + [3])
    b[0].button("⌂ All", on_click=_set_focus, args=("",), key="cov_home")
    for i, nid in enumerate(reversed(crumbs[:5])):
        b[i + 1].button(by_id.at[nid, "name"][:28], on_click=_set_focus, args=(nid,), key=f"cov_crumb_{nid}")
    kids = frame[frame["parent_id"].fillna("") == focus] if focus else frame[frame["parent_id"].isna()]
    kids = kids[~kids["is_leaf"]]
    if len(kids):
        b[-1].selectbox("Drill into", kids["id"].tolist(), index=None, key="cov_drill",
                        format_func=lambda i: f"{by_id.at[i, 'name']} ({by_id.at[i, 'task_types']:,} task types)",
                        on_change=lambda: _set_focus(st.session_state["cov_drill"] or focus),
                        placeholder="choose a child")

    sl = coverage.tree_slice(frame, focus or None, depth, SIZES[size_label], COLOURS[colour_label])
    f = sl.frame
    if f["value"].sum() == 0:
        st.info(f"Nothing to draw sized by {size_label}: every value is 0 here. "
                "Size by task types, or fill the stage that counts them.")
        return
    _tree_chart(kind, sl, frame, focus, colour_label.replace("share of ", ""))
    note = f"{len(f):,} nodes drawn, {sl.depth} level(s) below {'the focus' if focus else 'the top'}"
    if sl.depth < depth:
        note += f" (reduced from {depth} to stay under {coverage.MAX_CHART_NODES:,} nodes)"
    if sl.truncated:
        note += "; the smallest children are folded into '(n more)'"
    note += ". Red = task types without " + ("samples" if "samples" in colour_label else "images") + "."
    where = {"icicle": "the left column", "sunburst": "the middle", "treemap": "its outer rectangle"}[kind]
    st.caption(note + f" Click a node to focus on it; click the focus ({where}) to go up a level.")


def _tree_chart(kind: str, sl: coverage.TreeSlice, frame: pd.DataFrame, focus: str, colour_title: str) -> None:
    if kind == "treemap":
        lay = coverage.treemap(sl.frame, TREEMAP_W, CHART_PX)
        w, h = lay["x1"] - lay["x0"], lay["y1"] - lay["y0"]
        lay["chars"] = ((w - 6) / CHAR_PX).clip(lower=0).astype(int)
        lay["label"] = lay["name"].where((h >= LABEL_PX + 2) & (lay["chars"] >= 3), "")
        lay["edge"] = np.where(np.minimum(w, h) >= 4, 0.5, 0.0)
        spec = charts.treemap(TREEMAP_W, CHART_PX, pick=PICK, colour_title=colour_title)
        cols = ["depth", "x0", "x1", "y0", "y1", "chars"]
    else:
        lay = coverage.partition(sl.frame)
        cols_extra = []
        levels = int(lay["depth"].max()) + 1
        lay["depth_end"] = lay["depth"] + 1
        lay["depth_mid"] = lay["depth"] + 0.5
        lay["y_mid"] = (lay["y0"] + lay["y1"]) / 2
        if kind == "icicle":
            px = room = (lay["y1"] - lay["y0"]) * CHART_PX   # the band's height
            spec = charts.icicle(levels, pick=PICK, colour_title=colour_title, height=CHART_PX)
        else:
            px, room = _sunburst_labels(lay, levels)
            spec = charts.sunburst(levels, pick=PICK, colour_title=colour_title, height=CHART_PX)
            cols_extra = ["angle", "side", "label_r"]
        lay["label"] = lay["name"].where(room >= LABEL_PX, "")
        lay["edge"] = np.where(px >= 4, 0.5, 0.0)   # no white edge on slivers: it would hide their colour
        cols = ["depth", "depth_end", "depth_mid", "y0", "y1", "y_mid", *cols_extra]
    lay["path"] = lay["path"].where(lay["path"] != "", lay["name"])   # a folded "(n more)" node has no path
    rows = lay[["id", "label", "path", "task_types", "images", "samples", "colour", "edge", *cols]]
    # Keyed by kind and focus: a new chart starts with no selection, so clicking the same node again counts.
    key = f"cov_{kind}_{focus}"
    st.vega_lite_chart(rows, spec, width="stretch", key=key,
                       on_select=lambda: _on_pick(key, frame, focus), selection_mode=[PICK])


def _sunburst_labels(lay: pd.DataFrame, levels: int) -> tuple[pd.Series, pd.Series]:
    """Adds the sunburst's label placement to `lay` (angle, side, label_r: see charts.sunburst); returns each arc's
    length in pixels at its ring's middle and the room its label has across (a radial label needs its font's
    height: 10 px). A whole disc (the focus) is labelled flat in its middle."""
    px = (lay["y1"] - lay["y0"]) * 2 * np.pi * lay["depth_mid"] * (CHART_PX - 40) / 2 / levels
    turn = lay["y_mid"] * 360
    right = turn < 180
    lay["angle"] = np.where(right, turn - 90, turn + 90)
    lay["side"] = np.where(right, "right", "left")
    lay["label_r"] = lay["depth_end"] - 0.04
    disc = (lay["y1"] - lay["y0"] > 0.999) & (lay["depth"] == 0)
    lay.loc[disc, ["angle", "label_r"]] = 0
    lay.loc[disc, "side"] = "center"
    return px, px.where(~disc, CHART_PX) + 3


ROWS_SHOWN = {"2,000": 2_000, "10,000": 10_000, "all": 0}   # the browser decodes ~180 bytes a row (1.8 MB per 10k)


def _table(frame: pd.DataFrame) -> None:
    c1, c2, c3, c4, c5 = st.columns([2, 1, 1, 1.4, 0.8])
    text = c1.text_input("Filter by path", key="tbl_text")
    levels = c2.multiselect("Level", sorted(frame["level"].unique()), key="tbl_levels")
    statuses = c3.multiselect("Status", sorted(frame["status"].unique()), key="tbl_status")
    only = c4.selectbox("Show", ["all nodes", "task types", "task types without images",
                                 "task types without samples"], key="tbl_only")
    limit = ROWS_SHOWN[c5.selectbox("Rows shown", list(ROWS_SHOWN), key="tbl_rows",
                                    help="The first rows of the filtered table; filter to narrow it down.")]
    f = frame
    if text:
        f = f[f["path"].str.contains(text, case=False, regex=False)]
    if levels:
        f = f[f["level"].isin(levels)]
    if statuses:
        f = f[f["status"].isin(statuses)]
    if only != "all nodes":
        f = f[f["is_leaf"]]
    if only == "task types without images":
        f = f[f["images"] == 0]
    elif only == "task types without samples":
        f = f[f["samples"] == 0]
    st.caption(f"{len(f):,} node(s)" + (f" — the first {limit:,} shown" if limit and len(f) > limit else ""))
    cols = ["path", "level", "status", "origin", "task_types", "images", "samples", "selected", "cov_samples", "id"]
    st.dataframe(f[cols].head(limit) if limit else f[cols], hide_index=True, key="tbl", column_config={
        "cov_samples": st.column_config.ProgressColumn("covered (samples)", min_value=0, max_value=1,
                                                       format="percent")})


def _duplicates(ws: Workspace, frame: pd.DataFrame) -> None:
    c1, c2, c3 = st.columns([1, 1, 1])
    scope = c1.radio("Compare", ["siblings", "tree"], horizontal=True, key="dup_scope",
                     format_func={"siblings": "siblings only", "tree": "the whole tree"}.get)
    threshold = c2.slider("Similarity threshold", 0.5, 1.0, float(ws.config.text_embedding.duplicate_threshold),
                          0.01, key="dup_threshold")
    embed = c3.checkbox("Use text embeddings", value=True, key="dup_embed",
                        help="Off: only names equal after normalisation (instant).")
    if st.button("Find duplicate suggestions", key="dup_go"):
        with st.spinner("Embedding task names…"):
            found = suggest_merges(ws, scope=scope, threshold=threshold, embed=embed)
        st.session_state["dup_result"] = pd.DataFrame(
            [{"a": m.a_path, "b": m.b_path, "score": m.score, "kind": m.kind, "a_id": m.a_id, "b_id": m.b_id}
             for m in found], columns=["a", "b", "score", "kind", "a_id", "b_id"])
    res = st.session_state.get("dup_result")
    if res is not None:
        st.caption(f"{len(res)} suggestion(s). Merge with `workbench taxonomy merge WORKSPACE VICTIM SURVIVOR`.")
        st.dataframe(res, hide_index=True, key="dup_table")


def _quality(root: str, ws: Workspace, frame: pd.DataFrame) -> None:
    stats = cq.taxonomy_stats(root, data.version(root, "nodes"))
    c = st.columns(4)
    c[0].metric("max depth", stats["max_depth"])
    c[1].metric("largest first-level subtree", stats["largest_subtree"] or "–")
    c[2].metric("its share of task types", f"{stats['largest_subtree_share']:.1%}")
    c[3].metric("first-level categories",
                sum(1 for lv in stats["levels"] if lv["level"] == 1 for _ in range(lv["nodes"])))
    levels = pd.DataFrame(stats["levels"])
    st.dataframe(levels, hide_index=True, key="q_levels")
    depths = stats["leaf_depths"]
    st.markdown("**Task types per depth**")
    st.vega_lite_chart(pd.DataFrame({"depth": [f"depth {d}" for d in depths], "task types": list(depths.values())}),
                       charts.vbars("depth", "task types", height=240), width="stretch", key="q_depths")

    st.subheader("Paths too long for the CLIP text encoder")
    tok = cq.token_lengths(root, data.version(root, "nodes"), ws.config.clip.template, ws.config.clip.model)
    if tok["tokenizer"] is None:
        st.info("open_clip is not installed, so tokens cannot be counted (install the `clip` extra).")
        return
    n_long = int(tok["too_long"].sum())
    c = st.columns(3)
    c[0].metric("task paths over the context", f"{n_long:,}")
    c[1].metric("context length", tok["context_length"])
    c[2].metric("longest path (tokens)", int(tok["lengths"].max()) if len(tok["lengths"]) else 0)
    st.caption(f"Counted with {tok['tokenizer']} on the text template `{ws.config.clip.template}`.")
    if n_long:
        by_id = frame.set_index("id")
        ids = tok["ids"][tok["too_long"]]
        long = pd.DataFrame({"path": by_id.loc[ids, "path"].to_numpy(), "tokens": tok["lengths"][tok["too_long"]]})
        st.dataframe(long.sort_values("tokens", ascending=False), hide_index=True, key="q_long")
    truncated = cq.truncated_texts(ws)
    if truncated:
        st.warning(f"The CLIP stage recorded {truncated:,} truncated task text(s) in its embedding sets.")


def prewarm(root: str) -> None:
    data.node_table(root)


def prewarm_late(root: str) -> None:
    ws = data.open_workspace(root)
    cq.token_lengths(root, data.version(root, "nodes"), ws.config.clip.template, ws.config.clip.model)
