"""Adjudicate: the samples the referees' Dawid–Skene consensus is least sure about, for a person to decide
first (vote 1 / 0, or flag with a reason), and each referee's estimated reliability overall and per first-level
category. Writes go through review/adjudication.py, the same functions as `workbench adjudicate`.

The click path does only what a vote needs: the queue is ranked once per stored fit (4 x the rows shown) and a
vote only filters it; a vote never refits Dawid–Skene (0.4-3 s even on a few hundred votes), the fit shown is
marked stale until "Recompute consensus". Up to 40k votes a missing or outdated fit is computed when the page opens;
above, the stored one is shown, and a workspace with no stored fit is fitted once by the background prewarm
(`prewarm_late`, up to 3 M votes: 14 s at the paper's 1.24 M) so the page opens on its queue."""

from __future__ import annotations

import getpass
import threading

import streamlit as st

from workbench.apps.dashboard import data
from workbench.apps.dashboard.queries import adjudicate as aq
from workbench.apps.dashboard.text import md
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.review import adjudication as adj
from workbench.stages.select import consensus as cons_mod

# Up to this many votes a missing or outdated fit is computed when the page opens; above it the page shows the latest
# stored fit (marked stale) until "Recompute" is pressed or `workbench adjudicate` refits it. A person's own decisions
# never refit on the click path at any size: crowd-kit's EM takes 0.4-3 s even on a few hundred votes (~25 ms an
# iteration, up to 100 iterations once people's labels are fixed), while the queue only needs the decided sample
# left out. The fit shown is marked stale until "Recompute".
AUTO_COMPUTE_VOTES = 40_000
QUEUE_LEN = 50
CANDIDATES = 4 * QUEUE_LEN   # ranked once per fit; a vote only filters them (no re-ranking on the click path)
# A workspace with no stored fit at all (new, or never adjudicated) is fitted once by the dashboard's background
# prewarm up to this many votes (measured: 14 s at the paper's 1.24 M votes on 2 cores), so the page opens on its
# queue; above it, and whenever a fit exists (stale or not), fitting waits for "Recompute" as above.
PREWARM_FIT_VOTES = 3_000_000
_BACKGROUND_FIT = threading.Event()   # set while the prewarm fits (the page says so instead of asking for Recompute)


def _queue_frame(root: str, key: str, include_human: bool, fit_key: str):
    """The first QUEUE_LEN candidates that no person has decided (voted on or flagged) since they were ranked:
    one indexed lookup of the candidates' ids per rerun."""
    gen = st.session_state.setdefault("adj_queue_gen", 0)
    for _ in range(2):
        cands = aq.candidates(root, key, include_human, fit_key, gen, CANDIDATES)
        if cands is None or cands.empty:
            return cands
        done = aq.decided_among(data.open_workspace(root), cands["sample_id"].tolist())
        q = cands[~cands["sample_id"].isin(done)].reset_index(drop=True)
        if len(q) >= QUEUE_LEN or len(cands) < CANDIDATES:
            return q.head(QUEUE_LEN)
        gen = st.session_state["adj_queue_gen"] = gen + 1   # most candidates decided: rank afresh
    return q.head(QUEUE_LEN)


def _default_reviewer() -> str:
    try:
        return st.session_state.get("reviewer") or getpass.getuser()
    except Exception:
        return ""


def _changed(root: str) -> None:
    """After a decision: the queue filters it out by itself, and the fit shown is marked stale for this session (not
    refitted). The votes' key is recomputed only on a small vote table, where it is cheap."""
    if aq.count_votes(root) <= AUTO_COMPUTE_VOTES:
        aq.votes_key.clear()
    st.session_state["adj_changed_since_fit"] = st.session_state.get("adj_fit_shown")


def _do(action: str, root: str, sample_id: str) -> None:
    """Button callbacks: run before the page re-renders, so the queue and figures show the change at once."""
    ws = data.open_workspace(root)
    reviewer = st.session_state.get("adj_reviewer") or None
    reason = (st.session_state.get("adj_reason") or "").strip()
    try:
        if action == "flag":
            adj.flag(ws, sample_id, reason, reviewer)
            msg = f"Flagged {sample_id}: {reason}"
        elif action == "unflag":
            adj.unflag(ws, sample_id)
            msg = f"Lifted the flag on {sample_id}"
        else:
            ref = adj.vote(ws, sample_id, int(action), reviewer, reason or None)
            msg = f"{ref} voted {action} on {sample_id}"
        st.session_state["adj_msg"] = ("success", msg)
        st.session_state["adj_reason"] = ""
    except WorkbenchError as exc:
        st.session_state["adj_msg"] = ("error", str(exc))
    _changed(root)


def render(root: str, ws: Workspace) -> None:
    if not data.has_rows(root, "votes"):
        data.empty_state("No referee votes to adjudicate", "votes")
        return
    c = st.columns([1, 1, 1])
    if "adj_reviewer" not in st.session_state:
        st.session_state["adj_reviewer"] = _default_reviewer()
    c[0].text_input("Reviewer", key="adj_reviewer", help="Your votes are stored as referee human:NAME.")
    include = c[1].toggle("Include human votes", value=True, key="adj_include_human",
                          help="On: a person's vote is the true label of that sample. Off: machine referees only.")
    n_votes = aq.count_votes(root)
    large = n_votes > AUTO_COMPUTE_VOTES
    # Not after this session's own decisions (see AUTO_COMPUTE_VOTES): those wait for "Recompute".
    own = st.session_state.get("adj_changed_since_fit")
    compute = not large and (own is None or own != st.session_state.get("adj_fit_shown"))
    if c[2].button("Recompute consensus", key="adj_recompute", help="Fit Dawid–Skene to the votes as they are now."):
        compute = True
        aq.votes_key.clear()
        aq.votes_key_large.clear()
        st.session_state.pop("adj_changed_since_fit", None)
    key = aq.votes_key_large(root, include) if large else aq.votes_key(root, include)
    cons = aq.consensus(root, key, include, compute)
    if cons is None and not large:   # no fit of this mode at all (e.g. just toggled): a small table fits now
        cons = aq.consensus(root, key, include, True)
    kind, msg = st.session_state.pop("adj_msg", (None, None))
    if kind:
        (st.success if kind == "success" else st.error)(md(msg))
        if kind == "success":
            st.toast(md(msg))   # seen where the buttons are, further down the page
    if cons is None and _BACKGROUND_FIT.is_set():
        st.info(f"{n_votes:,} votes: the dashboard is fitting Dawid–Skene to them in the background (about 15 s "
                "per million votes on 2 cores). Press “Recompute consensus” to wait for that fit here.")
        return
    if cons is None:
        st.info(f"{n_votes:,} votes: fitting Dawid–Skene takes a while at this size. Press “Recompute consensus”, "
                "or run `workbench adjudicate WORKSPACE` (it stores the fit for this page).")
        return
    if cons.posterior.empty:
        st.info("No valid vote on an ok sample yet: nothing to estimate.")
        return
    st.session_state["adj_fit_shown"] = cons.key
    if cons.key != key or st.session_state.get("adj_changed_since_fit") == cons.key:
        st.warning(f"Showing the fit of {cons.computed_at}: votes changed since. Samples decided since are left "
                   "out of the queue; press “Recompute consensus” to refit.")

    flagged = adj.flags(ws)
    p = cons.posterior.to_numpy()
    m = st.columns(5)
    m[0].metric("samples with a posterior", f"{len(p):,}")
    m[1].metric("prior P(good)", f"{cons.prior:.3f}")
    m[2].metric("uncertain (0.2 < P < 0.8)", f"{int(((p > 0.2) & (p < 0.8)).sum()):,}")
    m[3].metric("decided by a person", f"{cons.gold:,}" if include else "left out")
    m[4].metric("flagged", f"{len(flagged):,}")

    q = _queue_frame(root, key, include, cons.key)
    _queue(root, ws, cons, q if q is not None else cons_mod.uncertain_queue(ws, cons, QUEUE_LEN))
    _reliability(root, cons)
    if len(flagged):
        st.subheader("Flagged samples")
        st.dataframe(flagged, hide_index=True, key="adj_flags")


def _queue(root: str, ws: Workspace, cons, q) -> None:
    st.subheader("Decide first: the most uncertain samples")
    if "adj_sample" not in st.session_state:   # ?sample=ID opens that sample (e.g. from the Referees page)
        st.session_state["adj_sample"] = st.query_params.get("sample", "")
    wanted = (st.text_input("Or any sample (id or a unique prefix)", key="adj_sample") or "").strip()
    if wanted:
        try:
            sid, _ = adj.resolve_sample(ws, wanted)
        except WorkbenchError as exc:
            st.error(md(exc))
            return
        row = aq.sample_row(ws, sid, cons)
    elif q.empty:
        st.success("Every sample with a posterior has been decided by a person or flagged.")
        return
    else:
        st.dataframe(q[["sample_id", "p_good", "task_type", "question", "votes"]], hide_index=True, key="adj_queue",
                     column_config={"p_good": st.column_config.NumberColumn(format="%.3f")}, height=220)
        if st.session_state.get("adj_pos", 1) > len(q):   # the queue shrank as samples were decided
            st.session_state["adj_pos"] = len(q)
        i = int(st.number_input("Queue item", 1, len(q), key="adj_pos")) - 1
        row = q.iloc[min(i, len(q) - 1)].to_dict()
    sid = row["sample_id"]
    a, b = st.columns([1, 2])
    with a:
        _thumbnail(ws, row["image_id"])
    with b:
        st.markdown(f"**Sample** `{sid}` · posterior P(good) **{row['p_good']:.3f}**"
                    if row["p_good"] == row["p_good"] else f"**Sample** `{sid}` · no posterior")
        st.markdown(f"**Task type:** {md(row['task_type'])}")
        st.markdown(f"**Question:** {md(row['question'])}")
        st.markdown(f"**Answer:** {md(row['answer'])}")
        st.dataframe(adj.sample_votes(ws, sid), hide_index=True, key="adj_votes")
        st.text_input("Reason (required to flag; kept with a vote)", key="adj_reason")
        bcols = st.columns(4)
        bcols[0].button("1 — good", key="adj_yes", on_click=_do, args=("1", root, sid), type="primary")
        bcols[1].button("0 — bad", key="adj_no", on_click=_do, args=("0", root, sid))
        bcols[2].button("Flag", key="adj_flag", on_click=_do, args=("flag", root, sid),
                        help="Never selected nor exported while flagged.")
        if aq.is_flagged(ws, sid):
            bcols[3].button("Unflag", key="adj_unflag", on_click=_do, args=("unflag", root, sid))


def _thumbnail(ws: Workspace, image_id: str) -> None:
    found = aq.image_file(ws, image_id)
    if found is None:
        st.warning("image not registered")
        return
    p, rel = found
    if p.exists():
        st.image(str(p), caption=rel, width=320)
    else:
        st.warning(f"image file missing: {p}")


def _reliability(root: str, cons) -> None:
    st.subheader("Referee reliability (Dawid–Skene)")
    st.caption("sensitivity = P(vote 1 | good), specificity = P(vote 0 | bad), accuracy weighted by the prior. "
               + ("A person's vote is taken as the truth of its sample." if cons.include_human
                  else "Human votes left out."))
    fmt = {c: st.column_config.NumberColumn(format="%.3f") for c in ("sensitivity", "specificity", "accuracy")}
    st.dataframe(cons.reliability, hide_index=True, key="adj_rel", column_config=fmt)
    per_cat = cons.by_category(aq.categories(root, data.version(root, "nodes")))
    if per_cat.empty:
        return
    st.markdown("**Accuracy per first-level category**")
    # A table with a bar per cell rather than a heatmap: sortable by referee, and the page then needs no Plotly (its
    # 4.7 MB of JavaScript was most of this page's first render).
    piv = per_cat.pivot(index="category", columns="referee", values="accuracy").reset_index()
    st.dataframe(piv, hide_index=True, key="adj_cat_piv", column_config={
        r: st.column_config.ProgressColumn(r, min_value=0.0, max_value=1.0, format="%.3f")
        for r in piv.columns if r != "category"})
    st.dataframe(per_cat, hide_index=True, key="adj_cat", column_config=fmt)


def prewarm(root: str) -> None:
    """Load the stored fit; fit only a small vote table (a large fit is seconds of CPU the other pages need)."""
    large = aq.count_votes(root) > AUTO_COMPUTE_VOTES
    key = aq.votes_key_large(root, True) if large else aq.votes_key(root, True)
    cons = aq.consensus(root, key, True, not large)
    if cons is not None:
        aq.candidates(root, key, True, cons.key, 0, CANDIDATES)


def prewarm_late(root: str) -> None:
    """A large vote table with no stored fit in either mode (a new workspace): fit it once, so the page opens on
    its queue rather than on "press Recompute". A page that presses Recompute meanwhile waits for this same fit
    (one compute per cache key), it does not start a second one."""
    n = aq.count_votes(root)
    if not (AUTO_COMPUTE_VOTES < n <= PREWARM_FIT_VOTES) or aq.has_stored_fit(data.open_workspace(root)):
        return
    _BACKGROUND_FIT.set()
    try:
        key = aq.votes_key_large(root, True)
        cons = aq.fit(root, key, True)
        aq.candidates(root, key, True, cons.key, 0, CANDIDATES)
    finally:
        _BACKGROUND_FIT.clear()
