"""Embedding map: CLIP image and task-type embeddings projected together (UMAP) in one scatter.

The projection is computed once and stored (`workbench.analysis.projection`); this page only
reloads it. Three views of it: a picture of every point drawn on the server (`map_picture`), an interactive
Vega-Lite canvas (hover, zoom, box selection) and a Plotly WebGL scatter for lasso selection. Colour by
first-level category, referee outcome or source; the discovered clusters (`workbench discover`) can be drawn
over it as a layer; selecting points shows the images with their task types and Q&A.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.colors as pc
import plotly.graph_objects as go
import streamlit as st

from workbench.analysis import projection
from workbench.apps.dashboard import charts, data, primer
from workbench.apps.dashboard import map_picture as mp

COLOUR_BY = {"first-level category": "category", "referee outcome": "outcome", "source": "source"}
MAX_GROUPS = 48
# One fixed colour per group, shared by its image and task-type traces (plotly's default cycle has 10).
PALETTE = list(pc.qualitative.Dark24) + list(pc.qualitative.Light24)
OTHER_COLOUR = "#b0b0b0"
OUTCOME_COLOURS = {"all passed": "#2ca02c", "some passed": "#ff9f1c", "none passed": "#d62728",
                   "not refereed": OTHER_COLOUR}
GRID = 24
MODEBAR_MARGIN = 36   # px above the plot area: the modebar's own strip, clear of the legend
# Points drawn by default: the browser's time grows with the point count (Vega-Lite: ~0.36 s per 10k on a 2-core
# machine; WebGL ~2 s for 100k in software), so a large map is drawn from a fixed random sample unless the user
# asks for more. The picture view shows every point, and a box selects every point in it, drawn or not.
POINT_CHOICES = {"5,000": 5_000, "10,000": 10_000, "20,000": 20_000, "50,000": 50_000, "all": 0}
DEFAULT_POINTS = "5,000"
# A map the interactive view would sample opens as a server-drawn picture of every point (map_picture): drawing
# a large map in the browser costs seconds without a GPU. The user switches views with one click.
# "Interactive" is a Vega-Lite canvas (code Streamlit ships: the switch from the picture takes 0.8-1.0 s at paper
# scale); "Lasso" is Plotly's WebGL scatter, for free-hand selection (its first chart in a tab takes ~0.85 s to build
# before any data, ~2.3 s with loading Plotly). Plotly is not loaded ahead for it (measured at paper scale, 3 passes:
# a hidden Plotly chart under the picture took the switch to Lasso from 3.97 s to 1.62 s but the page's first render
# from 2.81 s to 3.65 s; under the canvas, picture -> interactive from 1.21 s to 2.79 s). Loading Plotly dominates
# the switch: one trace per kind with per-point colours instead of one per colour group and kind (~96) left it at
# ~4 s.
VIEWS = {"picture": "Picture", "interactive": "Interactive", "lasso": "Lasso"}
PICTURE_ABOVE = POINT_CHOICES[DEFAULT_POINTS]
BOX, ZOOM = "box", "zoom"   # the interactive view's selection parameters
COLOUR_BY_TITLE = {"category": "first-level category", "outcome": "referee outcome", "source": "source"}


def first_screen() -> tuple[str, ...]:
    """Lazily loaded element kinds this run draws, for main.py to send first (primer.py): Vega-Lite in the
    interactive view, Plotly in the lasso view (a first visit of a small map opens the interactive view too, without
    the head start)."""
    view = st.session_state.get("map_view") or st.query_params.get("view")
    return {"interactive": ("vega",), "lasso": ("plotly",)}.get(view, ())


# cache_resource: shared, not copied per call (119k rows); callers only read them.
@st.cache_resource(show_spinner="Loading the projection…", max_entries=2)
def points(root: str, key: str, v: tuple) -> pd.DataFrame:
    """One row per projected item: x, y, kind, item_id, category, label, source (outcome on demand)."""
    ws = data.open_workspace(root)
    proj = projection.load(ws, key)
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
    df = points(root, key, data.version(root, "nodes", "matches", "images"))
    per_image = data.image_outcomes(root, v, min_votes)
    is_img = (df["kind"] == "image").to_numpy()
    return np.where(is_img, df["item_id"].map(per_image).fillna("not refereed").to_numpy(), "task type")


def sample_mask(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Which of n points to draw: all, or a fixed random sample of max_points (the same on every rerun)."""
    keep = np.ones(n, bool)
    if max_points and n > max_points:
        keep[:] = False
        keep[np.random.default_rng(seed).choice(n, max_points, replace=False)] = True
    return keep


@st.cache_resource(show_spinner=False, max_entries=6)
def groups(root: str, key: str, v: tuple, colour: str, min_votes: int) -> tuple[np.ndarray, list[str], dict]:
    """Each point's colour group (the MAX_GROUPS largest, the rest '(other)'), the groups in legend order, and each
    group's colour: shared by the picture and the interactive scatter, so both read alike."""
    df = points(root, key, data.version(root, "nodes", "matches", "images"))
    col = (outcomes(root, key, data.version(root, *data.OUTCOME_TABLES), min_votes) if colour == "outcome"
           else df[colour].to_numpy())
    counts = pd.Series(col).value_counts()
    top = set(counts.index[:MAX_GROUPS])
    grp = np.where(pd.Series(col).isin(top).to_numpy(), col, "(other)").astype(str)
    names = [str(n) for n in counts.index[:MAX_GROUPS]] + (["(other)"] if len(counts) > MAX_GROUPS else [])
    colour_of = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(sorted(map(str, counts.index[:MAX_GROUPS])))}
    colour_of.update({"(other)": OTHER_COLOUR, "task type": "#222222"})
    if colour == "outcome":   # outcomes read as traffic lights, not as arbitrary categories
        colour_of.update(OUTCOME_COLOURS)
    return grp, names, colour_of


@st.cache_resource(show_spinner=False, max_entries=6)
def traces(root: str, key: str, v: tuple, colour: str, min_votes: int,
           max_points: int = POINT_CHOICES[DEFAULT_POINTS]) -> tuple[list[dict], list[np.ndarray]]:
    """Scattergl traces (plain dicts of compact arrays), one per colour group and kind, and for each
    trace the point rows it holds (kept on the server: a selection reports curve and point index)."""
    df = points(root, key, data.version(root, "nodes", "matches", "images"))
    keep = sample_mask(len(df), max_points)
    grp, names, colour_of = groups(root, key, v, colour, min_votes)
    is_task = (df["kind"] == "task").to_numpy()
    x, y = df["x"].to_numpy(np.float32), df["y"].to_numpy(np.float32)
    out, rows = [], []
    for name in names:
        for task in (False, True):
            idx = np.flatnonzero((grp == name) & (is_task == task) & keep).astype(np.int32)
            if not len(idx):
                continue
            # Two legend groups, images (circles) and task types (diamonds), each item per colour group.
            t = {"type": "scattergl", "mode": "markers", "x": x[idx], "y": y[idx],
                 "name": str(name)[:40], "legendgroup": "tasks" if task else "images", "showlegend": True,
                 "legendgrouptitle": {"text": "task types ◆" if task else "images ●"},
                 "marker": {"size": 6 if task else 4, "symbol": "diamond" if task else "circle",
                            "opacity": 0.9 if task else 0.6, "color": colour_of[str(name)],
                            **({"line": {"width": 0.5, "color": "#222222"}} if task else {})}}
            if task:
                t["hovertext"] = df["label"].to_numpy()[idx]
                t["hovertemplate"] = "%{hovertext}<extra>task type</extra>"
            else:
                t["hovertemplate"] = f"image · {str(name)[:40]}<extra></extra>"
            out.append(t)
            rows.append(idx)
    return out, rows


@st.cache_resource(show_spinner=False, max_entries=4)
def scatter(root: str, key: str, v: tuple, colour: str, min_votes: int, max_points: int, layer_v: tuple | None
            ) -> tuple[go.Figure, list[np.ndarray], list[dict]]:
    """The interactive view's figure (built once: validating 80 traces of 20k points is ~0.2 s a rerun), each trace's
    point rows, and the discovered clusters drawn (`layer_v` set). Callers only read the figure."""
    specs, rows = traces(root, key, v, colour, min_votes, max_points)
    clusters = []
    if layer_v is not None:
        extra, extra_rows, clusters = cluster_layer(root, key, layer_v)
        specs, rows = specs + extra, rows + extra_rows
    fig = go.Figure()
    fig.add_traces([go.Scattergl(t) for t in specs])
    # The legend sits right of the plot from the plot's top down, and the top margin holds the modebar: at
    # plotly's default place the legend covers the modebar. (Below the plot, plotly stacks each legend group
    # in a column that squeezes the plot.) showlegend is explicit: plotly hides a legend of one trace.
    fig.update_layout(height=640, margin={"l": 0, "r": 0, "t": MODEBAR_MARGIN, "b": 0}, dragmode="lasso", showlegend=True,
                      legend={"itemsizing": "constant", "orientation": "v", "x": 1.01, "xanchor": "left", "y": 1,
                                  "yanchor": "top", "groupclick": "toggleitem"},
                      xaxis={"showticklabels": False}, yaxis={"showticklabels": False})
    return fig, rows, clusters


@st.cache_resource(show_spinner=False, max_entries=6)
def picture(root: str, key: str, v: tuple, colour: str, min_votes: int, layer_v: tuple | None
            ) -> tuple[bytes, list[dict]]:
    """The whole map as a PNG (map_picture) and its legend rows [{name, colour, images, task_types}]; with the
    discovered-clusters layer (`layer_v` set) the map is faded and each cluster drawn over it as rings, its
    exemplars as filled marks, and the legend lists the clusters."""
    df = points(root, key, data.version(root, "nodes", "matches", "images"))
    grp, names, colour_of = groups(root, key, v, colour, min_votes)
    is_task = (df["kind"] == "task").to_numpy()
    rgb_of = {n: mp.hex_rgb(colour_of[n]) for n in names}
    rgb = np.array([rgb_of[g] for g in names], np.uint8)[pd.Series(grp).map({n: i for i, n in enumerate(names)})
                                                         .to_numpy()]
    images = np.flatnonzero(~is_task)
    images = images[np.random.default_rng(0).permutation(len(images))]   # no group hides another by coming last
    tasks = np.flatnonzero(is_task)
    layers = [mp.Layer(images, rgb[images], 3), mp.Layer(tasks, rgb[tasks], 3, rim=1)]
    dim = 0.0
    if layer_v is not None:
        specs, rows, _ = cluster_layer(root, key, layer_v)
        for t, idx in zip(specs, rows):
            c = mp.hex_rgb(t["marker"]["color"])
            exemplar = t["marker"]["symbol"] == "star"
            layers.append(mp.Layer(idx, np.tile(c, (len(idx), 1)), 7 if exemplar else 9, rim=1 if exemplar else 2,
                                   hollow=not exemplar))
        dim = 0.7
    png = mp.draw(df["x"].to_numpy(np.float32), df["y"].to_numpy(np.float32), layers, dim=dim)
    return png, legend_rows(root, key, v, colour, min_votes, layer_v)


@st.cache_resource(show_spinner=False, max_entries=6)
def legend_rows(root: str, key: str, v: tuple, colour: str, min_votes: int, layer_v: tuple | None) -> list[dict]:
    """The legend of the picture and the interactive view, [{name, colour, images, task_types}] over every point:
    one row per colour group, or with the clusters layer (`layer_v` set) one per discovered cluster."""
    if layer_v is not None:
        specs, rows, _ = cluster_layer(root, key, layer_v)
        return [{"name": t["name"], "colour": t["marker"]["color"], "images": len(idx), "task_types": 0}
                for t, idx in zip(specs, rows) if t["marker"]["symbol"] != "star"]
    df = points(root, key, data.version(root, "nodes", "matches", "images"))
    grp, names, colour_of = groups(root, key, v, colour, min_votes)
    is_task = (df["kind"] == "task").to_numpy()
    return [{"name": n, "colour": colour_of[n], "images": int(((grp == n) & ~is_task).sum()),
             "task_types": int(((grp == n) & is_task).sum())} for n in names]


@st.cache_resource(show_spinner=False, max_entries=4)
def canvas_points(root: str, key: str, v: tuple, colour: str, min_votes: int, max_points: int,
                  layer_v: tuple | None) -> tuple[pd.DataFrame, dict, list[dict]]:
    """The interactive view's rows (x, y, kind: image | task | ring | star, group, label; images in a random order so
    no group hides another by coming last, then task types, then the clusters layer), the colour of each group in
    legend order, and the clusters drawn. Callers only read them."""
    df = points(root, key, data.version(root, "nodes", "matches", "images"))
    grp, names, colour_of = groups(root, key, v, colour, min_votes)
    keep = sample_mask(len(df), max_points)
    is_task = (df["kind"] == "task").to_numpy()
    images = np.flatnonzero(~is_task & keep)
    rows = [images[np.random.default_rng(0).permutation(len(images))], np.flatnonzero(is_task & keep)]
    kinds, group = ["image", "task"], [grp[rows[0]], grp[rows[1]]]
    colours = {n: colour_of[n] for n in names}
    clusters = []
    if layer_v is not None:
        specs, layer_rows, clusters = cluster_layer(root, key, layer_v)
        for t, idx in zip(specs, layer_rows):
            rows.append(idx)
            kinds.append("star" if t["marker"]["symbol"] == "star" else "ring")
            group.append(np.full(len(idx), t["name"], dtype=object))
            colours.setdefault(t["name"], t["marker"]["color"])
    at = np.concatenate(rows).astype(np.int64)
    frame = pd.DataFrame({
        "x": df["x"].to_numpy(np.float32)[at], "y": df["y"].to_numpy(np.float32)[at],
        "kind": pd.Categorical(np.repeat(kinds, [len(r) for r in rows]), categories=["image", "task", "ring", "star"]),
        "group": pd.Categorical(np.concatenate(group).astype(str), categories=list(colours)),
        # Names only for task types (short leaf names): 10k image paths would triple the payload.
        "label": np.where(df["kind"].to_numpy()[at] == "task", df["label"].to_numpy()[at], "")})
    return frame, colours, clusters


@st.cache_resource(show_spinner=False, max_entries=4)
def cluster_layer(root: str, key: str, v: tuple) -> tuple[list[dict], list[np.ndarray], list[dict]]:
    """The discovered clusters (`workbench discover`) drawn over the map: per cluster its images as open rings and
    its exemplars (the images the VLM named it from) as stars, one legend entry per cluster. Returns (traces,
    point rows per trace, clusters [{id, name, status, size, drawn}]). The latest discovery per cluster."""
    ws = data.open_workspace(root)
    df = points(root, key, data.version(root, "nodes", "matches", "images"))
    row_of = pd.Series(np.arange(len(df)), index=df["item_id"].where(df["kind"] == "image"))
    row_of = row_of[row_of.index.notna() & ~row_of.index.duplicated()]
    found = ws.store.query("SELECT id, name, status, size, image_ids, exemplar_ids FROM discoveries d WHERE id = "
                           "(SELECT max(id) FROM discoveries e WHERE e.cluster_key = d.cluster_key) ORDER BY id")
    x, y = df["x"].to_numpy(np.float32), df["y"].to_numpy(np.float32)
    out, rows, clusters = [], [], []
    for i, r in enumerate(found):
        colour = PALETTE[i % len(PALETTE)]
        name = f"#{r['id']} {r['name'] or '(unnamed)'}"[:40]
        members = row_of.reindex(json.loads(r["image_ids"])).dropna().to_numpy(np.int32)
        stars = row_of.reindex(json.loads(r["exemplar_ids"])).dropna().to_numpy(np.int32)
        clusters.append({"id": r["id"], "name": name, "status": r["status"], "size": r["size"],
                         "drawn": int(len(members))})
        for idx, exemplar in ((members, False), (stars, True)):
            if not len(idx):
                continue
            out.append({"type": "scattergl", "mode": "markers", "x": x[idx], "y": y[idx], "name": name,
                        "legendgroup": f"cluster{r['id']}", "showlegend": not exemplar,
                        "legendgrouptitle": {"text": "discovered clusters ☆"} if i == 0 and not exemplar else None,
                        "marker": {"size": 13 if exemplar else 8, "symbol": "star" if exemplar else "circle-open",
                                   "color": colour, "line": {"width": 1.5 if not exemplar else 0.5,
                                                             "color": colour if not exemplar else "#222222"}},
                        "hovertemplate": f"{'exemplar of ' if exemplar else ''}{name}<extra>{r['status']}</extra>"})
            rows.append(idx)
    for t in out:
        if t["legendgrouptitle"] is None:
            del t["legendgrouptitle"]
    return out, rows, clusters


@st.cache_resource(show_spinner=False, max_entries=8)
def stored(root: str, set_keys: tuple, method: str, v: tuple):
    """The stored projection of these sets (None if not computed yet), loaded once per data version."""
    return projection.get_or_compute(data.open_workspace(root), list(set_keys), method, compute=False)


def render(root: str, ws) -> None:
    sets = projection.embedding_sets(ws.store)
    if not sets:
        data.empty_state("No CLIP embeddings", "embedding_sets")
        return
    label = {s["key"]: f"{s['kind']} · {s['model']} · {s['n']:,} rows" for s in sets}
    model = sets[0]["model"]
    default = [s["key"] for s in sets if s["model"] == model][:2]
    c1, c2, c3, c4, c5, c6 = st.columns([1.7, 0.9, 1.1, 1.5, 0.9, 1.5])
    chosen = c1.multiselect("Embedding sets (of one model)", list(label), default=default, format_func=label.get,
                            key="map_sets")
    method = c2.selectbox("Method", projection.METHODS, key="map_method",
                          help="UMAP (the map to read); PCA is instant but crowds clusters.")
    colour = c3.selectbox("Colour by", list(COLOUR_BY), key="map_colour")
    has_clusters = data.has_rows(root, "discoveries")
    if has_clusters and "map_clusters" not in st.session_state:   # ?layer=clusters: opened from the Gaps page
        st.session_state["map_clusters"] = st.query_params.get("layer") == "clusters"
    layer = c6.toggle("Discovered clusters", key="map_clusters", disabled=not has_clusters,
                      help="Images no task type fitted, clustered by `workbench discover`: rings per cluster, "
                           "marks its exemplars. Select them to see the images." if has_clusters else
                           "No discovered clusters yet: `workbench discover WORKSPACE`.")
    if not chosen:
        st.info("Choose at least one embedding set.")
        return
    pv = data.version(root, "embedding_sets", "embedding_rows", "projections")
    proj = stored(root, tuple(sorted(chosen)), method, pv)
    if proj is None:
        st.info(f"No stored {method.upper()} projection of these sets yet. Computing it takes about a minute for "
                "100k points (stored in the workspace and reloaded afterwards).")
        if st.button(f"Compute the {method.upper()} projection", key="map_compute"):
            with st.spinner("Projecting…"):
                projection.get_or_compute(ws, chosen, method, compute=True)
            stored.clear()
            st.rerun()
        return
    v = data.version(root, "nodes", "matches", "images")
    df = points(root, proj.key, v)
    if "map_view" not in st.session_state:   # ?view=interactive|picture; else by the map's size
        asked = st.query_params.get("view")
        st.session_state["map_view"] = asked if asked in VIEWS else (
            "picture" if len(df) > PICTURE_ABOVE else "interactive")
    view = c4.radio("View", list(VIEWS), format_func=VIEWS.get, key="map_view", horizontal=True,
                    help="Picture: every point, drawn on the server (fast at any size). Interactive: hover names, "
                         "zoom with the wheel (shift-drag pans), drag a box to see its images. Lasso: free-hand "
                         "selection (Plotly; slower to open). A large map is sampled in the last two.")
    vv = v + (data.version(root, *data.OUTCOME_TABLES) if COLOUR_BY[colour] == "outcome" else ())
    layer_v = v + data.version(root, "discoveries") if layer and has_clusters else None
    n_img, n_task = int((df["kind"] == "image").sum()), int((df["kind"] == "task").sum())
    about = f"{proj.method.upper()} stored {proj.created_at[:19]}, key `{proj.key}`."
    min_votes = ws.config.select.min_votes
    legend_title = "discovered clusters" if layer_v else COLOUR_BY_TITLE[COLOUR_BY[colour]]
    # On every view (disabled on the picture): a widget that is already there makes the switch of views quicker.
    shown = c5.selectbox("Points drawn", list(POINT_CHOICES), key="map_points", disabled=view == "picture",
                         index=list(POINT_CHOICES).index(DEFAULT_POINTS),
                         help="The interactive and lasso views draw a large map from a fixed random sample: much "
                              "faster to paint ('all' draws every point). The picture always draws every point.")
    if view == "picture":
        png, legend = picture(root, proj.key, vv, COLOUR_BY[colour], min_votes, layer_v)
        st.caption(f"Every point: {n_img:,} images (small squares) and {n_task:,} task types (larger, dark rim). "
                   f"{about} Switch the view to Interactive to hover, zoom and select.")
        left, right = st.columns([5, 1])
        left.image(png, width="stretch")
        with right:
            st.html(_legend_html(legend, legend_title))
        # After the picture: the browser loads the interactive view's chart code while the picture is read, so the
        # switch to Interactive only draws.
        primer.send(("vega",))
        return
    if view == "lasso":
        fig, rows, clusters = scatter(root, proj.key, vv, COLOUR_BY[colour], min_votes, POINT_CHOICES[shown], layer_v)
        drawn = sum(len(r) for r in rows)
    else:
        frame, colours, clusters = canvas_points(root, proj.key, vv, COLOUR_BY[colour], min_votes,
                                                     POINT_CHOICES[shown], layer_v)
        drawn = int((frame["kind"].isin(("image", "task"))).sum())
    sampled = (f" Drawing a fixed random sample of {drawn:,} of {len(df):,} points ('Points drawn' shows more)."
               if drawn < len(df) else "")
    how = ("Draw a lasso or box to select." if view == "lasso" else
           "Hover for names; the wheel zooms, shift-drag pans, a drag selects a box, a double-click resets.")
    st.caption(f"{n_img:,} images (circles) and {n_task:,} task types (diamonds); {about} {how}{sampled}")
    if clusters:
        st.caption("Discovered clusters: " + "; ".join(
            f"{c['name']} ({c['drawn']:,} of {c['size']:,} images on the map, {c['status']})" for c in clusters))
    if view == "lasso":
        event = st.plotly_chart(fig, key="map_chart", on_select="rerun", selection_mode=("points", "box", "lasso"))
        sel = _selected_rows(event, rows)
    else:
        left, right = st.columns([5, 1])
        with left:
            event = st.vega_lite_chart(frame, charts.scatter_map(colours, box=BOX, zoom=ZOOM,
                                                                 clusters=layer_v is not None),
                                       key="map_canvas", width="stretch", on_select="rerun", selection_mode=(BOX,))
        with right:
            st.html(_legend_html(legend_rows(root, proj.key, vv, COLOUR_BY[colour], min_votes, layer_v),
                                 legend_title))
        sel = _boxed_rows(event, df)
        if sel is not None and not sel:
            st.caption("No points in the box. Drag a box over some points; a double-click clears it.")
        elif sel and drawn < len(df):
            st.caption("Every point in the box, drawn or not: the drawing is a sample, the selection is not.")
    if sel:
        _selection(root, df, sel)


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


def _legend_html(rows: list[dict], title: str) -> str:
    """The picture's legend: a colour swatch, the group's name and its counts, one line each."""
    from html import escape

    items = "".join(
        f"<div style='display:flex;gap:6px;align-items:baseline;font-size:13px;line-height:1.5'>"
        f"<span style='flex:none;width:10px;height:10px;background:{r['colour']};display:inline-block'></span>"
        f"<span title='{escape(r['name'])}: {r['images']:,} images, {r['task_types']:,} task types'>"
        f"{escape(r['name'][:40])}<span style='color:#888'> {r['images']:,} · {r['task_types']:,}</span></span></div>"
        for r in rows)
    return (f"<div style='max-height:740px;overflow-y:auto'><div style='font-weight:600;font-size:13px'>"
            f"{escape(title)}</div><div style='color:#888;font-size:12px'>images · task types</div>{items}</div>")


def _selected_rows(event, rows: list[np.ndarray]) -> list[int]:
    try:
        pts = event["selection"]["points"]
    except (KeyError, TypeError):
        return []
    out = set()
    for p in pts:
        c, i = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        if c is not None and i is not None and 0 <= c < len(rows) and 0 <= i < len(rows[c]):
            out.add(int(rows[c][i]))
    return sorted(out)


def _boxed_rows(event, df: pd.DataFrame) -> list[int] | None:
    """Every point (rows of `points`, drawn or sampled out) inside the interactive view's box selection, which the
    browser reports as x and y ranges; None when there is no box."""
    try:
        box = event["selection"][BOX]
        (x0, x1), (y0, y1) = sorted(box["x"]), sorted(box["y"])
    except (KeyError, TypeError, ValueError):
        return None
    x, y = df["x"].to_numpy(), df["y"].to_numpy()
    return np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)).tolist()


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


def _default_projection(root: str):
    """(workspace, stored projection, data version) of the default view: the newest model's sets, UMAP; None when
    there is nothing stored to draw."""
    ws = data.open_workspace(root)
    sets = projection.embedding_sets(ws.store)
    if not sets:
        return None
    chosen = [s["key"] for s in sets if s["model"] == sets[0]["model"]][:2]
    proj = stored(root, tuple(sorted(chosen)), "umap",
                  data.version(root, "embedding_sets", "embedding_rows", "projections"))
    return None if proj is None else (ws, proj, data.version(root, "nodes", "matches", "images"))


def prewarm(root: str) -> None:
    """The default view, coloured by category: the picture of a large map, the interactive view's points."""
    found = _default_projection(root)
    if found is not None:
        ws, proj, v = found
        if len(points(root, proj.key, v)) > PICTURE_ABOVE:
            picture(root, proj.key, v, "category", ws.config.select.min_votes, None)
        canvas_points(root, proj.key, v, "category", ws.config.select.min_votes,
                      POINT_CHOICES[DEFAULT_POINTS], None)
        legend_rows(root, proj.key, v, "category", ws.config.select.min_votes, None)


def prewarm_late(root: str) -> None:
    """The lasso view's traces; the picture's other colourings of a large map, so switching 'Colour by' only swaps
    an image."""
    found = _default_projection(root)
    if found is None:
        return
    ws, proj, v = found
    scatter(root, proj.key, v, "category", ws.config.select.min_votes, POINT_CHOICES[DEFAULT_POINTS], None)
    if len(points(root, proj.key, v)) <= PICTURE_ABOVE:
        return
    for colour in ("outcome", "source"):
        vv = v + (data.version(root, *data.OUTCOME_TABLES) if colour == "outcome" else ())
        picture(root, proj.key, vv, colour, ws.config.select.min_votes, None)
