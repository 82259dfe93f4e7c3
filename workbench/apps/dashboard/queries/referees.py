"""The Referees page's reads: the referees' vote patterns and the figures made of them (pass rates, Cohen's and
Fleiss' kappa, agreement per first-level category), the disagreements, one sample's votes.

Agreement (and, once any referee voted adaptively, the pass rates) is computed on fully voted samples only:
adaptive voting asks a later referee mostly where the earlier ones disagreed, which would bias every figure."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.analysis import agreement
from workbench.apps.dashboard import data
from workbench.core.workspace import Workspace

# What the page's figures read: the referees' votes alone (a person's vote leaves them cached).
TABLES = ("machine_votes", "samples", "nodes", "stage_runs")


@st.cache_data(show_spinner="Summarising referee votes…", max_entries=4)
def vote_patterns(root: str, v: tuple) -> tuple[pd.DataFrame, list[str]]:
    """Machine referees' vote patterns (people's `human:<name>` decisions are not referees: see
    `agreement.load_patterns(include_human=True)` for figures that want them)."""
    return agreement.load_patterns(data.open_workspace(root).store, by_node=True)


@st.cache_data(show_spinner=False, max_entries=8)
def disagreements(root: str, v: tuple, node_ids: tuple | None, limit: int) -> pd.DataFrame:
    return agreement.disagreements(data.open_workspace(root).store, limit=limit,
                                   node_ids=list(node_ids) if node_ids is not None else None)


@st.cache_data(show_spinner="Summarising fully voted samples…", max_entries=4)
def fully_voted(root: str, v: tuple, audit_fraction: float):
    """(patterns of the fully voted samples, adaptive referee runs)."""
    store = data.open_workspace(root).store
    return (agreement.load_patterns(store, by_node=True, fully_voted=True, audit_fraction=audit_fraction)[0],
            agreement.adaptive_runs(store))


@st.cache_data(show_spinner=False, max_entries=4)
def summary(root: str, v: tuple, audit_fraction: float) -> dict:
    """Every figure the page's first screen shows, computed once per vote-table version (~0.3 s at paper scale
    that each view and click would otherwise repeat)."""
    all_patterns, names = vote_patterns(root, v)
    patterns, adaptive = fully_voted(root, v, audit_fraction)
    frame = data.node_table(root)
    cat_of = pd.Series(frame["category"].to_numpy(), index=frame["id"].to_numpy())
    per_cat = agreement.agreement_by(
        patterns.assign(category=patterns["node_id"].map(cat_of).fillna("(not in taxonomy)")), names, "category")
    return {"names": names, "adaptive": adaptive, "voted": int(all_patterns["n"].sum()),
            "fully_voted": int(patterns["n"].sum()),
            "complete": int(agreement.complete(patterns, names)["n"].sum()),
            "rates": agreement.pass_rates(patterns if adaptive else all_patterns, names),
            "fleiss": agreement.fleiss_from_patterns(patterns, names),
            "kappa": agreement.pairwise_kappa(patterns, names), "per_cat": per_cat}


def votes_of(ws: Workspace, sample_id: str) -> pd.DataFrame:
    """Each referee's vote on one sample with its raw output."""
    return agreement.votes_of(ws.store, sample_id)
