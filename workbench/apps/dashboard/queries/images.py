"""The Images per task page's own read: a task type's matched images (the histogram reads the shared node table,
the thumbnails data.thumbnail)."""

from __future__ import annotations

import streamlit as st

from workbench.apps.dashboard import data
from workbench.stages.match import stage as match_stage


@st.cache_data(show_spinner=False, max_entries=64)
def task_images(root: str, v: tuple, node_id: str, limit: int) -> list[dict]:
    """A task type's matched images (best score first) with their paths."""
    ws = data.open_workspace(root)
    rows = match_stage.images_for_task(ws, node_id, limit=limit)
    imgs = data.image_table(root, data.version(root, "images"))
    return [{**r, "path": imgs.at[r["image_id"], "path"] if r["image_id"] in imgs.index else r["image_id"]}
            for r in rows]
