"""The Taxonomy coverage page's reads beyond the shared node table: the tree's quality figures, CLIP token counts
of the task paths, the text embeddings the CLIP stage truncated."""

from __future__ import annotations

import streamlit as st

from workbench.analysis import coverage
from workbench.apps.dashboard import data
from workbench.core.workspace import Workspace
from workbench.taxonomy.model import Taxonomy
from workbench.taxonomy.stats import compute_stats


@st.cache_data(show_spinner=False, max_entries=4)
def taxonomy_stats(root: str, v: tuple) -> dict:
    return compute_stats(Taxonomy.of(data.open_workspace(root))).as_dict()


@st.cache_data(show_spinner="Counting CLIP tokens per task path…", max_entries=4)
def token_lengths(root: str, v: tuple, template: str, model: str) -> dict:
    frame = data.node_table(root)
    leaves = frame[frame["is_leaf"]]
    rep = coverage.clip_token_lengths(coverage.template_texts(leaves["path"].tolist(), template), model)
    return {"tokenizer": rep.tokenizer, "context_length": rep.context_length,
            "ids": leaves["id"].to_numpy(), "lengths": rep.lengths, "too_long": rep.too_long}


def truncated_texts(ws: Workspace) -> int:
    """Task texts the CLIP stage recorded as truncated in its text embedding sets."""
    return ws.store.scalar("SELECT count(*) FROM embedding_rows r JOIN embedding_sets s ON s.key = r.set_key "
                           "WHERE s.kind='text' AND r.truncated=1")
