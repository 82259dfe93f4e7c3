"""The Plan page's read: the plan of a run (workbench/analysis/plan.py, the figures of `workbench plan`), cached per
version of what it reads: the tables and workbench.toml."""

from __future__ import annotations

import streamlit as st

from workbench.analysis.plan import make_plan
from workbench.analysis.plan_history import explain
from workbench.apps.dashboard import data
from workbench.core.workspace import Workspace

# The plan reads the configured referees' votes only: a person's vote (Adjudicate) is not a new plan.
PLAN_TABLES = ("nodes", "images", "matches", "filter_decisions", "samples", "machine_votes", "llm_calls",
               "embedding_sets", "stage_runs")


def config_version(root: str) -> int:
    """Endpoints, prices and limits live in workbench.toml: a changed file is a new plan."""
    ws = data.open_workspace(root)
    try:
        return (ws.root / "workbench.toml").stat().st_mtime_ns
    except OSError:
        return 0


def plan_version(root: str) -> tuple:
    return data.version(root, *PLAN_TABLES) + (config_version(root),)


@st.cache_data(show_spinner="Planning the run…", max_entries=8)
def plan_dict(root: str, v: tuple, images: int | None, through: str) -> dict:
    # A fresh open: the plan reads the current workbench.toml (endpoints, prices, [plan]).
    ws = Workspace.open(root)
    plan = make_plan(ws, images=images, through=through)
    explain(ws, plan, images=images)          # against the last `workbench plan`; the page stores nothing
    return plan.as_dict()
