"""The embedding map's figure, built from its points (queries/map.py) and cached per data version: each point's colour
group and the groups' colours, the picture of every point drawn on the server (map_picture) laid under a Plotly
WebGL scatter of a fixed sample (hover names, zoom, lasso and box selection), the discovered clusters drawn over the
map, the legend, and the rows a lasso or box holds (`in_region`: every point, drawn in the sample or not)."""

from __future__ import annotations

import base64
import json
from html import escape

import colorcet as cc
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from workbench.apps.dashboard import data
from workbench.apps.dashboard import map_picture as mp
from workbench.apps.dashboard.queries import map as mq
from workbench.apps.dashboard.text import plotly_text

MAX_GROUPS = 48
# One fixed colour per group, shared by its image and task-type traces: colorcet's Glasbey palette for a white
# background (each colour chosen as far as possible from all before it; plotly's Dark24 + Light24 had near-identical
# pairs among 35 categories), greys left out so '(other)' stays the only grey.
PALETTE = [c for c in cc.palette["glasbey_dark"] if max(mp.hex_rgb(c)) - min(mp.hex_rgb(c)) > 30]
OTHER_COLOUR = "#b0b0b0"
OUTCOME_COLOURS = {"all passed": "#2ca02c", "some passed": "#ff9f1c", "none passed": "#d62728",
                   "not refereed": OTHER_COLOUR}
MODEBAR_MARGIN = 36   # px above the plot area: the modebar's own strip, clear of the legend
# Points drawn as markers over the picture (for hover names). The picture holds every point; markers cost the browser
# at every lasso: Plotly re-styles each drawn point as the lasso moves, which is seconds on a machine without a GPU
# (measured in headless Chromium, one lasso of 30 moves: 5,000 points in 96 traces 21 s, in 2 traces 10 s, 1,000
# points 6.6 s, no points 0.7 s). So a map above HOVER_ALL_UP_TO points draws none until the user asks; a smaller one
# draws all. A lasso or box selects every point in it either way (computed on the server, `in_region`).
NONE = -1
POINT_CHOICES = {"none": NONE, "5,000": 5_000, "20,000": 20_000, "50,000": 50_000, "all": 0}
DEFAULT_POINTS = "none"
HOVER_ALL_UP_TO = 2_000


def default_points(n: int) -> str:
    """The 'Points drawn' choice a map of n points opens with."""
    return "all" if n <= HOVER_ALL_UP_TO else DEFAULT_POINTS


def sample_mask(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Which of n points to draw: all (0), none (NONE), or a fixed random sample of max_points (the same on every
    rerun)."""
    keep = np.ones(n, bool)
    if max_points == NONE:
        return ~keep
    if max_points and n > max_points:
        keep[:] = False
        keep[np.random.default_rng(seed).choice(n, max_points, replace=False)] = True
    return keep


@st.cache_resource(show_spinner=False, max_entries=6)
def groups(root: str, key: str, v: tuple, colour: str, min_votes: int) -> tuple[np.ndarray, list[str], dict]:
    """Each point's colour group (the MAX_GROUPS largest, the rest '(other)'), the groups in legend order, and each
    group's colour: shared by the picture and the interactive scatter, so both read alike."""
    df = mq.points(root, key, data.version(root, *mq.POINT_TABLES))
    col = (mq.outcomes(root, key, data.version(root, *data.OUTCOME_TABLES), min_votes) if colour == "outcome"
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
    df = mq.points(root, key, data.version(root, *mq.POINT_TABLES))
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
                t["hovertext"] = [plotly_text(x) for x in df["label"].to_numpy()[idx]]
                t["hovertemplate"] = "%{hovertext}<extra>task type</extra>"
            else:
                t["hovertemplate"] = f"image · {plotly_text(str(name)[:40])}<extra></extra>"
            out.append(t)
            rows.append(idx)
    return out, rows


@st.cache_resource(show_spinner=False, max_entries=4)
def scatter(root: str, key: str, v: tuple, colour: str, min_votes: int, max_points: int, layer_v: tuple | None
            ) -> tuple[go.Figure, list[np.ndarray], list[dict]]:
    """The map's figure (built once: validating 80 traces of 20k points is ~0.2 s a rerun): the picture of every point
    under a scatter of `max_points` of them; each trace's point rows, and the discovered clusters drawn (`layer_v`
    set). Callers only read the figure."""
    specs, rows = traces(root, key, v, colour, min_votes, max_points)
    clusters = []
    if layer_v is not None:
        extra, extra_rows, clusters = cluster_layer(root, key, layer_v)
        specs, rows = specs + extra, rows + extra_rows
    fig = go.Figure()
    fig.add_traces([go.Scattergl(t) for t in specs])
    # Every point, drawn on the server, under the sample: the browser paints one image instead of 119k markers.
    df = mq.points(root, key, data.version(root, *mq.POINT_TABLES))
    left, right, bottom, top = mp.extent(df["x"].to_numpy(np.float32), df["y"].to_numpy(np.float32))
    png, _ = picture(root, key, v, colour, min_votes, layer_v)
    fig.add_layout_image(source="data:image/png;base64," + base64.b64encode(png).decode(), xref="x", yref="y",
                         x=left, y=top, sizex=right - left, sizey=top - bottom, sizing="stretch", layer="below")
    # No Plotly legend: it stopped at the plot's height (~23 of 35 categories); the page draws the HTML legend of
    # every group beside it. The top margin holds the modebar. Fixed ranges: the picture's edges (a double-click
    # returns to them).
    axis = {"showticklabels": False, "showgrid": False, "zeroline": False}
    fig.update_layout(height=640, margin={"l": 0, "r": 0, "t": MODEBAR_MARGIN, "b": 0}, dragmode="lasso",
                      showlegend=False, plot_bgcolor="white", xaxis={**axis, "range": [left, right]},
                      yaxis={**axis, "range": [bottom, top]})
    return fig, rows, clusters


def in_region(x: np.ndarray, y: np.ndarray, selection: dict) -> np.ndarray | None:
    """Which points lie in the selection's boxes or lassos (Plotly's selection as Streamlit reports it: `box`
    [{x: [x0, x1], y: [y0, y1]}], `lasso` [{x: [...], y: [...]}], data units); None when it holds no region (a click
    on a point). Every point counts, not only the drawn sample."""
    boxes, lassos = selection.get("box") or [], selection.get("lasso") or []
    if not boxes and not lassos:
        return None
    inside = np.zeros(len(x), bool)
    for b in boxes:
        (x0, x1), (y0, y1) = sorted(b["x"][:2]), sorted(b["y"][:2])
        inside |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    for poly in lassos:
        px, py = np.asarray(poly["x"], float), np.asarray(poly["y"], float)
        near = np.flatnonzero((x >= px.min()) & (x <= px.max()) & (y >= py.min()) & (y <= py.max()))
        qx, qy, odd = x[near], y[near], np.zeros(len(near), bool)
        # Even-odd rule: a point is inside when a ray to its right crosses the polygon's edges an odd number of times.
        for xa, ya, xb, yb in zip(px, py, np.roll(px, 1), np.roll(py, 1)):
            if ya == yb:
                continue
            crosses = (ya > qy) != (yb > qy)
            odd ^= crosses & (qx < xa + (qy - ya) * (xb - xa) / (yb - ya))
        inside[near[odd]] = True
    return inside


@st.cache_resource(show_spinner=False, max_entries=6)
def picture(root: str, key: str, v: tuple, colour: str, min_votes: int, layer_v: tuple | None
            ) -> tuple[bytes, list[dict]]:
    """The whole map as a PNG (map_picture) and its legend rows [{name, colour, images, task_types}]; with the
    discovered-clusters layer (`layer_v` set) the map is faded and each cluster drawn over it as rings, its
    exemplars as filled marks, and the legend lists the clusters."""
    df = mq.points(root, key, data.version(root, *mq.POINT_TABLES))
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
    df = mq.points(root, key, data.version(root, *mq.POINT_TABLES))
    grp, names, colour_of = groups(root, key, v, colour, min_votes)
    is_task = (df["kind"] == "task").to_numpy()
    return [{"name": n, "colour": colour_of[n], "images": int(((grp == n) & ~is_task).sum()),
             "task_types": int(((grp == n) & is_task).sum())} for n in names]


@st.cache_resource(show_spinner=False, max_entries=4)
def cluster_layer(root: str, key: str, v: tuple) -> tuple[list[dict], list[np.ndarray], list[dict]]:
    """The discovered clusters (`workbench discover`) drawn over the map: per cluster its images as open rings and
    its exemplars (the images the VLM named it from) as stars, one legend entry per cluster. Returns (traces,
    point rows per trace, clusters [{id, name, status, size, drawn}]). The latest discovery per cluster."""
    df = mq.points(root, key, data.version(root, *mq.POINT_TABLES))
    row_of = pd.Series(np.arange(len(df)), index=df["item_id"].where(df["kind"] == "image"))
    row_of = row_of[row_of.index.notna() & ~row_of.index.duplicated()]
    found = mq.discovered_clusters(data.open_workspace(root))
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
                        "hovertemplate": f"{'exemplar of ' if exemplar else ''}{plotly_text(name)}"
                                         f"<extra>{r['status']}</extra>"})
            rows.append(idx)
    for t in out:
        if t["legendgrouptitle"] is None:
            del t["legendgrouptitle"]
    return out, rows, clusters


def legend_html(rows: list[dict], title: str) -> str:
    """The picture's and the interactive view's legend: a colour swatch, the group's name and its counts, one line
    each."""
    items = "".join(
        f"<div style='display:flex;gap:6px;align-items:baseline;font-size:13px;line-height:1.5'>"
        f"<span style='flex:none;width:10px;height:10px;background:{r['colour']};display:inline-block'></span>"
        f"<span title='{escape(r['name'])}: {r['images']:,} images, {r['task_types']:,} task types'>"
        f"{escape(r['name'][:40])}<span style='color:#888'> {r['images']:,} · {r['task_types']:,}</span></span></div>"
        for r in rows)
    return (f"<div style='max-height:740px;overflow-y:auto'><div style='font-weight:600;font-size:13px'>"
            f"{escape(title)}</div><div style='color:#888;font-size:12px'>images · task types</div>{items}</div>")
