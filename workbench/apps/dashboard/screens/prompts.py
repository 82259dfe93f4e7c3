"""Prompts: the prompt files with their hashes, the runs whose calls used each (credit per call), two prompt
versions' outputs on the same inputs side by side, the version history of each prompt name (diff and outcome
figures), and a playground that runs an edited prompt on a few rows without applying anything."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.analysis import prompt_history as ph
from workbench.apps.dashboard import data
from workbench.apps.dashboard.queries import prompts as prq
from workbench.apps.dashboard.text import md
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm import prompt_store


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

    history_section(root)
    playground_section(root, ws)
    st.subheader("Prompt versions")
    if versions.empty:
        data.empty_state("No LLM output with a prompt hash", "llm_calls")
        return
    st.dataframe(versions, hide_index=True, key="pr_versions")
    stages = sorted(versions["stage"].unique())
    stage = st.selectbox("Compare versions of", stages, key="pr_stage")
    hashes = versions.loc[versions["stage"] == stage, "prompt_hash"].tolist()
    if len(hashes) < 2:
        st.info(f"Stage {stage!r} has used only one prompt version; edit its prompt and run it again to compare.")
        return
    c1, c2 = st.columns(2)
    a = c1.selectbox("Version A", hashes, index=0, key="pr_a")
    b = c2.selectbox("Version B", hashes, index=1, key="pr_b")
    if a == b:
        st.info("Choose two different versions.")
        return
    pairs = prq.children_by_prompt(root, a, b, data.version(root, "nodes"))
    if pairs.empty:
        st.info("No parent received children from both versions; showing the raw replies of each.")
        needle = None
    else:
        st.caption(f"{len(pairs)} parent(s) expanded by both versions")
        parent = st.selectbox("Parent", pairs["parent"].tolist(), key="pr_parent")
        row = pairs[pairs["parent"] == parent].iloc[0]
        c1, c2 = st.columns(2)
        c1.markdown(f"**A `{a}`: {len(row['a'])} children**\n\n" + "\n".join(f"- {md(n)}" for n in row["a"]))
        c2.markdown(f"**B `{b}`: {len(row['b'])} children**\n\n" + "\n".join(f"- {md(n)}" for n in row["b"]))
        needle = parent.rsplit("~", 1)[-1] if parent != "(top level)" else None
    c1, c2 = st.columns(2)
    for col, h, tag in ((c1, a, "A"), (c2, b, "B")):
        calls = prq.calls_for(root, h, needle)
        with col:
            st.markdown(f"**Raw replies, version {tag}** ({len(calls)} shown)")
            for _, call in calls.iterrows():
                st.code(call["raw_text"] or f"({call['status']})", language=None)


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
        st.caption(f"{name} has one stored version; edit it (Playground below) and run it to compare.")
        st.code(prompt_store.text_of(ws, hashes[0]), language=None)
        return
    c1, c2 = st.columns(2)
    a = c1.selectbox("Old", hashes, index=len(hashes) - 2, key="pr_hist_a")
    b = c2.selectbox("New", hashes, index=len(hashes) - 1, key="pr_hist_b")
    st.code(ph.diff(ws, a, b) or "(same text)", language="diff")
    st.markdown("**Outcomes**")
    st.dataframe(prq.prompt_outcomes(root, tuple(dict.fromkeys((a, b))), v), key="pr_hist_outcomes")


@st.fragment
def playground_section(root: str, ws: Workspace) -> None:
    """Opening, editing and running rerun only this part (the page's tables are not re-read and re-sent: opening
    it after a commit took ~1 s at paper scale, ~0.6 s otherwise); saving reruns the page, whose prompt files and
    history change."""
    st.subheader("Playground")
    saved = st.session_state.pop("pg_saved", None)
    if saved:
        st.success(saved)
    # Off by default: listing a stage's rows and the dry run cost time the page's first render should not pay.
    if not st.toggle("Try an edited prompt on a few rows (nothing is applied)", key="pg_open"):
        return
    c1, c2 = st.columns(2)
    stage = c1.selectbox("Stage", ph.STAGES, key="pg_stage")
    ws = data.open_workspace(root)
    try:
        prompts = ph.stage_prompts(ws, stage)
        which = c2.selectbox("Prompt", list(prompts), key="pg_which")
        rows = prq.playground_rows(root, stage, which, data.version(root, *prq.PLAYGROUND_TABLES))
    except WorkbenchError as exc:
        st.info(f"{stage}: {md(exc)}")
        return
    current = prompts[which]
    st.caption(f"Current version: `{current.display_path}` (hash {current.hash})")
    text = st.text_area("Edit the template", current.source, height=240, key=f"pg_text_{stage}_{which}")
    labels = [ph.row_label(r) for r in rows]
    c1, c2 = st.columns(2)
    n = int(c1.number_input("Rows", 1, max(1, len(rows)), min(5, max(1, len(rows))), key="pg_n"))
    chosen = c2.multiselect("Or pick rows by hand", labels, key="pg_rows")
    picked = ph.pick_rows(rows, n, seed=0, labels=chosen or None)
    if not picked:
        st.info(f"{stage}: no rows to try the prompt on.")
        return
    try:
        est = ph.estimate(ws, stage, which, text, picked)
    except WorkbenchError as exc:
        st.error(str(exc))
        return
    st.caption("Estimate: " + est.summary())
    c1, c2 = st.columns(2)
    if c1.button("Run the edited prompt", key="pg_run"):
        try:
            st.session_state["pg_out"] = ph.try_prompt(ws, stage, which, text, picked)
        except WorkbenchError as exc:
            st.error(str(exc))
    if c2.button(f"Save as the workspace's {current.path.name}", key="pg_save"):
        try:
            path = ph.save_copy(ws, current.path.name, text)
        except WorkbenchError as exc:
            st.error(str(exc))
        else:
            st.session_state["pg_saved"] = f"Saved {path}; the next {stage} run uses it."
            data.prompt_files_changed()
            st.rerun(scope="app")
    out = st.session_state.get("pg_out")
    if out is not None:
        rep = out.attrs.get("report")
        if rep is not None:
            st.caption(rep.summary())
        for _, r in out.iterrows():
            st.markdown(f"**{md(r['row'])}**")
            a, b = st.columns(2)
            a.markdown("Edited")
            a.code(r["edited_parsed"] or r["edited"] or "(no reply)", language=None)
            b.markdown("Current")
            b.code(r["current_parsed"] or r["current"] or "(never asked with the current version)", language=None)


def prewarm(root: str) -> None:
    prq.prompt_usage(root, data.version(root, *prq.USAGE_TABLES))


def prewarm_late(root: str) -> None:
    """The rows the playground lists when opened (its first stage and prompt): reading them takes ~1 s at paper
    scale, which the click on the playground's toggle would otherwise pay."""
    stage = ph.STAGES[0]
    prompts = ph.stage_prompts(data.open_workspace(root), stage)
    if prompts:
        prq.playground_rows(root, stage, next(iter(prompts)), data.version(root, *prq.PLAYGROUND_TABLES))
