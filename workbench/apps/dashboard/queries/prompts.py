"""The Prompts page's reads: the prompt files with their hashes and the runs that used each, two versions'
children and raw replies side by side, the stored versions of a prompt name with their outcome figures, the rows
the playground may try a prompt on."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from workbench.analysis import prompt_history as ph
from workbench.apps.dashboard import data
from workbench.llm.prompts import template_hash

# What the page's file and run tables read (the prompt files themselves, then the tables).
USAGE_TABLES = ("prompts", "stage_runs", "llm_calls", "nodes")
HISTORY_TABLES = ("prompt_texts", "llm_calls")
PLAYGROUND_TABLES = ("nodes", "matches", "filter_decisions", "samples")


@st.cache_data(show_spinner=False, max_entries=4)
def prompt_usage(root: str, v: tuple) -> dict:
    ws = data.open_workspace(root)
    s = ws.store
    files = []
    for p in data.prompt_files_paths(ws):
        text = p.read_text(encoding="utf-8", errors="replace")
        files.append({"file": str(p), "name": p.name, "hash": template_hash(text),
                      "where": "workspace" if p.parent.resolve() == ws.prompts_dir.resolve() else "default",
                      "chars": len(text)})
    # Credit per call (llm_calls.prompt_hash is exact), not the run's first prompt: one expand run uses a
    # template per parent kind, so a run appears once for each template its calls used.
    runs = pd.DataFrame([dict(r) for r in s.query(
        "SELECT c.stage_run_id AS id, coalesce(r.stage, c.stage) AS stage, r.status, r.started_at, "
        "min(c.model) AS model, min(c.prompt_file) AS prompt_file, c.prompt_hash, count(*) AS calls "
        "FROM llm_calls c LEFT JOIN stage_runs r ON r.id = c.stage_run_id WHERE c.prompt_hash IS NOT NULL "
        "GROUP BY c.stage_run_id, c.prompt_hash ORDER BY c.stage_run_id DESC")],
        columns=["id", "stage", "status", "started_at", "model", "prompt_file", "prompt_hash", "calls"])
    versions = pd.DataFrame([dict(r) for r in s.query(
        "SELECT stage, prompt_hash, min(prompt_file) AS prompt_file, count(*) AS calls, "
        "min(created_at) AS first_used FROM llm_calls WHERE prompt_hash IS NOT NULL "
        "GROUP BY stage, prompt_hash UNION ALL "
        "SELECT 'nodes' AS stage, prompt_hash, min(prompt_file), count(*), min(created_at) FROM nodes "
        "WHERE prompt_hash IS NOT NULL GROUP BY prompt_hash")],
        columns=["stage", "prompt_hash", "prompt_file", "calls", "first_used"])
    return {"files": pd.DataFrame(files, columns=["name", "hash", "where", "chars", "file"]), "runs": runs,
            "versions": versions}


@st.cache_data(show_spinner=False, max_entries=8)
def children_by_prompt(root: str, hash_a: str, hash_b: str, v: tuple) -> pd.DataFrame:
    """Parents that got children from both prompt versions: parent path, children of A, children of B (cached: the
    path lookup walks every node, 0.14 s of each Prompts-page rerun at paper scale)."""
    frame = data.node_table(root)
    s = data.open_workspace(root).store
    rows = s.query("SELECT parent_id, name, prompt_hash FROM nodes WHERE prompt_hash IN (?, ?)", (hash_a, hash_b))
    by = {}
    for r in rows:
        by.setdefault(r["parent_id"], {hash_a: [], hash_b: []})[r["prompt_hash"]].append(r["name"])
    path_of = dict(zip(frame["id"], frame["path"]))
    out = [{"parent_id": pid, "parent": path_of.get(pid, "(top level)") if pid else "(top level)",
            "a": sorted(v[hash_a]), "b": sorted(v[hash_b])}
           for pid, v in by.items() if v[hash_a] and v[hash_b]]
    return pd.DataFrame(out, columns=["parent_id", "parent", "a", "b"])


def calls_for(root: str, prompt_hash: str, needle: str | None, limit: int = 5) -> pd.DataFrame:
    s = data.open_workspace(root).store
    sql = ("SELECT key, stage, model, status, raw_text, request, created_at FROM llm_calls WHERE prompt_hash=?")
    params: list = [prompt_hash]
    if needle:
        sql += " AND instr(request, ?) > 0"
        params.append(json.dumps(needle)[1:-1])
    rows = s.query(sql + f" ORDER BY created_at LIMIT {int(limit)}", tuple(params))
    return pd.DataFrame([dict(r) for r in rows],
                        columns=["key", "stage", "model", "status", "raw_text", "request", "created_at"])


@st.cache_data(show_spinner=False, max_entries=8)
def prompt_history(root: str, name: str, v: tuple) -> pd.DataFrame:
    """The stored versions of one prompt name (analysis/prompt_history.py)."""
    return ph.history(data.open_workspace(root), name)


@st.cache_data(show_spinner=False, max_entries=16)
def prompt_outcomes(root: str, hashes: tuple, v: tuple) -> pd.DataFrame:
    """Outcome figures of prompt versions side by side, one column per hash."""
    return ph.compare(data.open_workspace(root), list(hashes)).astype(str)


@st.cache_data(show_spinner=False, max_entries=8)
def playground_rows(root: str, stage: str, which: str, v: tuple, limit: int = 500) -> list:
    """The rows the playground may pick from (listing them reads whole tables at paper scale: cached)."""
    return ph.candidate_rows(data.open_workspace(root), stage, which, limit=limit)

