"""The Adjudicate page's reads: the votes' content key, the referees' Dawid–Skene fit (stored, loaded, or fitted
once per key), the most uncertain samples of a fit, which of them a person has decided since, one sample with its
task path and image, the first-level category of each task type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from workbench.apps.dashboard import data
from workbench.core.workspace import Workspace
from workbench.stages.referee.people import HUMAN_SQL
from workbench.stages.select import consensus as cons_mod

# Above the page's AUTO_COMPUTE_VOTES the votes' content key (a pass over the whole table, ~0.6 s at 1.2 M votes) is
# not recomputed after this session's own votes: the fit is stale either way. It is re-read at most this often
# (a refit by the CLI or another session shows within it) and at once on "Recompute" / "Reload data".
LARGE_KEY_TTL_S = 60


def count_votes(root: str) -> int:
    return int(data.table_version(root, "votes")[0] or 0)


@st.cache_data(ttl=data.VERSION_TTL_S, show_spinner=False)
def votes_key(root: str, include_human: bool) -> str:
    """The votes' content key: the fit stored under it is current."""
    store = data.open_workspace(root).store
    return cons_mod.consensus_key(store, include_human, cons_mod.votes_version(store))


@st.cache_data(ttl=LARGE_KEY_TTL_S, show_spinner=False)
def votes_key_large(root: str, include_human: bool) -> str:
    return votes_key(root, include_human)


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_file(path: str, mtime_ns: int):
    """One stored fit (its sorted queue order is kept on the object): a vote that makes it stale reuses it."""
    return cons_mod.load(Path(path))


@st.cache_resource(show_spinner="Fitting Dawid–Skene to the votes…", max_entries=2)
def fit(root: str, key: str, include_human: bool):
    return cons_mod.consensus(data.open_workspace(root), include_human)   # fits and stores


def consensus(root: str, key: str, include_human: bool, compute: bool):
    """The fit stored for the votes' current content key; else fitted (when `compute`); else the latest stored
    fit, which is then stale (its key differs from `key`); else None."""
    ws = data.open_workspace(root)
    path = cons_mod.stored_path(ws, key, include_human)
    if path is None and compute:
        return fit(root, key, include_human)
    for p in ([path] if path is not None else cons_mod.latest_stored(ws, include_human)):
        try:
            return _load_file(str(p), p.stat().st_mtime_ns)
        except (OSError, ValueError, KeyError):
            continue
    return None


def has_stored_fit(ws: Workspace) -> bool:
    """Whether any fit is stored, in either mode (with or without people's votes), current or stale."""
    return any(cons_mod.latest_stored(ws, mode) for mode in (True, False))


@st.cache_data(show_spinner=False, max_entries=8)
def candidates(root: str, key: str, include_human: bool, fit_key: str, generation: int, n: int):
    """The `n` most uncertain samples of the fit shown, not yet decided when ranked (recomputed when the fit
    changes, or when votes used most of them up: `generation`)."""
    cons = consensus(root, key, include_human, False)   # the fit is stored by now: never fits here
    return cons_mod.uncertain_queue(data.open_workspace(root), cons, n) if cons is not None else None


def decided_among(ws: Workspace, ids: list[str]) -> set[str]:
    """Which of these samples a person has voted on or flagged: one indexed lookup."""
    marks = ",".join("?" * len(ids))
    rows = ws.store.query(f"SELECT sample_id FROM votes WHERE sample_id IN ({marks}) AND {HUMAN_SQL} "
                          f"UNION SELECT sample_id FROM sample_flags WHERE sample_id IN ({marks})", (*ids, *ids))
    return {r[0] for r in rows}


def sample_row(ws: Workspace, sid: str, cons) -> dict:
    """One sample as a queue row: its image, task path, question, answer and posterior (NaN without one)."""
    r = ws.store.one("SELECT image_id, node_id, question, answer FROM samples WHERE id = ?", (sid,))
    path = cons_mod.task_path(ws, r["node_id"])
    return {"sample_id": sid, "image_id": r["image_id"], "task_type": path, "question": r["question"],
            "answer": r["answer"], "p_good": float(cons.posterior.get(sid, np.nan))}


def is_flagged(ws: Workspace, sid: str) -> bool:
    return bool(ws.store.scalar("SELECT 1 FROM sample_flags WHERE sample_id = ?", (sid,)))


def image_file(ws: Workspace, image_id: str) -> tuple[Path, str] | None:
    """A registered image's file and its path as registered (None: not registered)."""
    img = ws.store.one("SELECT root, path FROM images WHERE id = ?", (image_id,))
    return None if img is None else (data.image_path(img["root"], img["path"]), img["path"])


@st.cache_data(show_spinner=False, max_entries=4)
def categories(root: str, v: tuple) -> dict:
    """{task type id: its first-level category}."""
    return cons_mod.first_level(data.open_workspace(root))
