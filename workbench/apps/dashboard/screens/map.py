"""Embedding map: CLIP image and task-type embeddings projected together (UMAP) in one chart.

The projection is computed once and stored (`workbench.analysis.projection`); this page only reloads it. One view:
Plotly's chart (lasso, box, zoom) over a picture of every point drawn on the server (`map_picture`), laid under it
in data units. Colour by first-level category, referee outcome or source; the discovered clusters (`workbench
discover`) can be drawn over it as a layer (`?layer=clusters`). A lasso or box selects every point inside it, on the
server (`map_figures.in_region`): the selected images with their task types and Q&A, and the selection as an action
(`_act`): its ids exported, a task type proposed for its images (the parent preselected, its note naming the map
selection; it then waits on Review), their samples flagged. The legend lists every colour group with its counts.

Chosen by measurement (paper scale: 100,000 images + 19,227 task types = 119,227 points; headless Chromium with
software rendering on the 2-core machine; both versions served side by side and measured in alternation, medians of
3, new tab until drawn, selection until the selected points are listed; `benchmarks/bench_dashboard.py --map-only`
times the chosen view). The floor page (a 3-bar Plotly chart) took 3.59 s in the same sitting:

| candidate | first render | selection | |
|---|---|---|---|
| picture alone (server PNG) | 3.19 s | none | no hover, no selection |
| Vega-Lite canvas, 5,000-point sample | 3.13 s | box 0.84 s | no lasso in Vega-Lite |
| Plotly WebGL, 5,000-point sample | 6.08 s | lasso 12.20 s | every drawn point is restyled at each lasso move |
| embedding-atlas 0.26 (`embedding_atlas.streamlit`) | does not draw | none | needs WebGPU with shader-f16 (1) |
| pydeck (`st.pydeck_chart`) | not timed | none | selects clicked objects only, no region |
| **Plotly over the picture, no markers** | 3.80 s | lasso 0.95 s | the chosen view: lasso and box |

(1) "WebGPU is unavailable. This view requires a browser with WebGPU support." With --enable-unsafe-webgpu,
SwiftShader's adapter lacks shader-f16. Its Streamlit bundle also fetches DuckDB-WASM from cdn.jsdelivr.net: no map
offline (measured with a copy pointed at the package's own DuckDB files).

The goals were 3 s and 1 s. The first render in a new tab is Plotly's own (its 4.7 MB of JavaScript): within
0.3 s of the floor page, which is itself above 3 s on this machine. Re-measured in three later sittings
(`bench_dashboard.py --map-only`, medians of 3): floor 3.12-3.56 s; the map in a new tab 3.34-3.69 s; from another
page through the sidebar (the code already loaded) 2.16-3.20 s; a lasso 1.29-1.34 s (0.90-1.70 s), of which ~0.57 s
is the browser drawing the lasso as the mouse moves (30 moves) and the server's part ~0.06 s (a new selection's
drill-down reads the tree the dashboard keeps: 0.04 s, from 0.78 s when it was rebuilt per selection).

The same lasso in plotly.js alone (one sitting, 30 mouse moves): 5,000 points in 96 traces 21 s, in 2 traces 10 s,
1,000 points 6.6 s, no points 0.7 s. So a large map draws no markers over the picture until 'Points drawn' asks
(names on hover); a map of up to 2,000 points draws them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from workbench.analysis import projection
from workbench.analysis.gap_items import selection_tsv
from workbench.apps.dashboard import data
from workbench.apps.dashboard import map_figures as mf
from workbench.apps.dashboard.queries import gaps as gq
from workbench.apps.dashboard.queries import map as mq
from workbench.apps.dashboard.screens import gaps
from workbench.apps.dashboard.text import md
from workbench.core.workspace import Workspace

COLOUR_BY = {"first-level category": "category", "referee outcome": "outcome", "source": "source"}
COLOUR_BY_TITLE = {"category": "first-level category", "outcome": "referee outcome", "source": "source"}
GRID = 24


def first_screen() -> tuple[str, ...]:
    """Lazily loaded element kinds this page draws, for the shell to send first (perf/primer.py): Plotly's code
    loads while the server reads the points."""
    return ("plotly",)


@dataclass(frozen=True)
class _Map:
    """One drawing of a stored projection: its points and what every view's figures are keyed on."""
    root: str
    proj: projection.Projection
    df: pd.DataFrame            # the points (mq.points)
    v: tuple                    # the figures' data version (with the referee outcomes' when coloured by them)
    colour: str                 # a COLOUR_BY value
    min_votes: int
    layer_v: tuple | None       # the discovered clusters' version when drawn as a layer, else None

    @property
    def args(self) -> tuple:
        return self.root, self.proj.key, self.v, self.colour, self.min_votes

    @property
    def counts(self) -> tuple[int, int]:
        return int((self.df["kind"] == "image").sum()), int((self.df["kind"] == "task").sum())

    @property
    def about(self) -> str:
        return f"{self.proj.method.upper()} stored {self.proj.created_at[:19]}, key `{self.proj.key}`."

    @property
    def legend_title(self) -> str:
        return "discovered clusters" if self.layer_v else COLOUR_BY_TITLE[self.colour]


def render(root: str, ws: Workspace) -> None:
    sets = mq.embedding_sets(ws)
    if not sets:
        data.empty_state("No CLIP embeddings", "embedding_sets")
        return
    label = {s["key"]: f"{s['kind']} · {s['model']} · {s['n']:,} rows" for s in sets}
    default = projection.default_sets(sets)
    c1, c2, c3, c4, c5 = st.columns([1.7, 0.9, 1.1, 0.9, 1.5])
    chosen = c1.multiselect("Embedding sets (of one model)", list(label), default=default, format_func=label.get,
                            key="map_sets")
    method = c2.selectbox("Method", projection.METHODS, key="map_method",
                          help="UMAP (the map to read); PCA is instant but crowds clusters.")
    colour = COLOUR_BY[c3.selectbox("Colour by", list(COLOUR_BY), key="map_colour")]
    layer = _clusters_toggle(root, c5)
    if not chosen:
        st.info("Choose at least one embedding set.")
        return
    proj = mq.stored(root, tuple(sorted(chosen)), method, data.version(root, *mq.PROJECTION_TABLES))
    if proj is None:
        _offer_to_compute(ws, chosen, method)
        return
    v = data.version(root, *mq.POINT_TABLES)
    df = mq.points(root, proj.key, v)
    m = _Map(root, proj, df, v + (data.version(root, *data.OUTCOME_TABLES) if colour == "outcome" else ()), colour,
             ws.config.select.min_votes, v + data.version(root, "discoveries") if layer else None)
    shown = c4.selectbox("Points drawn", list(mf.POINT_CHOICES), key="map_points",
                         index=list(mf.POINT_CHOICES).index(mf.default_points(len(df))),
                         help="Every point is in the picture. Points drawn over it as markers show their names on "
                              "hover (a fixed random sample of a large map), but make every lasso slower: the "
                              "browser restyles each drawn point as the lasso moves. A lasso or box selects every "
                              "point in it, drawn or not.")
    sel = _map(m, mf.POINT_CHOICES[shown])
    if sel:
        _selection(root, df, sel)


def _clusters_toggle(root: str, col) -> bool:
    """The discovered-clusters layer switch (off and disabled without clusters); True when it is drawn."""
    has_clusters = data.has_rows(root, "discoveries")
    if has_clusters and "map_clusters" not in st.session_state:   # ?layer=clusters: opened from the Gaps page
        st.session_state["map_clusters"] = st.query_params.get("layer") == "clusters"
    layer = col.toggle("Discovered clusters", key="map_clusters", disabled=not has_clusters,
                       help="Images no task type fitted, clustered by `workbench discover`: rings per cluster, "
                            "marks its exemplars. Select them to see the images." if has_clusters else
                            "No discovered clusters yet: `workbench discover WORKSPACE`.")
    return bool(layer and has_clusters)


def _offer_to_compute(ws: Workspace, chosen: list[str], method: str) -> None:
    st.info(f"No stored {method.upper()} projection of these sets yet. Computing it takes about a minute for "
            "100k points (stored in the workspace and reloaded afterwards).")
    if st.button(f"Compute the {method.upper()} projection", key="map_compute"):
        with st.spinner("Projecting…"):
            mq.compute(ws, chosen, method)
        st.rerun()


def _about_drawing(m: _Map, drawn: int, how: str, clusters: list[dict]) -> None:
    n_img, n_task = m.counts
    sampled = ("" if drawn >= len(m.df) else f" No points are drawn as markers over the picture ({len(m.df):,} "
               "points): 'Points drawn' shows names on hover." if not drawn else
               f" Markers over the picture: a fixed random sample of {drawn:,} of {len(m.df):,} points.")
    st.caption(f"{n_img:,} images (small marks) and {n_task:,} task types (larger, dark rim; diamonds when hovered); "
               f"{m.about} {how}{sampled}")
    if clusters:
        st.caption("Discovered clusters: " + "; ".join(
            f"{c['name']} ({c['drawn']:,} of {c['size']:,} images on the map, {c['status']})" for c in clusters))


def _map(m: _Map, max_points: int) -> list[int] | None:
    """The map (Plotly's WebGL scatter of a sample over the picture of every point) with its legend; every point in
    the lasso or box (None: no region selected)."""
    fig, rows, clusters = mf.scatter(*m.args, max_points, m.layer_v)
    drawn = sum(len(r) for r, t in zip(rows, fig.data) if t.legendgroup in ("images", "tasks"))
    _about_drawing(m, drawn, "Every point is in the picture. Draw a lasso (or pick the box in the toolbar) to "
                   "select; a double-click clears it.", clusters)
    left, right = st.columns([5, 1])
    with left:
        event = st.plotly_chart(fig, key="map_chart", on_select="rerun", selection_mode=("points", "box", "lasso"))
    with right:   # every group (Plotly's own legend stopped at the plot's height)
        st.html(mf.legend_html(mf.legend_rows(*m.args, m.layer_v), m.legend_title))
    sel = _selected_rows(event, m.df, rows)
    if sel is not None and not sel:
        st.caption("No points in the selection. Draw around some points; a double-click clears it.")
    return sel


def _selection(root: str, df: pd.DataFrame, sel: list[int]) -> None:
    """The selected points (rows of `points`): their task types as a table, their images as a grid."""
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
        _act(root, img_ids, task_ids)


def _act(root: str, img_ids: list[str], task_ids: list[str]) -> None:
    """The selection as an action: its ids exported, a task type proposed for its images (its note names the
    selection; the default parent is the parent of the task type most of them match best), its samples flagged:
    the Gaps page's drill-down (analysis.gap_items) with the map selection as the gap."""
    ids = selection_tsv(img_ids, task_ids)     # the notebooks' map exports and reads back the same form
    st.download_button(f"Export the {len(img_ids) + len(task_ids):,} ids (TSV)", ids, "map-selection.tsv",
                       "text/tab-separated-values", key="map_export")
    d = gq.gap_drill(root, gq.drill_version(root), "map", tuple(img_ids))
    gaps.drill_actions(root, data.open_workspace(root), d, "map")
    st.caption("A proposed task type waits for a decision on [Review](?page=review); flagged samples are listed on "
               "[Adjudicate](?page=adjudicate).")


def _selected_rows(event, df: pd.DataFrame, rows: list[np.ndarray]) -> list[int] | None:
    """The selected points (rows of `points`): every point in the lasso or box, drawn or sampled out; else the
    clicked points of the drawn sample. None when nothing is selected."""
    try:
        selection = event["selection"]
    except (KeyError, TypeError):
        return None
    inside = mf.in_region(df["x"].to_numpy(), df["y"].to_numpy(), selection)
    if inside is not None:
        return np.flatnonzero(inside).tolist()
    out = set()
    for p in selection.get("points") or []:
        c, i = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        if c is not None and i is not None and 0 <= c < len(rows) and 0 <= i < len(rows[c]):
            out.add(int(rows[c][i]))
    return sorted(out) or None


def _grid(root: str, image_ids: list[str], frame: pd.DataFrame) -> None:
    imgs = data.image_table(root, data.version(root, "images"))
    matches = mq.matches_for_images(root, image_ids)
    samples = mq.samples_for_images(root, image_ids)
    path_of = frame["path"].to_dict()
    cols = st.columns(4)
    for i, image_id in enumerate(image_ids):
        with cols[i % 4]:
            if image_id in imgs.index:
                p = data.image_path(imgs.at[image_id, "root"], imgs.at[image_id, "path"])
                if p.exists():
                    st.image(str(p), width="stretch")
                st.caption(md(imgs.at[image_id, "path"]))
            m = matches[matches["image_id"] == image_id]
            for _, r in m.head(5).iterrows():
                st.markdown(f"- {md(path_of.get(r['node_id'], r['node_id']))} ({r['score']:.2f})")
            for _, r in samples[samples["image_id"] == image_id].head(3).iterrows():
                st.markdown(f"**Q:** {md(r['question'])}  \n**A:** {md(r['answer'])}")


def prewarm(root: str) -> None:
    """The default drawing, coloured by category: its picture, sample and legend; the tree a selection's drill-down
    reads."""
    data.every_node_index(root)
    found = mq.default_projection(root)
    if found is not None:
        ws, proj, v = found
        n = len(mq.points(root, proj.key, v))
        mf.scatter(root, proj.key, v, "category", ws.config.select.min_votes,
                   mf.POINT_CHOICES[mf.default_points(n)], None)
        mf.legend_rows(root, proj.key, v, "category", ws.config.select.min_votes, None)


def prewarm_late(root: str) -> None:
    """The other colourings' drawings, so switching 'Colour by' only swaps a figure."""
    found = mq.default_projection(root)
    if found is None:
        return
    ws, proj, v = found
    points = mf.POINT_CHOICES[mf.default_points(len(mq.points(root, proj.key, v)))]
    for colour in ("outcome", "source"):
        vv = v + (data.version(root, *data.OUTCOME_TABLES) if colour == "outcome" else ())
        mf.scatter(root, proj.key, vv, colour, ws.config.select.min_votes, points, None)
