"""The embedding map's reads: the stored projections and their points (with each point's category, label, source
and referee outcome), the discovered clusters drawn over them, and the matches and Q&A of selected images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from workbench.analysis import projection
from workbench.apps.dashboard import data
from workbench.core.workspace import Workspace

PROJECTION_TABLES = ("embedding_sets", "embedding_rows", "projections")   # what a stored projection depends on
POINT_TABLES = ("nodes", "matches", "images")                            # what the points' columns depend on


def embedding_sets(ws: Workspace) -> list[dict]:
    """The workspace's embedding sets, newest model first."""
    return projection.embedding_sets(ws.store)


@st.cache_resource(show_spinner=False, max_entries=8)
def stored(root: str, set_keys: tuple, method: str, v: tuple):
    """The stored projection of these sets (None if not computed yet), loaded once per data version."""
    return projection.get_or_compute(data.open_workspace(root), list(set_keys), method, compute=False)


def compute(ws: Workspace, set_keys: list[str], method: str) -> None:
    """Compute and store the projection of these sets (about a minute for 100k points); `stored` then finds it."""
    projection.get_or_compute(ws, set_keys, method, compute=True)
    stored.clear()


def default_projection(root: str):
    """(workspace, stored projection, data version) of the default view: the newest model's sets, UMAP; None when
    there is nothing stored to draw."""
    ws = data.open_workspace(root)
    sets = projection.embedding_sets(ws.store)
    if not sets:
        return None
    chosen = [s["key"] for s in sets if s["model"] == sets[0]["model"]][:2]
    proj = stored(root, tuple(sorted(chosen)), "umap", data.version(root, *PROJECTION_TABLES))
    return None if proj is None else (ws, proj, data.version(root, *POINT_TABLES))


# cache_resource: shared, not copied per call (119k rows); callers only read them.
@st.cache_resource(show_spinner="Loading the projection…", max_entries=2)
def points(root: str, key: str, v: tuple) -> pd.DataFrame:
    """One row per projected item: x, y, kind, item_id, category, label, source (outcome on demand)."""
    proj = projection.load(data.open_workspace(root), key)
    kinds = np.array([k for k, _ in proj.items], dtype=object)
    ids = pd.Series([i for _, i in proj.items], dtype=object)
    frame = data.node_table(root)
    cat_of = pd.Series(frame["category"].to_numpy(), index=frame["id"])
    name_of = pd.Series(frame["name"].to_numpy(), index=frame["id"])
    is_img = kinds == "image"
    best = data.image_best_match(root, data.version(root, "matches"))
    imgs = data.image_table(root, data.version(root, "images"))
    # Task types that are no longer live leaves (given children, or removed, since the embeddings were
    # computed) are not drawn: they are not task types any more.
    live = set(frame.loc[frame["is_leaf"], "id"])
    drawn = is_img | ids.isin(live).to_numpy()
    kinds, ids, is_img, coords = kinds[drawn], ids[drawn].reset_index(drop=True), is_img[drawn], proj.coords[drawn]
    node_for = np.where(is_img, ids.map(best).to_numpy(), ids.to_numpy())
    df = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "kind": kinds, "item_id": ids.to_numpy()})
    df["category"] = pd.Series(node_for).map(cat_of).fillna("(unmatched)").to_numpy()
    # Hover labels only for task types (short leaf names): 100k image paths would triple the payload.
    df["label"] = np.where(is_img, "", ids.map(name_of).fillna("").to_numpy())
    df["source"] = np.where(is_img, ids.map(imgs["source"]).fillna("(unknown)").to_numpy(), "task type")
    return df


@st.cache_resource(show_spinner="Reading referee outcomes…", max_entries=2)
def outcomes(root: str, key: str, v: tuple, min_votes: int) -> np.ndarray:
    df = points(root, key, data.version(root, *POINT_TABLES))
    per_image = data.image_outcomes(root, v, min_votes)
    is_img = (df["kind"] == "image").to_numpy()
    return np.where(is_img, df["item_id"].map(per_image).fillna("not refereed").to_numpy(), "task type")


def discovered_clusters(ws: Workspace) -> list:
    """The latest discovery of each cluster (`workbench discover`), oldest first: id, name, status, size and its
    images and exemplars (JSON lists of image ids)."""
    return ws.store.query("SELECT id, name, status, size, image_ids, exemplar_ids FROM discoveries d WHERE id = "
                          "(SELECT max(id) FROM discoveries e WHERE e.cluster_key = d.cluster_key) ORDER BY id")


def samples_for_images(root: str, image_ids: list[str], limit: int = 200) -> pd.DataFrame:
    if not image_ids:
        return pd.DataFrame(columns=["image_id", "node_id", "question", "answer", "status"])
    s = data.open_workspace(root).store
    q = ",".join("?" * len(image_ids))
    rows = s.query(f"SELECT image_id, node_id, question, answer, status FROM samples WHERE image_id IN ({q}) "
                   f"LIMIT {int(limit)}", tuple(image_ids))
    return pd.DataFrame([dict(r) for r in rows], columns=["image_id", "node_id", "question", "answer", "status"])


def matches_for_images(root: str, image_ids: list[str]) -> pd.DataFrame:
    if not image_ids:
        return pd.DataFrame(columns=["image_id", "node_id", "rank", "score"])
    s = data.open_workspace(root).store
    q = ",".join("?" * len(image_ids))
    rows = s.query(f"SELECT image_id, node_id, rank, score FROM matches WHERE image_id IN ({q}) "
                   "ORDER BY image_id, rank", tuple(image_ids))
    return pd.DataFrame([dict(r) for r in rows], columns=["image_id", "node_id", "rank", "score"])
