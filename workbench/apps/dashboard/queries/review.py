"""The Review page's reads: the pending proposals and the stage runs, cached on versions read afresh every run (not
the shared, commit-counted ones: a decision made on the page shows at once), and the targets a bulk decision may
name."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.apps.dashboard import data
from workbench.review import decisions as dec


def nodes_version(root: str) -> tuple:
    return tuple(data.open_workspace(root).store.one("SELECT count(*), max(rowid), max(updated_at) FROM nodes"))


def runs_version(root: str) -> tuple:
    return tuple(data.open_workspace(root).store.one("SELECT count(*), max(id) FROM stage_runs"))


@st.cache_data(show_spinner="Reading the proposals…", max_entries=4)
def pending(root: str, v: tuple) -> pd.DataFrame:
    return dec.pending_proposals(data.open_workspace(root))


@st.cache_data(show_spinner=False, max_entries=4)
def runs(root: str, v: tuple) -> dict:
    """{stage run id: "run N · stage · started"}."""
    rows = data.open_workspace(root).store.query("SELECT id, stage, started_at, prompt_file FROM stage_runs")
    return {r["id"]: f"run {r['id']} · {r['stage']} · {r['started_at'][:16]}" for r in rows}


@st.cache_data(show_spinner=False, max_entries=4)
def bulk_options(root: str, v: tuple, runs_v: tuple) -> dict[str, str]:
    """Targets of a bulk accept/reject: every subtree holding proposals (by `~` path), every run, every origin."""
    df = pending(root, v)
    names = runs(root, runs_v)
    per_subtree: dict[str, int] = {}
    for path in df.path:                 # every ancestor of a proposal (and the proposal) heads such a subtree
        parts = path.split("~")
        for i in range(1, len(parts) + 1):
            key = "~".join(parts[:i])
            per_subtree[key] = per_subtree.get(key, 0) + 1
    opts = {f"subtree:{p}": f"subtree {p} ({n})" for p, n in sorted(per_subtree.items())}
    for r, n in df.stage_run_id.dropna().astype(int).value_counts().sort_index(ascending=False).items():
        opts[f"run:{r}"] = f"{names.get(r, f'run {r}')} ({n})"
    for o, n in df.origin.value_counts().items():
        opts[f"origin:{o}"] = f"origin {o} ({n})"
    return opts
