"""Embedding map: CLIP image and task-type embeddings projected together (UMAP) in one WebGL scatter.

The projection is computed once and stored (`workbench.analysis.projection`); this page only
reloads it. Colour by first-level category, referee outcome or source; selecting points shows
the images with their task types and Q&A.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from workbench.analysis import projection
from workbench.dashboard import data

COLOUR_BY = {"first-level category": "category", "referee outcome": "outcome", "source": "source"}
MAX_GROUPS = 24
GRID = 24


@st.cache_data(show_spinner="Loading the projection…", max_entries=2)
def points(root: str, key: str, v: tuple, min_votes: int) -> pd.DataFrame:
    ws = data.open_workspace(root)
    proj = projection.load(ws, key)
    kinds = np.array([k for k, _ in proj.items], dtype=object)
    ids = np.array([i for _, i in proj.items], dtype=object)
    frame = data.node_table(root)
    cat_of = pd.Series(frame["category"].to_numpy(), index=frame["id"])
    path_of = pd.Series(frame["path"].to_numpy(), index=frame["id"])
    is_img = kinds == "image"
    best = data.image_best_match(root, data.version(root, "matches"))
    imgs = data.image_table(root, data.version(root, "images"))
    outcome = data.image_outcomes(root, data.version(root, "votes", "samples"), min_votes)
    node_for = np.where(is_img, pd.Series(ids).map(best).to_numpy(), ids)
    df = pd.DataFrame({"x": proj.coords[:, 0], "y": proj.coords[:, 1], "kind": kinds, "item_id": ids})
    df["category"] = pd.Series(node_for).map(cat_of).fillna("(unmatched)").to_numpy()
    df["label"] = np.where(is_img, pd.Series(ids).map(imgs["path"]).fillna("").to_numpy(),
                           pd.Series(ids).map(path_of).fillna("").to_numpy())
    df["source"] = np.where(is_img, pd.Series(ids).map(imgs["source"]).fillna("(unknown)").to_numpy(), "task type")
    df["outcome"] = np.where(is_img, pd.Series(ids).map(outcome).fillna("not refereed").to_numpy(), "task type")
    return df


def render(root: str, ws) -> None:
    sets = projection.embedding_sets(ws.store)
    if not sets:
        data.empty_state("No CLIP embeddings", "embedding_sets")
        return
    label = {s["key"]: f"{s['kind']} · {s['model']} · {s['n']:,} rows" for s in sets}
    model = sets[0]["model"]
    default = [s["key"] for s in sets if s["model"] == model][:2]
    c1, c2, c3 = st.columns([2, 1, 1])
    chosen = c1.multiselect("Embedding sets (one CLIP model)", list(label), default=default, format_func=label.get,
                            key="map_sets")
    method = c2.selectbox("Method", projection.METHODS, key="map_method",
                          help="UMAP (the map to read); PCA is instant but crowds clusters.")
    colour = c3.selectbox("Colour by", list(COLOUR_BY), key="map_colour")
    if not chosen:
        st.info("Choose at least one embedding set.")
        return
    proj = projection.get_or_compute(ws, chosen, method, compute=False)
    if proj is None:
        st.info(f"No stored {method.upper()} projection of these sets yet. Computing it takes about a minute for "
                "100k points (stored in the workspace and reloaded afterwards).")
        if st.button(f"Compute the {method.upper()} projection", key="map_compute"):
            with st.spinner("Projecting…"):
                proj = projection.get_or_compute(ws, chosen, method, compute=True)
            st.rerun()
        return
    df = points(root, proj.key, data.version(root, "nodes", "matches", "images", "votes", "samples"),
                ws.config.select.min_votes)
    col = COLOUR_BY[colour]
    groups = df[col].value_counts()
    top = set(groups.index[:MAX_GROUPS])
    grp = np.where(df[col].isin(top), df[col], "(other)")
    fig = go.Figure()
    for name in list(groups.index[:MAX_GROUPS]) + (["(other)"] if len(groups) > MAX_GROUPS else []):
        idx = np.flatnonzero(grp == name)
        sub = df.iloc[idx]
        task = (sub["kind"] == "task").to_numpy()
        fig.add_trace(go.Scattergl(
            x=sub["x"].to_numpy(), y=sub["y"].to_numpy(), mode="markers", name=str(name)[:40],
            customdata=idx, hovertext=sub["label"].to_numpy(), hoverinfo="text",
            marker=dict(size=np.where(task, 7, 4), symbol=np.where(task, "diamond", "circle"), opacity=0.75)))
    fig.update_layout(height=640, margin=dict(l=0, r=0, t=10, b=0), dragmode="lasso", legend=dict(itemsizing="constant"),
                      xaxis=dict(showticklabels=False), yaxis=dict(showticklabels=False))
    st.caption(f"{(df['kind'] == 'image').sum():,} images (circles) and {(df['kind'] == 'task').sum():,} task types "
               f"(diamonds); {proj.method.upper()} stored {proj.created_at[:19]}, key `{proj.key}`. "
               "Draw a lasso or box to select.")
    event = st.plotly_chart(fig, key="map_chart", on_select="rerun", selection_mode=("points", "box", "lasso"))
    sel = _selected_rows(event)
    if not sel:
        return
    picked = df.iloc[sel]
    img_ids = picked.loc[picked["kind"] == "image", "item_id"].tolist()
    task_ids = picked.loc[picked["kind"] == "task", "item_id"].tolist()
    st.subheader(f"Selection: {len(img_ids):,} image(s), {len(task_ids):,} task type(s)")
    frame = data.node_table(root).set_index("id")
    if task_ids:
        st.dataframe(frame.loc[[t for t in task_ids if t in frame.index], ["path", "images", "samples"]].head(500),
                     key="map_tasks")
    if img_ids:
        _grid(root, img_ids[:GRID], frame)


def _selected_rows(event) -> list[int]:
    try:
        pts = event["selection"]["points"]
    except (KeyError, TypeError):
        return []
    out = []
    for p in pts:
        cd = p.get("customdata")
        if isinstance(cd, list):
            cd = cd[0] if cd else None
        if cd is not None:
            out.append(int(cd))
    return sorted(set(out))


def _grid(root: str, image_ids: list[str], frame: pd.DataFrame) -> None:
    imgs = data.image_table(root, data.version(root, "images"))
    matches = data.matches_for_images(root, image_ids)
    samples = data.samples_for_images(root, image_ids)
    path_of = frame["path"].to_dict()
    cols = st.columns(4)
    for i, image_id in enumerate(image_ids):
        with cols[i % 4]:
            if image_id in imgs.index:
                p = data.image_path(imgs.at[image_id, "root"], imgs.at[image_id, "path"])
                if p.exists():
                    st.image(str(p), width="stretch")
                st.caption(imgs.at[image_id, "path"])
            m = matches[matches["image_id"] == image_id]
            for _, r in m.head(5).iterrows():
                st.markdown(f"- {path_of.get(r['node_id'], r['node_id'])} ({r['score']:.2f})")
            for _, r in samples[samples["image_id"] == image_id].head(3).iterrows():
                st.markdown(f"**Q:** {r['question']}  \n**A:** {r['answer']}")
