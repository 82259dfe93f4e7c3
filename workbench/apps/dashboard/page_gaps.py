"""Gaps: what the taxonomy lacks, three ways, and one click to propose a task type for it.

- Reference: a benchmark's task list beside our tree (analysis/reference_coverage.py), coloured covered / gap,
  gaps grouped by the reference's own category, a gap's nearest task types with scores.
- Audits: a stored audit of an SFT dataset (analysis/audit.py) as items per first-level area, two side by side.
- Discovered: clusters of images no task type fits (analysis/discovery.py) with their exemplars and how many of
  their images an accepted node now takes.
From a gap or a cluster, a button adds a `proposed` node (origin 'reference' or 'discovered') under a chosen
parent; reviewing it is the Review page's job. The default section is the cheap one; the reference's coverage
(sentence embeddings of every path) is computed in the background by `prewarm_late` and cached per taxonomy.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from workbench.apps.dashboard import data
from workbench.core.resources import REFERENCE_DIR
from workbench.taxonomy.model import Taxonomy
from workbench.taxonomy.names import SEP

# Lazily loaded element kinds this page's first screen draws: main.py sends them first (primer.py).
FIRST_SCREEN = ("table",)

SECTIONS = {"discovered": "Discovered clusters", "reference": "Against a reference", "audits": "Audited datasets"}
REF_DIR = REFERENCE_DIR
COLORS = {"covered": "#2ca02c", "gap": "#d62728", "untested": "#ff7f0e", "tested": "#2ca02c"}


def bundled_references() -> list[str]:
    return sorted(str(p) for p in REF_DIR.glob("*.txt"))


# -- cached reads ---------------------------------------------------------------------------------
@st.cache_data(show_spinner="Matching the reference's tasks to our task types…", max_entries=8)
def coverage(root: str, v: tuple, reference: str) -> dict:
    from workbench.analysis.reference_coverage import reference_coverage

    rep = reference_coverage(data.open_workspace(root), reference)
    return {"rows": [asdict(r) for r in rep.rows], "our_areas": rep.our_areas, "threshold": rep.threshold,
            "problems": [str(p) for p in rep.problems]}


INLINE_EMBED_MAX = 3_000   # texts embedded on opening the section (seconds); above, only when asked (minutes)


def _embed_cache_v(root: str) -> tuple:
    from workbench.models.textembed import workspace_cache_dir

    d = workspace_cache_dir(data.open_workspace(root))
    return tuple(sorted((f.name, f.stat().st_mtime_ns) for f in d.glob("*.npz"))) if d.exists() else ()


@st.cache_data(show_spinner="Checking which task types have text embeddings…", max_entries=4)
def pending(root: str, v: tuple, cache_v: tuple) -> int:
    from workbench.analysis.reference_coverage import pending_embeddings

    return pending_embeddings(data.open_workspace(root))


@st.cache_data(show_spinner=False, max_entries=4)
def discoveries(root: str, v: tuple) -> list[dict]:
    from workbench.analysis.discovery import discovery_report

    ws = data.open_workspace(root)
    report = {r["id"]: r for r in discovery_report(ws)}
    rows = ws.store.query("SELECT id, name, status, size, cohesion, exemplar_ids, nearest, parent_id, node_id, "
                          "duplicate_of, note, model, prompt_hash FROM discoveries ORDER BY size DESC, id")
    return [{**dict(r), "exemplar_ids": json.loads(r["exemplar_ids"]), "nearest": json.loads(r["nearest"]),
             **{k: report[r["id"]][k] for k in ("node_status", "path", "matched", "top1", "topk")}} for r in rows]


@st.cache_data(show_spinner=False, max_entries=4)
def audits(root: str, v: tuple) -> pd.DataFrame:
    from workbench.analysis.audit import list_audits

    return list_audits(data.open_workspace(root))


@st.cache_data(show_spinner="Reading the audit…", max_entries=8)
def audit_areas(root: str, v: tuple, name: str) -> pd.DataFrame:
    from workbench.analysis.audit import audit_frame

    df = audit_frame(data.open_workspace(root), name)
    return df[df["level"] == 1][["path", "items", "with_items", "cov_items"]].reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=4)
def parent_choices(root: str, v: tuple) -> dict[str, str]:
    """{path: node id} of live nodes, for 'add under'."""
    idx = Taxonomy.of(data.open_workspace(root)).index()
    return {idx.paths[i]: i for i in idx.dfs()}


def _nodes_v(root: str) -> tuple:
    return data.version(root, "nodes")


# -- adding a proposed node -------------------------------------------------------------------------
def _add_form(root: str, ws, key: str, name: str, default_parent: str | None, origin: str, note: str,
              on_added=None) -> None:
    choices = parent_choices(root, _nodes_v(root))
    paths = ["(top level)"] + list(choices)
    c1, c2, c3 = st.columns([3, 4, 2])
    new_name = c1.text_input("Name", value=name, key=f"{key}_name")
    parent = c2.selectbox("Add under", paths, index=paths.index(default_parent) if default_parent in paths else 0,
                          key=f"{key}_parent")
    if c3.button("Add as proposed", key=f"{key}_add", help="A `proposed` node; accept or reject it on Review."):
        from workbench.core.errors import WorkbenchError

        try:
            node = Taxonomy.of(ws).add(new_name, choices.get(parent), origin=origin, status="proposed", note=note)
        except WorkbenchError as exc:
            st.error(str(exc))
            return
        if on_added:
            on_added(node)
        st.success(f"added {SEP.join([parent, node.name]) if parent in choices else node.name} (proposed)")


# -- sections ---------------------------------------------------------------------------------------
def _discovered(root: str, ws) -> None:
    if not data.has_rows(root, "discoveries"):
        st.info("No discovered clusters yet. Run `workbench discover WORKSPACE` (after match and filter): it "
                "clusters the images no task type fits and asks the VLM to name one task type per cluster.",
                icon="ℹ️")
        return
    rows = discoveries(root, data.version(root, "discoveries", "nodes", "matches"))
    st.dataframe(pd.DataFrame([{
        "#": r["id"], "name": r["name"], "status": r["status"], "node": r["node_status"] or "", "images": r["size"],
        "cohesion": r["cohesion"], "now best match": r["top1"] if r["matched"] else None,
        "nearest task type": r["nearest"][0]["path"] if r["nearest"] else "",
        "nearest score": r["nearest"][0]["score"] if r["nearest"] else None} for r in rows]),
        hide_index=True, width="stretch")
    st.caption("'now best match': of the cluster's previously unfit images, how many the node (or its subtree) "
               "takes as best match after it is accepted and `workbench match` has run.")
    st.markdown("[See the clusters on the embedding map](?page=map&layer=clusters) (rings: a cluster's images, "
                "stars: its exemplars)")
    labels = {r["id"]: f"#{r['id']} {r['name'] or '(unnamed)'} — {r['size']} images, {r['status']}" for r in rows}
    pick = st.selectbox("Cluster", list(labels), format_func=labels.get, key="gaps_cluster")
    r = next(x for x in rows if x["id"] == pick)
    cols = st.columns(min(6, max(1, len(r["exemplar_ids"]))))
    for c, image_id in zip(cols, r["exemplar_ids"]):
        thumb = data.thumbnail(root, image_id, 160)
        if thumb:
            c.image(thumb, caption=image_id[:10])
        else:
            c.caption(f"{image_id[:10]} (file missing)")
    st.markdown("Nearest task types: " + "; ".join(f"{n['path']} ({n['score']:.2f})" for n in r["nearest"]))
    if r["node_id"]:
        st.caption(f"proposed node: {r['path']} [{r['node_status']}]; model {r['model']}, prompt {r['prompt_hash']}")
        return
    st.caption(f"no node: {r['note'] or r['status']}")
    parents = parent_choices(root, _nodes_v(root))
    default = next((p for p, i in parents.items() if i == r["parent_id"]), None)

    def link(node):
        with ws.store.write() as conn:
            conn.execute("UPDATE discoveries SET node_id=?, status='proposed' WHERE id=?", (node.id, r["id"]))

    _add_form(root, ws, f"gaps_disc_{r['id']}", r["name"] or "", default, "discovered",
              f"discovered cluster #{r['id']} ({r['size']} unfit images), added on the Gaps page", link)


def _tree_figure(labels, parents, colors, title) -> go.Figure:
    # Boxes show the last level only (a whole path is unreadable at box size); the hover names the path.
    fig = go.Figure(go.Treemap(labels=labels, parents=parents, ids=labels, marker={"colors": colors},
                               text=[str(x).split(SEP)[-1] for x in labels], textinfo="text",
                               branchvalues="remainder", hoverinfo="label"))
    fig.update_layout(title=title, margin={"l": 0, "r": 0, "t": 30, "b": 0}, height=420)
    return fig


def _reference(root: str, ws) -> None:
    refs = bundled_references()
    c1, c2 = st.columns([2, 3])
    pick = c1.selectbox("Reference task list", refs + ["(a file…)"], format_func=lambda p: Path(p).name,
                        key="gaps_ref")
    if pick == "(a file…)":
        pick = c2.text_input("Path of a task list (one `A~B` path per line, JSON or CSV)", key="gaps_ref_file")
        if not pick:
            return
    todo = pending(root, _nodes_v(root), _embed_cache_v(root))
    if todo > INLINE_EMBED_MAX and not st.session_state.get("gaps_embed_ok"):
        n = len(parent_choices(root, _nodes_v(root)))
        st.info(f"Matching against a reference first needs sentence embeddings of {todo:,} texts of your {n:,} task "
                f"types (names, paths, phrasings): about {max(1, round(todo / 300 / 60))} minute(s) on a CPU, once — "
                "they are kept in the workspace, and every reference is matched in seconds afterwards. "
                f"`workbench taxonomy coverage {ws.root} REFERENCE` does the same from a terminal.", icon="ℹ️")
        st.button("Embed and match now", key="gaps_embed_go", type="primary",
                  on_click=lambda: st.session_state.update(gaps_embed_ok=True))
        return
    cov = coverage(root, _nodes_v(root), pick)
    rows = cov["rows"]
    if not rows:
        st.info("The reference has no tasks.")
        return
    for p in cov["problems"][:5]:
        st.warning(p)
    gaps = [r for r in rows if not r["covered"]]
    m = st.columns(3)
    m[0].metric("reference tasks", len(rows))
    m[1].metric("covered", len(rows) - len(gaps))
    m[2].metric("gaps", len(gaps))
    tested = {r["nearest_category"] for r in rows if r["covered"]}
    left, right = st.columns(2)
    # the reference's tree, leaves coloured covered / gap
    labels, parents, colors = [], [], []
    for cat in dict.fromkeys(r["reference_category"] for r in rows):
        labels.append(f"ref: {cat}"), parents.append(""), colors.append("#dddddd")
    for r in rows:
        labels.append(r["reference_path"]), parents.append(f"ref: {r['reference_category']}")
        colors.append(COLORS["covered" if r["covered"] else "gap"])
    left.plotly_chart(_tree_figure(labels, parents, colors, "Reference (green: covered, red: gap)"),
                      width="stretch", key="gaps_ref_tree")
    areas = cov["our_areas"]
    right.plotly_chart(_tree_figure(areas, [""] * len(areas),
                                    [COLORS["tested" if a in tested else "untested"] for a in areas],
                                    "Our first-level areas (orange: the reference never tests)"),
                       width="stretch", key="gaps_our_tree")
    if not gaps:
        st.success("Every reference task is covered at the current threshold.")
        return
    st.subheader("Gaps by the reference's category")
    gdf = pd.DataFrame([{"category": r["reference_category"], "reference task": r["reference_path"],
                         "nearest task type": r["nearest_path"], "score": r["score"]} for r in gaps])
    st.dataframe(gdf.sort_values(["category", "score"], ascending=[True, False]), hide_index=True,
                 width="stretch")
    pick_gap = st.selectbox("Gap", [r["reference_path"] for r in gaps], key="gaps_gap")
    g = next(r for r in gaps if r["reference_path"] == pick_gap)
    st.dataframe(pd.DataFrame(g["candidates"])[["path", "score"]].rename(columns={"path": "nearest task types"}),
                 hide_index=True, width="stretch")
    near = g["nearest_path"]
    default_parent = near.rsplit(SEP, 1)[0] if near and SEP in near else None
    _add_form(root, ws, "gaps_ref_add", pick_gap.split(SEP)[-1], default_parent, "reference",
              f"gap of reference {Path(pick).name}: {pick_gap}")


def _audits(root: str, ws) -> None:
    if not data.has_rows(root, "audit_datasets"):
        st.info("No audited datasets yet. Run `workbench audit WORKSPACE DATASET` on a LLaVA-format dataset.",
                icon="ℹ️")
        return
    v = data.version(root, "audit_datasets", "nodes")
    names = list(audits(root, v)["name"])
    chosen = st.multiselect("Datasets (one, or two side by side)", names, default=names[:1], max_selections=2,
                            key="gaps_audits")
    if not chosen:
        return
    fig = go.Figure()
    frames = {}
    for n in chosen:
        frames[n] = audit_areas(root, v, n)
        fig.add_bar(name=n, x=frames[n]["path"], y=frames[n]["items"])
    fig.update_layout(barmode="group", height=400, margin={"l": 0, "r": 0, "t": 40, "b": 0}, yaxis_title="items",
                      legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"})   # clear of the modebar
    st.plotly_chart(fig, width="stretch", key="gaps_audit_chart")
    for n, f in frames.items():
        missing = f[f["items"] == 0]["path"].tolist()
        st.caption(f"{n}: first-level areas with no items: {', '.join(missing) if missing else 'none'}")
        _audit_checks(root, v, n)


@st.cache_data(show_spinner=False, max_entries=8)
def audit_checks(root: str, v: tuple, labels_v: tuple, name: str) -> dict:
    """What says how far to trust an audit: its text backend, the LLM label sample's agreement and the image
    assignment's agreement with the text (when they ran)."""
    from workbench.analysis.audit_label import label_agreement

    ws = data.open_workspace(root)
    stored = ws.store.scalar("SELECT summary FROM audit_datasets WHERE name=?", (name,))
    summary = json.loads(stored) if stored else {}   # written when the audit finished
    return {"backend": summary.get("text_backend") or "minilm", "long_tail": summary.get("long_tail"),
            "labels": label_agreement(ws, name), "image": summary.get("image")}


def _pct(x) -> str:
    return "–" if x is None else f"{x:.0%}"


def _audit_checks(root: str, v: tuple, name: str) -> None:
    c = audit_checks(root, v, data.version(root, "audit_labels"), name)
    if str(c["backend"]).startswith("static"):
        st.warning(f"{name}: assigned with the fast static text model ({c['backend']}), a quick look: its top-1 "
                   "agrees with the sentence model on about half the items. `--text-backend minilm` for the "
                   "reference audit.")
    lab = c["labels"]
    if lab.get("answered"):
        m = st.columns(4)
        m[0].metric(f"{name}: items an LLM labelled", f"{lab['answered']:,}")
        m[1].metric("embedding top-1 = LLM label", _pct(lab.get("top1")))
        m[2].metric("LLM label among the top-k", _pct(lab.get("topk_hit")))
        m[3].metric("LLM said none fits", _pct(lab.get("none_share")))
        per = pd.DataFrame([{"category (embedding top-1)": k, "answered": f["answered"], "top-1 agrees": f["top1"],
                             "in top-k": f["topk_hit"], "none fits": f["none_share"]}
                            for k, f in lab.get("by_category", {}).items()])
        if not per.empty:
            st.dataframe(per, hide_index=True, width="stretch", column_config={
                k: st.column_config.NumberColumn(format="percent") for k in ("top-1 agrees", "in top-k",
                                                                              "none fits")})
    else:
        st.caption(f"{name}: no LLM label sample yet — `workbench audit {data.open_workspace(root).root} DATASET "
                   f"--name {name} --label-sample 200` checks the assignment on a sample.")
    img = c["image"]
    if img:
        st.caption(f"{name}: {img.get('with_image', 0):,} items with an image (CLIP {img.get('clip_model', '?')}); "
                   f"image and text top-1 agree on {_pct(img.get('top1_agree'))}, same first level on "
                   f"{_pct(img.get('category_agree'))}, image top-1 in the text top-k on "
                   f"{_pct(img.get('image_top1_in_text_topk'))}.")


def render(root: str, ws) -> None:
    section = st.radio("Section", list(SECTIONS), format_func=SECTIONS.get, horizontal=True, key="gaps_section")
    {"discovered": _discovered, "reference": _reference, "audits": _audits}[section](root, ws)


def prewarm(root: str) -> None:
    parent_choices(root, _nodes_v(root))


def prewarm_late(root: str) -> None:
    """The first bundled reference's match, unless the tree's text embeddings would take minutes (on request)."""
    refs = bundled_references()
    if refs and pending(root, _nodes_v(root), _embed_cache_v(root)) <= INLINE_EMBED_MAX:
        coverage(root, _nodes_v(root), refs[0])
