"""Prompts: the prompt files with their hashes, the runs that used each, and two prompt versions'
outputs on the same inputs side by side (children each version proposed for the same parent,
and the raw LLM replies)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.dashboard import data


def render(root: str, ws) -> None:
    usage = data.prompt_usage(root, data.version(root, "prompts", "stage_runs", "llm_calls", "nodes"))
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
        r = runs[(runs["prompt_hash"] == h) | runs["prompt_file"].fillna("").str.endswith(name)]
        if r.empty:
            st.caption(f"No stage run used {name} (hash {h}) yet.")
        else:
            st.dataframe(r, hide_index=True, key="pr_runs")

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
    pairs = data.children_by_prompt(root, a, b)
    if pairs.empty:
        st.info("No parent received children from both versions; showing the raw replies of each.")
        needle = None
    else:
        st.caption(f"{len(pairs)} parent(s) expanded by both versions")
        parent = st.selectbox("Parent", pairs["parent"].tolist(), key="pr_parent")
        row = pairs[pairs["parent"] == parent].iloc[0]
        c1, c2 = st.columns(2)
        c1.markdown(f"**A `{a}`: {len(row['a'])} children**\n\n" + "\n".join(f"- {n}" for n in row["a"]))
        c2.markdown(f"**B `{b}`: {len(row['b'])} children**\n\n" + "\n".join(f"- {n}" for n in row["b"]))
        needle = parent.rsplit("~", 1)[-1] if parent != "(top level)" else None
    c1, c2 = st.columns(2)
    for col, h, tag in ((c1, a, "A"), (c2, b, "B")):
        calls = data.calls_for(root, h, needle)
        with col:
            st.markdown(f"**Raw replies, version {tag}** ({len(calls)} shown)")
            for _, call in calls.iterrows():
                st.code(call["raw_text"] or f"({call['status']})", language=None)


def prewarm(root: str) -> None:
    data.prompt_usage(root, data.version(root, "prompts", "stage_runs", "llm_calls", "nodes"))
