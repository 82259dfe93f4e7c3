"""Prompts: the prompt files with their hashes and the runs that used each (credit per call), the trials (versions x
a test set, analysis/trials/) with their history, each trial's matrix (one row per item with its thumbnail or
parent path, one column per version, the raw reply one click away, a failure's error in its cell) and figures per
version, promote, a new trial, and the stored versions of each prompt name with diffs and outcome figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from workbench.analysis import prompt_history as ph
from workbench.analysis import trials as tr
from workbench.analysis.trials.run import MARK
from workbench.apps.dashboard import data
from workbench.apps.dashboard.queries import prompts as prq
from workbench.apps.dashboard.text import md
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm import prompt_store
from workbench.stages.images.register import image_path

MAX_MATRIX_ROWS = 50


def render(root: str, ws: Workspace) -> None:
    usage = prq.prompt_usage(root, data.version(root, *prq.USAGE_TABLES))
    files, runs, versions = usage["files"], usage["runs"], usage["versions"]
    st.subheader("Prompt files")
    if files.empty:
        st.info(f"No prompt files (*.j2) in {ws.prompts_dir} or the bundled prompts folder.")
    else:
        used = runs.groupby("prompt_hash").size() if not runs.empty else pd.Series(dtype=int)
        files = files.assign(runs=files["hash"].map(used).fillna(0).astype(int))
        st.dataframe(files, hide_index=True, key="pr_files")
        name = st.selectbox("Runs that used", files["name"].tolist(), key="pr_file")
        h = files.loc[files["name"] == name, "hash"].iloc[0]
        r = runs[runs["prompt_hash"] == h]
        if r.empty:
            st.caption(f"No call used {md(name)} as it is now (hash {h}); earlier versions are under History.")
        else:
            st.dataframe(r, hide_index=True, key="pr_runs")
    trials_section(root)
    new_trial_section(root, ws)
    history_section(root)
    st.subheader("Prompt versions")
    if versions.empty:
        data.empty_state("No LLM output with a prompt hash", "llm_calls")
        return
    st.caption("Every version that produced output, per stage; put versions side by side on the same items with "
               "New trial.")
    st.dataframe(versions, hide_index=True, key="pr_versions")


# -- trials ------------------------------------------------------------------------------------------
def trials_section(root: str) -> None:
    st.subheader("Trials")
    done = st.session_state.pop("tr_done", None)
    if done:
        st.success(md(done))
    hist = prq.trial_history(root, data.version(root, *prq.TRIAL_TABLES))
    if hist.empty:
        st.caption("No trial yet: start one under New trial (or `workbench prompts trial`).")
        return
    st.dataframe(hist, hide_index=True, key="tr_history")
    ids = hist["id"].tolist()
    labels = {i: f"#{i} {s} on {t} ({w})" for i, s, t, w in zip(hist.id, hist.stage, hist.test_set, hist.created_at)}
    chosen = st.session_state.get("tr_open")
    index = ids.index(chosen) if chosen in ids else 0
    tid = st.selectbox("Open trial", ids, index=index, format_func=labels.get, key="tr_pick")
    show_trial(root, int(tid))


def _cell(col, out: pd.Series | None) -> None:
    if out is None:
        col.caption("— not run")
        return
    if out["status"] == "ok":
        col.text(out["shown"])
    else:
        col.error(md(f"{MARK[out['status']]}: {out['error'] or 'no reason recorded'}"))
    with col.popover("raw reply"):
        st.code(out["raw"] if out["raw"] is not None else "(no reply: the call was not answered)", language=None)


def show_trial(root: str, tid: int) -> None:
    view = prq.trial_view(root, tid, data.version(root, *prq.TRIAL_TABLES))
    st.text(view["summary"])
    if view["failed"]:
        st.error(md("No version gave a readable reply. " + " | ".join(view["errors"][:3])))
    elif view["errors"]:
        st.warning(md("Some cells failed: " + " | ".join(view["errors"][:3])))
    st.markdown("**Figures per version**")
    st.dataframe(view["metrics"], key=f"tr_metrics_{tid}")
    ws = data.open_workspace(root)
    outputs, columns = view["outputs"], view["columns"]
    by = {(i, v): r for (i, v), r in outputs.set_index(["item", "version"], drop=False).iterrows()}
    matrix = view["matrix"]
    st.markdown(f"**Outputs** ({len(matrix)} item(s) x {len(columns)} version(s))")
    head = st.columns([1.3] + [2] * len(columns))
    head[0].markdown("**item**")
    for c, name in zip(head[1:], columns.values()):
        c.markdown(f"**{md(name)}**")
    for _, row in matrix.head(MAX_MATRIX_ROWS).iterrows():
        cols = st.columns([1.3] + [2] * len(columns), border=True)
        if row["image_id"]:
            try:
                cols[0].image(str(image_path(ws, row["image_id"])), width=96)
            except (OSError, WorkbenchError):
                cols[0].caption("(image file missing)")
        cols[0].caption(md(row["label"]))
        for col, h in zip(cols[1:], columns):
            _cell(col, by.get((row["item"], h)))
    if len(matrix) > MAX_MATRIX_ROWS:
        st.caption(f"First {MAX_MATRIX_ROWS} of {len(matrix)} items; `workbench prompts trials WS --show {tid}` "
                   "prints all.")
    versions_of(ws, tid, view)


def versions_of(ws: Workspace, tid: int, view: dict) -> None:
    """Diff any two versions of the trial, and promote one."""
    names = view["columns"]
    hashes = list(names)
    if len(hashes) >= 2:
        c1, c2 = st.columns(2)
        a = c1.selectbox("Diff from", hashes, index=0, format_func=names.get, key=f"tr_da_{tid}")
        b = c2.selectbox("to", hashes, index=1, format_func=names.get, key=f"tr_db_{tid}")
        st.code(tr.diff_versions(ws, a, b) or "(same text)", language="diff")
    c1, c2 = st.columns([3, 1])
    pick = c1.selectbox("Promote version", hashes, format_func=names.get, key=f"tr_prom_{tid}")
    if c2.button("Promote", key=f"tr_promote_{tid}"):
        try:
            msg = tr.promote(ws, view["stage"], pick)
        except WorkbenchError as exc:
            st.error(md(str(exc)))
        else:
            data.prompt_files_changed()
            st.session_state["tr_done"] = msg
            st.rerun()


@st.fragment
def new_trial_section(root: str, ws: Workspace) -> None:
    """Versions x a test set. Opening and editing rerun only this part; running stores the trial and opens it."""
    st.subheader("New trial")
    if not st.toggle("Start a new trial (nothing in the workspace's data changes)", key="tr_new"):
        return
    ws = data.open_workspace(root)
    stage = st.selectbox("Stage", tr.stage_keys(ws), key="tr_stage")
    try:
        current = tr.current_prompt(ws, stage)
        items = prq.trial_items(root, stage, data.version(root, *prq.ITEM_TABLES))
    except WorkbenchError as exc:
        st.info(md(f"{stage}: {exc}"))
        return
    files = [str(p) for p in data.prompt_files_paths(ws) if p.resolve() != current.path.resolve()]
    chosen = st.multiselect("Versions besides the current one (prompt files)", files,
                            format_func=lambda p: Path(p).name, key="tr_files")
    edited = st.text_area("An edited version (optional; leave unchanged to skip)", current.source, height=200,
                          key=f"tr_text_{stage}")
    c1, c2 = st.columns(2)
    ed_name = c1.text_input("Its name", "edited", key="tr_ed_name")
    ed_note = c2.text_input("Its note", "", key="tr_ed_note")
    versions: list = ["current", *chosen]
    if edited.strip() != current.source.strip():
        versions.append(tr.Version.of_text(edited, ed_name, ed_note, like=current))
    ts = _test_set(ws, stage, items)
    if ts is None:
        return
    try:
        dry = tr.run_trial(ws, stage, versions, ts, dry_run=True)
    except WorkbenchError as exc:
        st.error(md(str(exc)))
        return
    st.caption(md("Estimate: " + dry.summary().replace("\n", " | ")))
    budget = st.number_input("Budget (USD, 0: the workspace's limit)", 0.0, value=0.0, key="tr_budget")
    if st.button(f"Run {len(versions)} version(s) on {len(ts.items)} item(s)", key="tr_run"):
        try:
            trial = tr.run_trial(ws, stage, versions, ts, budget_usd=budget or None)
        except WorkbenchError as exc:
            st.error(md(str(exc)))
            return
        st.session_state["tr_open"] = trial.id
        st.session_state.pop("tr_pick", None)
        st.session_state["tr_done"] = f"Trial {trial.id} stored: {trial.status}."
        st.rerun(scope="app")


def _test_set(ws: Workspace, stage: str, items: list[str]) -> tr.TestSet | None:
    stored = tr.list_test_sets(ws)
    stored = stored[stored.stage == stage]
    c1, c2, c3, c4 = st.columns(4)
    source = c1.selectbox("Test set", ["random", "by hand", *stored["name"].tolist()], key="tr_source")
    checks = c2.multiselect("Assertions", ["non-empty", "not-parent"], key="tr_asserts")
    regex = c3.text_input("Regex the reply must match (optional)", "", key="tr_regex")
    rubric = c4.text_input("LLM rubric (optional; graded on the default endpoint)", "", key="tr_rubric")
    checks = checks + ([f"regex:{regex}"] if regex else []) + ([f"rubric:{rubric}"] if rubric.strip() else [])
    try:
        if source == "random":
            c1, c2 = st.columns(2)
            n = int(c1.number_input("Rows", 1, max(1, len(items)), min(5, max(1, len(items))), key=f"tr_rows_{stage}"))
            seed = int(c2.number_input("Seed", 0, value=0, key="tr_seed"))
            return tr.TestSet.random(ws, stage, n, seed, assertions=checks, pool=items)
        if source == "by hand":
            picked = st.multiselect("Items", items, key=f"tr_items_{stage}")
            if not picked:
                st.info("Pick at least one item.")
                return None
            return tr.TestSet.of(ws, stage, picked, assertions=checks)
        ts = tr.TestSet.load(ws, source)
        ts.assertions = checks or ts.assertions
        return ts
    except WorkbenchError as exc:
        st.info(md(str(exc)))
        return None


# -- stored versions ---------------------------------------------------------------------------------
def history_section(root: str) -> None:
    st.subheader("History")
    ws = data.open_workspace(root)
    names = prompt_store.names(ws)
    if not names:
        st.caption("No prompt text stored yet: each template's text is stored when a stage run first uses it.")
        return
    name = st.selectbox("Versions of", names, key="pr_hist_name")
    v = data.version(root, *prq.HISTORY_TABLES)
    hist = prq.prompt_history(root, name, v)
    st.dataframe(hist, hide_index=True, key="pr_hist")
    hashes = hist["hash"].tolist()
    if len(hashes) < 2:
        st.caption(f"{md(name)} has one stored version; try an edited one under New trial.")
        st.code(prompt_store.text_of(ws, hashes[0]), language=None)
        return
    c1, c2 = st.columns(2)
    a = c1.selectbox("Old", hashes, index=len(hashes) - 2, key="pr_hist_a")
    b = c2.selectbox("New", hashes, index=len(hashes) - 1, key="pr_hist_b")
    st.code(ph.diff(ws, a, b) or "(same text)", language="diff")
    st.markdown("**Outcomes**")
    st.dataframe(prq.prompt_outcomes(root, tuple(dict.fromkeys((a, b))), v), key="pr_hist_outcomes")


def prewarm(root: str) -> None:
    prq.prompt_usage(root, data.version(root, *prq.USAGE_TABLES))
    prq.trial_history(root, data.version(root, *prq.TRIAL_TABLES))


def prewarm_late(root: str) -> None:
    """The items a new trial of the first stage may draw from (~1 s at paper scale, which opening New trial would
    otherwise pay)."""
    first = tr.stage_keys(data.open_workspace(root))[0]      # what New trial's Stage box opens on
    prq.trial_items(root, first, data.version(root, *prq.ITEM_TABLES))
