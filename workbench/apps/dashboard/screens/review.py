"""Review: the proposed task types, grouped by parent, by stage run or by origin; accept / reject one at a time or
a whole subtree, run or origin at once; rename, move or merge one; near-duplicates side by side with the words that
differ highlighted, merged only after an explicit confirmation per pair; the review log with undo.

Every write goes through `workbench/review/decisions.py` (the functions `workbench taxonomy accept|reject|undo` and
the notebook's review table use), logged with the reviewer named once in the sidebar (default: the OS user).
"""

from __future__ import annotations

import difflib
import getpass
import re

import pandas as pd
import streamlit as st

from workbench.analysis.duplicates import suggest_merges
from workbench.apps.dashboard import data
from workbench.apps.dashboard.queries import review as rq
from workbench.apps.dashboard.text import md
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.review import decisions as dec

GROUPS = {"parent": "parent", "run": "stage run", "origin": "origin"}
ROWS_PER_GROUP = 50       # rows drawn with their own buttons; bulk actions cover the whole group regardless
PROPOSED = "proposed"     # what a row's decision expects the node to still be (dec.Decision.expect)
WROTE = "rv_wrote"        # set by a write from inside the proposals fragment: the whole page must redraw


def _group_key(df: pd.DataFrame, by: str) -> pd.Series:
    if by == "parent":
        return df.parent_path.fillna("(first level)")
    if by == "run":
        return df.stage_run_id.map(lambda r: "(no stage run)" if pd.isna(r) else f"run {int(r)}")
    return df.origin


# -- writes (button callbacks: they run before the page re-renders) --------------------------------------
def reviewer() -> str:
    if "reviewer" not in st.session_state:
        try:
            st.session_state["reviewer"] = getpass.getuser()
        except Exception:   # no OS user name: the reviewer types one
            st.session_state["reviewer"] = ""
    return st.session_state["reviewer"]


def _say(kind: str, text: str) -> None:
    st.session_state["rv_msg"] = (kind, text)


def _decide(root: str, decisions: list[dec.Decision]) -> None:
    try:
        results = dec.apply_decisions(data.open_workspace(root), decisions, reviewer=reviewer() or None,
                                      source="dashboard")
    except WorkbenchError as exc:
        return _say("error", str(exc))
    bad = [r for r in results if r.status == "failed"]
    text = "; ".join(f"{r.path or r.node_id}: {r.outcome if r.status != 'applied' else r.detail}" for r in results)
    _say("error" if bad else "warning" if any(r.status == "skipped" for r in results) else "success", text)


def _bulk(root: str, target: str, status: str) -> None:
    ws = data.open_workspace(root)
    kind, _, value = target.partition(":")
    try:
        if kind == "subtree":
            ids = dec.select_proposals(ws, under=value)
        elif kind == "run":
            ids = dec.select_proposals(ws, stage_run_id=int(value))
        else:
            ids = dec.select_proposals(ws, origin=value)
        counts = dec.bulk_status(ws, ids, status, reviewer=reviewer() or None, source="dashboard",
                                 expect="proposed")
    except WorkbenchError as exc:
        return _say("error", str(exc))
    extra = dec.bulk_counts_text(counts)
    _say("warning" if counts["decided_meanwhile"] else "success",
         f"{status} {counts['applied']} node(s) ({target})" + (f"; {extra}" if extra else ""))


def _one(root: str, node_id: str, action: str) -> None:
    s = st.session_state
    s[WROTE] = True   # its button sits in the fragment: the fragment's first line reruns the whole page
    # expect: the row showed a proposal; a decision someone else made since is not overridden.
    d = {"rename": lambda: dec.Decision(node_id, "rename", new_name=s.get("rv_new_name") or None, expect=PROPOSED),
         "move": lambda: dec.Decision(node_id, "move", new_parent=s.get("rv_new_parent") or "", expect=PROPOSED),
         "merge": lambda: dec.Decision(node_id, "merge", into=s.get("rv_merge_into") or None, expect=PROPOSED)
         }.get(action)
    if action == "merge" and not s.get("rv_merge_ok"):
        return _say("error", "tick 'confirm the merge' first: a merge cannot be undone")
    try:
        _decide(root, [d() if d else dec.Decision(node_id, action, expect=PROPOSED)])
    except WorkbenchError as exc:
        _say("error", str(exc))
    for k in ("rv_new_name", "rv_new_parent", "rv_merge_into"):
        s[k] = ""
    s["rv_merge_ok"] = False


def _undo(root: str) -> None:
    try:
        rows = dec.undo(data.open_workspace(root), int(st.session_state.get("rv_undo_n") or 1),
                        reviewer=reviewer() or None)
    except WorkbenchError as exc:
        return _say("error", str(exc))
    _say("success", f"undid {len(rows)} change(s): " + "; ".join(f"{r['action']} {r['path']}" for r in rows[:5])
         + (" …" if len(rows) > 5 else ""))


def _merge_pair(root: str, i: int) -> None:
    sug = st.session_state.get("rv_dups", [])[i]
    if not st.session_state.get(f"rv_dup_ok_{i}"):
        return _say("error", "tick the pair's confirmation first: nothing is merged without it")
    keep_b = st.session_state.get(f"rv_dup_keep_{i}") == "second"
    victim, keep = (sug.a_id, sug.b_id) if keep_b else (sug.b_id, sug.a_id)
    _decide(root, [dec.Decision(victim, "merge", into=keep)])
    st.session_state[f"rv_dup_done_{i}"] = True


# -- drawing -----------------------------------------------------------------------------------------
def word_diff(a: str, b: str) -> tuple[str, str]:
    """Both texts as Markdown (with HTML) with the words that differ highlighted (difflib over words; `~` and
    spaces kept); every token escaped by `md`, so the names show as typed."""
    ta, tb = re.split(r"(\s+|~)", a), re.split(r"(\s+|~)", b)
    out_a, out_b = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ta, b=tb, autojunk=False).get_opcodes():
        for out, toks, lo, hi in ((out_a, ta, i1, i2), (out_b, tb, j1, j2)):
            for t in toks[lo:hi]:
                marked = op != "equal" and t.strip() and t != "~"
                out.append(f"<mark>{md(t)}</mark>" if marked else md(t))
    return "".join(out_a), "".join(out_b)


def _sidebar() -> None:
    reviewer()
    with st.sidebar:
        st.text_input("Reviewer", value=st.session_state["reviewer"], key="rv_reviewer_box",
                      help="Your name in the review log (set once; kept for this session).",
                      on_change=lambda: st.session_state.__setitem__("reviewer",
                                                                     st.session_state["rv_reviewer_box"].strip()))


def render(root: str, ws: Workspace) -> None:
    _sidebar()
    if not data.has_rows(root, "nodes"):
        data.empty_state("No taxonomy to review", "nodes")
        return
    st.session_state.pop(WROTE, None)   # this run draws the whole page anyway
    # The message and the 'last decision' line have fixed slots: an element coming or going would shift every
    # element below it, and the browser would show the old row buttons beside the new ones until the run ends.
    box = st.empty()
    kind, msg = st.session_state.pop("rv_msg", (None, None))
    if kind == "error":
        box.error(md(msg))
    elif kind == "warning":       # applied, but some nodes were left as someone else decided them meanwhile
        box.warning(md(msg))
    elif kind:
        box.success(md(msg))
    v = rq.nodes_version(root)
    df = rq.pending(root, v)
    last = dec.undoable(ws, 1)
    c = st.columns([1, 1, 1, 3])
    c[0].metric("pending proposals", f"{len(df):,}")
    c[1].metric("parents", f"{df.parent_id.nunique():,}")
    c[2].metric("stage runs", f"{df.stage_run_id.dropna().nunique():,}")
    with c[3]:
        line = st.empty()
        if last:
            r = last[0]
            line.caption(f"last decision: {r['action']} {md(r['path'])} by {md(r['reviewer'])} at {r['at'][:19]}"
                         + (f" (+{len(last) - 1} more in the same batch)" if len(last) > 1 else ""))
        u = st.columns([1, 2])
        u[0].number_input("decisions", 1, 100, 1, key="rv_undo_n", label_visibility="collapsed")
        u[1].button("Undo", key="rv_undo", on_click=_undo, args=(root,), disabled=not last,
                    help="Reverse the last N decisions (a bulk accept is one): status, name, parent back.")
    section = st.radio("Section", ["Proposals", "Duplicates", "Log"], horizontal=True, key="rv_section",
                       label_visibility="collapsed")
    if section == "Proposals":
        if df.empty:
            st.info("No pending proposals: `workbench expand WORKSPACE --level N` proposes new task types.",
                    icon="ℹ️")
            return
        _bulk_panel(root, v)
        _proposals(root, df)
    elif section == "Duplicates":
        _duplicates(root, ws)
    else:
        log = dec.review_log(ws, limit=500)
        if log.empty:
            st.info("No decisions yet: they are logged from this page, the notebooks and "
                    "`workbench taxonomy accept|reject`.", icon="ℹ️")
        else:
            st.dataframe(log, hide_index=True, width="stretch")


def _bulk_panel(root: str, v: tuple) -> None:
    opts = rq.bulk_options(root, v, rq.runs_version(root))
    c = st.columns([4, 1, 1])
    # No default: a bulk decision applies to hundreds of nodes only once the curator has named them.
    target = c[0].selectbox("Bulk: every pending proposal in", list(opts), format_func=opts.get, index=None,
                            placeholder="choose a subtree, a stage run or an origin", key="rv_bulk_target")
    c[1].button("Accept all", key="rv_bulk_accept", on_click=_bulk, args=(root, target, "accepted"),
                disabled=target is None)
    c[2].button("Reject all", key="rv_bulk_reject", on_click=_bulk, args=(root, target, "rejected"),
                disabled=target is None)


@st.fragment
def _proposals(root: str, df: pd.DataFrame) -> None:
    """Browsing (grouping, picking a group or a node) reruns only this part; a write reruns the page.

    A button's callback runs before this fragment's rerun, and a fragment rerun would redraw only the rows from the
    page's last full run (the count, the message and the decided row unchanged: issue 27). So a write marks
    `WROTE` and the fragment hands over to a full rerun before drawing anything."""
    if st.session_state.pop(WROTE, False):
        st.rerun(scope="app")
    c = st.columns([1, 3])
    by = c[0].selectbox("Group by", list(GROUPS), format_func=GROUPS.get, key="rv_group")
    keys = _group_key(df, by)
    counts = keys.value_counts(sort=False)
    key = f"rv_group_value_{by}"
    if st.session_state.get(key) in counts.index:
        # The widget keeps its label ("run 1 (4)"), which a decision changes ("run 1 (3)"): without this the
        # page would jump to the first group after every decision in the group.
        st.session_state[key] = st.session_state[key]
    group = c[1].selectbox("Group", list(counts.index), format_func=lambda g: f"{g} ({counts[g]})", key=key)
    rows = df[keys == group]
    st.markdown(f"**{md(group)}** — {len(rows)} proposal(s)" + (f"; the first {ROWS_PER_GROUP} shown"
                                                                  if len(rows) > ROWS_PER_GROUP else ""))
    for r in rows.head(ROWS_PER_GROUP).itertuples():
        line = st.columns([6, 1, 1])
        run = "" if pd.isna(r.stage_run_id) else f" · run {int(r.stage_run_id)}"
        hidden = " · under a rejected node" if r.under_rejected else ""
        line[0].markdown(f"{md(r.path)}  \n<small>{r.origin}{run}{hidden} · `{r.node_id}`</small>",
                         unsafe_allow_html=True)
        line[1].button("Accept", key=f"rv_acc_{r.node_id}", on_click=_one, args=(root, r.node_id, "accept"))
        line[2].button("Reject", key=f"rv_rej_{r.node_id}", on_click=_one, args=(root, r.node_id, "reject"))
    st.divider()
    paths = dict(zip(rows.node_id, rows.path))
    node = st.selectbox("Edit one proposal", list(paths), format_func=paths.get, key="rv_node")
    if node is None:
        return
    e = st.columns(3)
    e[0].text_input("New name", key="rv_new_name")
    e[0].button("Rename", key="rv_rename", on_click=_one, args=(root, node, "rename"))
    e[1].text_input("New parent (id or ~ path; empty = first level)", key="rv_new_parent")
    e[1].button("Move", key="rv_move", on_click=_one, args=(root, node, "move"))
    e[2].text_input("Merge into (id or ~ path)", key="rv_merge_into")
    e[2].checkbox("confirm the merge (it cannot be undone)", key="rv_merge_ok")
    e[2].button("Merge", key="rv_merge", on_click=_one, args=(root, node, "merge"))


def _duplicates(root: str, ws: Workspace) -> None:
    c = st.columns([1, 1, 1, 1])
    scope = c[0].selectbox("Scope", ["siblings", "tree"], key="rv_dup_scope")
    threshold = c[1].slider("Similarity threshold", 0.5, 1.0, float(ws.config.text_embedding.duplicate_threshold),
                            0.01, key="rv_dup_threshold")
    embed = c[2].checkbox("sentence embeddings", value=True, key="rv_dup_embed",
                          help="Off: only names equal once case, punctuation and spacing are ignored (no model).")
    if c[3].button("Find near-duplicates", key="rv_dup_go"):
        try:
            with st.spinner("Comparing names…"):
                st.session_state["rv_dups"] = suggest_merges(ws, scope=scope, threshold=threshold, embed=embed)
        except WorkbenchError as exc:
            st.error(str(exc))
        for k in [k for k in st.session_state if str(k).startswith(("rv_dup_ok_", "rv_dup_done_", "rv_dup_keep_"))]:
            del st.session_state[k]
    found = st.session_state.get("rv_dups")
    if found is None:
        st.caption("Nothing is merged without a confirmation per pair.")
        return
    st.caption(f"{len(found)} suggestion(s); each pair is merged only when its box is ticked and Merge pressed "
               "(a merge cannot be undone).")
    for i, s in enumerate(found[:50]):
        if st.session_state.get(f"rv_dup_done_{i}"):
            continue
        a, b = word_diff(s.a_path, s.b_path)
        box = st.container(border=True)
        cols = box.columns([5, 5, 2])
        cols[0].markdown(f"first: {a}  \n<small>`{s.a_id}`</small>", unsafe_allow_html=True)
        cols[1].markdown(f"second: {b}  \n<small>`{s.b_id}`</small>", unsafe_allow_html=True)
        cols[2].markdown(f"{s.kind} {s.score:.3f}")
        act = box.columns([3, 3, 2])
        act[0].radio("keep", ["first", "second"], horizontal=True, key=f"rv_dup_keep_{i}",
                     help="The node that stays; the other merges into it.")
        act[1].checkbox("confirm merging this pair", key=f"rv_dup_ok_{i}")
        act[2].button("Merge", key=f"rv_dup_merge_{i}", on_click=_merge_pair, args=(root, i))
