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

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from workbench.analysis.gap_items import ORIGIN
from workbench.apps.dashboard import data
from workbench.apps.dashboard.queries import gaps as gq
from workbench.apps.dashboard.reference_box import reference_box
from workbench.apps.dashboard.text import md
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.review.adjudication import flag
from workbench.taxonomy.model import Taxonomy
from workbench.taxonomy.names import SEP

SECTIONS = {"discovered": "Discovered clusters", "reference": "Against a reference", "audits": "Audited datasets",
            "drill": "Items behind a gap"}
INLINE_EMBED_MAX = 3_000   # texts embedded on opening the section (seconds); above, only when asked (minutes)
COLORS = {"covered": "#2ca02c", "gap": "#d62728", "untested": "#ff7f0e", "tested": "#2ca02c"}


# -- adding a proposed node -------------------------------------------------------------------------
def _add_form(root: str, ws: Workspace, key: str, name: str, default_parent: str | None, origin: str, note: str,
              on_added=None) -> None:
    choices = gq.parent_choices(root, gq.nodes_version(root))
    paths = ["(top level)"] + list(choices)
    c1, c2, c3 = st.columns([3, 4, 2])
    new_name = c1.text_input("Name", value=name, key=f"{key}_name")
    parent = c2.selectbox("Add under", paths, index=paths.index(default_parent) if default_parent in paths else 0,
                          key=f"{key}_parent")
    if c3.button("Add as proposed", key=f"{key}_add", help="A `proposed` node; accept or reject it on Review."):
        try:
            node = Taxonomy.of(ws).add(new_name, choices.get(parent), origin=origin, status="proposed", note=note)
        except WorkbenchError as exc:
            st.error(md(exc))
            return
        if on_added:
            on_added(node)
        st.success(f"added {md(SEP.join([parent, node.name]) if parent in choices else node.name)} (proposed)")


# -- sections ---------------------------------------------------------------------------------------
def _discovered(root: str, ws: Workspace) -> None:
    if not data.has_rows(root, "discoveries"):
        st.info("No discovered clusters yet. Run `workbench discover WORKSPACE` (after match and filter): it "
                "clusters the images no task type fits and asks the VLM to name one task type per cluster.",
                icon="ℹ️")
        return
    rows = gq.discoveries(root, data.version(root, "discoveries", "nodes", "matches"))
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
    st.markdown("Nearest task types: " + "; ".join(f"{md(n['path'])} ({n['score']:.2f})" for n in r["nearest"]))
    if r["node_id"]:
        st.caption(f"proposed node: {md(r['path'])} {md('[' + str(r['node_status']) + ']')}; model {md(r['model'])}, "
                   f"prompt {r['prompt_hash']}")
        return
    st.caption(f"no node: {md(r['note'] or r['status'])}")
    parents = gq.parent_choices(root, gq.nodes_version(root))
    default = next((p for p, i in parents.items() if i == r["parent_id"]), None)

    def link(node):
        gq.link_discovery(ws, r["id"], node.id)

    _add_form(root, ws, f"gaps_disc_{r['id']}", r["name"] or "", default, "discovered",
              f"discovered cluster #{r['id']} ({r['size']} unfit images), added on the Gaps page", link)


def _tree_figure(labels, parents, colors, title) -> go.Figure:
    # Boxes show the last level only (a whole path is unreadable at box size); the hover names the path.
    fig = go.Figure(go.Treemap(labels=labels, parents=parents, ids=labels, marker={"colors": colors},
                               text=[str(x).split(SEP)[-1] for x in labels], textinfo="text",
                               branchvalues="remainder", hoverinfo="label"))
    fig.update_layout(title=title, margin={"l": 0, "r": 0, "t": 30, "b": 0}, height=420)
    return fig


def _reference(root: str, ws: Workspace) -> None:
    pick = reference_box(ws.root, gq.bundled_references())   # never an arbitrary server path (reference_box.py)
    if not pick:
        return
    todo = gq.pending(root, gq.nodes_version(root), gq.embed_cache_version(root))
    if todo > INLINE_EMBED_MAX and not st.session_state.get("gaps_embed_ok"):
        n = len(gq.parent_choices(root, gq.nodes_version(root)))
        st.info(f"Matching against a reference first needs sentence embeddings of {todo:,} texts of your {n:,} task "
                f"types (names, paths, phrasings): about {max(1, round(todo / 300 / 60))} minute(s) on a CPU, once — "
                "they are kept in the workspace, and every reference is matched in seconds afterwards. "
                f"`workbench taxonomy coverage {ws.root} REFERENCE` does the same from a terminal.", icon="ℹ️")
        st.button("Embed and match now", key="gaps_embed_go", type="primary",
                  on_click=lambda: st.session_state.update(gaps_embed_ok=True))
        return
    cov = gq.coverage(root, gq.nodes_version(root), pick)
    rows = cov["rows"]
    if not rows:
        st.info("The reference has no tasks.")
        return
    for p in cov["problems"][:5]:
        st.warning(md(p))
    gaps = [r for r in rows if not r["covered"]]
    m = st.columns(3)
    m[0].metric("reference tasks", len(rows))
    m[1].metric("covered", len(rows) - len(gaps))
    m[2].metric("gaps", len(gaps))
    st.caption(f"How far to trust it: {cov['quality']}.")
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
                         "nearest task type": r["nearest_path"], "score": r["score"],
                         "confidence": r["confidence"]} for r in gaps])
    st.dataframe(gdf.sort_values(["category", "score"], ascending=[True, False]), hide_index=True,
                 width="stretch")
    pick_gap = st.selectbox("Gap", [r["reference_path"] for r in gaps], key="gaps_gap")
    g = next(r for r in gaps if r["reference_path"] == pick_gap)
    st.dataframe(pd.DataFrame(g["candidates"])[["path", "score"]].rename(columns={"path": "nearest task types"}),
                 hide_index=True, width="stretch")
    near = g["nearest_path"]
    # the nearest task type's parent; a first-level nearest itself (never the top level by default: issue 27)
    default_parent = (near.rsplit(SEP, 1)[0] if SEP in near else near) if near else None
    _add_form(root, ws, "gaps_ref_add", pick_gap.split(SEP)[-1], default_parent, "reference",
              f"gap of reference {Path(pick).name}: {pick_gap}")


def _audits(root: str, ws: Workspace) -> None:
    if not data.has_rows(root, "audit_datasets"):
        st.info("No audited datasets yet. Run `workbench audit WORKSPACE DATASET` on a LLaVA-format dataset.",
                icon="ℹ️")
        return
    v = data.version(root, "audit_datasets", "nodes")
    names = list(gq.audits(root, v)["name"])
    chosen = st.multiselect("Datasets (one, or two side by side)", names, default=names[:1], max_selections=2,
                            key="gaps_audits")
    if not chosen:
        return
    fig = go.Figure()
    frames = {}
    for n in chosen:
        frames[n] = gq.audit_areas(root, v, n)
        fig.add_bar(name=n, x=frames[n]["path"], y=frames[n]["items"])
    fig.update_layout(barmode="group", height=400, margin={"l": 0, "r": 0, "t": 40, "b": 0}, yaxis_title="items",
                      legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"})   # clear of the modebar
    st.plotly_chart(fig, width="stretch", key="gaps_audit_chart")
    for n, f in frames.items():
        missing = f[f["items"] == 0]["path"].tolist()
        st.caption(f"{md(n)}: first-level areas with no items: {md(', '.join(missing)) if missing else 'none'}")
        _audit_checks(root, v, n)


def _pct(x) -> str:
    return "–" if x is None else f"{x:.0%}"


def _audit_checks(root: str, v: tuple, name: str) -> None:
    c = gq.audit_checks(root, v, data.version(root, "audit_labels"), name)
    if str(c["backend"]).startswith("static"):
        st.warning(f"{md(name)}: assigned with the fast static text model ({c['backend']}), a quick look: its top-1 "
                   "agrees with the sentence model on about half the items. `--text-backend minilm` for the "
                   "reference audit.")
    lab = c["labels"]
    if lab.get("answered"):
        m = st.columns(4)
        m[0].metric(f"{md(name)}: items an LLM labelled", f"{lab['answered']:,}")
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
        st.caption(f"{md(name)}: no LLM label sample yet — `workbench audit {data.open_workspace(root).root} DATASET "
                   f"--name {name} --label-sample 200` checks the assignment on a sample.")
    img = c["image"]
    if img:
        st.caption(f"{md(name)}: {img.get('with_image', 0):,} items with an image (CLIP {img.get('clip_model', '?')}); "
                   f"image and text top-1 agree on {_pct(img.get('top1_agree'))}, same first level on "
                   f"{_pct(img.get('category_agree'))}, image top-1 in the text top-k on "
                   f"{_pct(img.get('image_top1_in_text_topk'))}.")


# -- drill-down: the items, images and samples behind a gap, and actions on them -----------------------
DRILL_KINDS = {"category": "a first-level category", "task_type": "a task type", "empty": "an empty task type",
               "reference_gap": "a reference gap", "cluster": "a discovered cluster"}
THUMBS = 12   # thumbnails drawn per drill-down (the table lists the rest)


def _drill_target(root: str, kind: str) -> tuple[str, object, str | None] | None:
    """(drill kind, target, reference) picked by the person, or None when there is nothing to pick."""
    choices = gq.parent_choices(root, gq.nodes_version(root))
    if kind == "category":
        cats = [p for p in choices if SEP not in p]
        return ("category", st.selectbox("Category", cats, key="gaps_drill_cat"), None) if cats else None
    if kind == "task_type":
        return ("task_type", st.selectbox("Task type", list(choices), key="gaps_drill_tt"), None) if choices else None
    if kind == "empty":
        empty = gq.empty_types(root, data.version(root, "nodes", "matches"))
        if not empty:
            st.info("No empty task type: every task type is some image's best match (or `workbench match` has not "
                    "run: then every one is empty).", icon="ℹ️")
            return None
        return "task_type", st.selectbox(f"Empty task type ({len(empty):,})", empty, key="gaps_drill_empty"), None
    if kind == "reference_gap":
        refs = gq.bundled_references()
        ref = st.selectbox("Reference task list", refs, format_func=lambda p: Path(p).name, key="gaps_drill_ref")
        gaps = [r["reference_path"] for r in gq.coverage(root, gq.nodes_version(root), ref)["rows"]
                if not r["covered"]]
        if not gaps:
            st.success("Every task of this reference is covered.")
            return None
        return "reference_gap", st.selectbox("Reference gap", gaps, key="gaps_drill_gap"), ref
    rows = gq.discoveries(root, data.version(root, "discoveries", "nodes", "matches")) \
        if data.has_rows(root, "discoveries") else []
    if not rows:
        st.info("No discovered clusters yet: `workbench discover WORKSPACE`.", icon="ℹ️")
        return None
    labels = {r["id"]: f"#{r['id']} {r['name'] or '(unnamed)'} — {r['size']} images" for r in rows}
    return "cluster", st.selectbox("Cluster", list(labels), format_func=labels.get, key="gaps_drill_cluster"), None


def _drill(root: str, ws: Workspace) -> None:
    kind = st.radio("What is behind", list(DRILL_KINDS), format_func=DRILL_KINDS.get, horizontal=True,
                    key="gaps_drill_kind")
    picked = _drill_target(root, kind)
    if picked is None:
        return
    dkind, target, ref = picked
    audit = None
    if dkind in ("category", "task_type") and data.has_rows(root, "audit_datasets"):
        names = list(gq.audits(root, data.version(root, "audit_datasets", "nodes"))["name"])
        audit = st.selectbox("Audited dataset's items too", ["(none)"] + names, key="gaps_drill_audit")
        audit = None if audit == "(none)" else audit
    try:
        d = gq.gap_drill(root, gq.drill_version(root), dkind, target, ref, audit)
    except WorkbenchError as exc:
        st.error(md(str(exc)))
        return
    st.markdown(f"**{md(d.target)}** — task types behind it: " + "; ".join(md(p) for p in d.paths[:10])
                + (" …" if len(d.paths) > 10 else ""))
    for n in d.notes:
        st.info(md(n), icon="ℹ️")
    _drill_images(root, d)
    if not d.samples.empty:
        st.subheader(f"Samples ({len(d.samples)})")
        # "review": a link that opens the sample on the Adjudicate page, to vote on it or flag it there
        table = d.samples.drop(columns=["file"]).assign(review="adjudicate?sample=" + d.samples["sample_id"])
        st.dataframe(table, hide_index=True, width="stretch", key="gaps_drill_samples", column_config={
            "review": st.column_config.LinkColumn("review", display_text="open on Adjudicate")})
    if d.audit is not None:
        st.subheader(f"Items of {md(audit)} ({len(d.audit)})")
        st.dataframe(d.audit, hide_index=True, width="stretch")
    drill_actions(root, ws, d, dkind)


def _drill_images(root: str, d) -> None:
    if d.images.empty:
        return
    st.subheader(f"Images ({len(d.images)})")
    cols = st.columns(6)
    for k, rec in enumerate(d.images.head(THUMBS).to_dict("records")):
        thumb = data.thumbnail(root, rec["image_id"], 160)
        cap = f"{rec['task_path'].split(SEP)[-1]} · {rec['score']:.2f}"
        if thumb:
            cols[k % 6].image(thumb, caption=cap)
        else:
            cols[k % 6].caption(md(f"{rec['image_id'][:10]} (file missing) {cap}"))
    st.dataframe(d.images, hide_index=True, width="stretch", key="gaps_drill_images")


def drill_actions(root: str, ws: Workspace, d, dkind: str) -> None:
    """Propose a task type for the drill `d` and flag its samples (also the embedding map's selection actions)."""
    st.subheader("Act on it")
    st.caption(f"Propose a task type for this gap (its note records: {md(d.provenance)}).")
    on_added = None
    if dkind == "cluster":
        def on_added(node):
            gq.link_discovery(ws, target_id(d), node.id)
    _add_form(root, ws, f"gaps_drill_add_{dkind}", d.name, d.parent_path, ORIGIN.get(dkind, "manual"),
              d.provenance, on_added)
    ids = list(d.samples["sample_id"]) if not d.samples.empty else []
    if not ids:
        return
    c1, c2, c3 = st.columns([4, 4, 2])
    c1.multiselect("Samples", ids, default=ids, key="gaps_drill_flag_ids")
    c2.text_input("Reason", key="gaps_drill_flag_reason", placeholder="what is wrong with them")
    c3.button("Flag samples", key="gaps_drill_flag", on_click=_flag_chosen, args=(ws, d.provenance),
              help="Flagged samples are never selected nor exported until unflagged (Adjudicate page or "
              "`workbench adjudicate`).")
    msg = st.session_state.pop("gaps_drill_flag_msg", None)
    if msg:
        (st.error if msg.startswith("A flag") else st.success)(md(msg))


def _flag_chosen(ws: Workspace, provenance: str) -> None:
    """The button's callback: runs before the rerun, so the samples table below already shows the flags."""
    chosen = st.session_state.get("gaps_drill_flag_ids") or []
    reason = (st.session_state.get("gaps_drill_flag_reason") or "").strip()
    if not reason or not chosen:
        st.session_state["gaps_drill_flag_msg"] = "A flag needs a reason and at least one sample."
        return
    for sid in chosen:
        flag(ws, sid, f"{reason} [{provenance}]")
    st.session_state["gaps_drill_flag_msg"] = (f"flagged {len(chosen)} sample(s) (the 'flag' column above); the "
                                               "Adjudicate page lists and unflags them")


def target_id(d) -> int:
    """A cluster drill's number (its target reads "#N name (...)")."""
    return int(d.target.split()[0].lstrip("#"))


def render(root: str, ws: Workspace) -> None:
    section = st.radio("Section", list(SECTIONS), format_func=SECTIONS.get, horizontal=True, key="gaps_section")
    {"discovered": _discovered, "reference": _reference, "audits": _audits, "drill": _drill}[section](root, ws)


def prewarm(root: str) -> None:
    gq.parent_choices(root, gq.nodes_version(root))


def prewarm_late(root: str) -> None:
    """The first bundled reference's match, unless the tree's text embeddings would take minutes (on request)."""
    refs = gq.bundled_references()
    if refs and gq.pending(root, gq.nodes_version(root), gq.embed_cache_version(root)) <= INLINE_EMBED_MAX:
        gq.coverage(root, gq.nodes_version(root), refs[0])
