"""The Prompts page's reads: the prompt files with their hashes and the runs that used each, the stored trials
(history, one trial's matrix and figures, the items a new trial may draw from) and the stored versions of a prompt
name with their outcome figures."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.analysis import prompt_history as ph
from workbench.analysis import trials as tr
from workbench.apps.dashboard import data
from workbench.llm.prompts import template_hash

# What the page's file and run tables read (the prompt files themselves, then the tables).
USAGE_TABLES = ("prompts", "stage_runs", "llm_calls", "nodes")
HISTORY_TABLES = ("prompt_texts", "llm_calls")
TRIAL_TABLES = ("trials", "trial_outputs", "trial_versions")
ITEM_TABLES = ("nodes", "matches", "filter_decisions", "samples", "votes", "audit_labels", "discoveries")


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
def prompt_history(root: str, name: str, v: tuple) -> pd.DataFrame:
    """The stored versions of one prompt name (analysis/prompt_history.py)."""
    return ph.history(data.open_workspace(root), name)


@st.cache_data(show_spinner=False, max_entries=16)
def prompt_outcomes(root: str, hashes: tuple, v: tuple) -> pd.DataFrame:
    """Outcome figures of prompt versions side by side, one column per hash."""
    return ph.compare(data.open_workspace(root), list(hashes)).astype(str)


@st.cache_data(show_spinner=False, max_entries=4)
def trial_history(root: str, v: tuple) -> pd.DataFrame:
    return tr.list_trials(data.open_workspace(root))


@st.cache_data(show_spinner=False, max_entries=16)
def trial_view(root: str, trial_id: int, v: tuple) -> dict:
    """One stored trial as the page shows it: summary, errors, matrix, figures, outputs and versions."""
    ws = data.open_workspace(root)
    t = tr.Trial.load(ws, trial_id)
    return {"summary": t.summary(), "failed": t.failed, "errors": t.errors, "matrix": t.matrix(),
            "metrics": t.metrics(ws).astype(str), "outputs": t.outputs, "columns": t.columns, "stage": t.stage,
            "versions": t.versions, "status": t.status}


@st.cache_data(show_spinner=False, max_entries=8)
def trial_items(root: str, stage: str, v: tuple) -> list[str]:
    """The items a new trial of `stage` may draw from (listing them reads whole tables at paper scale: cached)."""
    return tr.candidates(data.open_workspace(root), stage)
