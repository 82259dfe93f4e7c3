"""Dashboard charts as Vega-Lite specs (plain dicts for `st.vega_lite_chart`): bars, a labelled heatmap, the images
histogram, and the coverage tree as icicle, sunburst or treemap (laid out by `analysis.coverage`).

Streamlit draws Vega-Lite with code already in its page bundle, while a Plotly chart makes the browser load and run
4.7 MB of JavaScript first (measured in a new tab on a 2-core machine: a page with a 3-bar chart and a small table
renders in 1.35 s with Vega-Lite, 2.54 s with Plotly). The specs are written as dicts rather than through Altair:
importing Altair costs 2 s on a cold server (its schema validation pulls in a grammar compiler). Plotly stays for
the embedding map (WebGL, lasso selection; map_figures.py) and the Gaps page's trees.
"""

from __future__ import annotations

import math


def _tip(field: str, kind: str = "nominal", fmt: str | None = None, title: str | None = None) -> dict:
    t = {"field": field, "type": kind}
    if fmt:
        t["format"] = fmt
    if title:
        t["title"] = title
    return t


def hbars(label: str, value: str, *, fmt: str = ",", height: int = 320) -> dict:
    """Horizontal bars in the data's row order, each with its value written at its end (a funnel, a ranking)."""
    return {"height": height,
            "encoding": {"y": {"field": label, "type": "nominal", "sort": None, "title": None,
                               "axis": {"labelLimit": 320}},
                         "x": {"field": value, "type": "quantitative", "title": None},
                         "tooltip": [_tip(label), _tip(value, "quantitative", fmt)]},
            "layer": [{"mark": {"type": "bar"}},
                      {"mark": {"type": "text", "align": "left", "dx": 4},
                       "encoding": {"text": _tip(value, "quantitative", fmt)}}]}


def vbars(x: str, y: str, *, fmt: str = ",", y_title: str | None = None, height: int = 320,
          y_domain: tuple[float, float] | None = None, tooltip: list[dict] | None = None) -> dict:
    """Vertical bars in the data's row order with their values written on top."""
    y_enc = {"field": y, "type": "quantitative", "title": y_title, "axis": {"format": fmt}}
    if y_domain:
        y_enc["scale"] = {"domain": list(y_domain)}
    return {"height": height,
            "encoding": {"x": {"field": x, "type": "nominal", "sort": None, "title": None,
                               "axis": {"labelAngle": -30}},
                         "y": y_enc, "tooltip": tooltip or [_tip(x), _tip(y, "quantitative", fmt)]},
            "layer": [{"mark": {"type": "bar"}},
                      {"mark": {"type": "text", "baseline": "bottom", "dy": -3},
                       "encoding": {"text": _tip(y, "quantitative", fmt)}}]}


def heatmap(x: str, y: str, value: str, *, domain: tuple[float, float], scheme: str, fmt: str = ".3f",
            height: int = 320) -> dict:
    """Cells coloured by `value` on a fixed domain, each labelled with its value (long-form data: x, y, value);
    labels turn white on the dark cells at either end of a diverging scheme."""
    strong = 0.5 * max(abs(domain[0]), abs(domain[1]))
    return {"height": height,
            "encoding": {"x": {"field": x, "type": "nominal", "sort": None, "title": None},
                         "y": {"field": y, "type": "nominal", "sort": None, "title": None}},
            "layer": [{"mark": {"type": "rect"},
                       "encoding": {"color": {"field": value, "type": "quantitative", "title": None,
                                              "scale": {"domain": list(domain), "scheme": scheme}},
                                    "tooltip": [_tip(x), _tip(y), _tip(value, "quantitative", fmt)]}},
                      {"mark": {"type": "text"},
                       "encoding": {"text": _tip(value, "quantitative", fmt),
                                    "color": {"condition": {"test": f"abs(datum['{value}']) > {strong}",
                                                            "value": "white"}, "value": "black"}}}]}


def histogram(order: list[str], x_title: str, *, pick: str, stacked: bool, palette: list[str],
              height: int = 420) -> dict:
    """Task types per bin (data: bin, task_types[, category]), the bins as names in `order` (labels such as "0"
    and "1–10" are not numbers); stacked by category in `palette`, else each bar labelled with its count. Clicking
    a bar selects its bin: the point selection `pick`."""
    x = {"field": "bin", "type": "nominal", "sort": order, "title": x_title, "axis": {"labelAngle": 0}}
    y = {"field": "task_types", "type": "quantitative", "title": "task types"}
    param = {"name": pick, "select": {"type": "point", "fields": ["bin"]}}
    if stacked:
        return {"height": height, "params": [param], "mark": {"type": "bar"},
                "encoding": {"x": x, "y": y,
                             "color": {"field": "category", "type": "nominal", "scale": {"range": palette},
                                       "legend": {"columns": 2, "title": None}},
                             "tooltip": [_tip("bin"), _tip("category"), _tip("task_types", "quantitative", ",")]}}
    return {"height": height, "encoding": {"x": x, "y": y},
            "layer": [{"params": [param], "mark": {"type": "bar"},
                       "encoding": {"opacity": {"condition": {"param": pick, "value": 1.0}, "value": 0.45},
                                    "tooltip": [_tip("bin"), _tip("task_types", "quantitative", ",")]}},
                      {"mark": {"type": "text", "baseline": "bottom", "dy": -3},
                       "encoding": {"text": _tip("task_types", "quantitative", ",")}}]}


def _tree_parts(pick: str, colour_title: str) -> tuple[dict, list, dict, dict]:
    """What the three tree charts share: the click selection, the tooltip, the fill and the label colour (data:
    id, label, path, task_types, images, samples, colour in 0..1, edge = the white outline's width)."""
    select = {"name": pick, "select": {"type": "point", "fields": ["id"]}}
    tooltip = [_tip("path", title="node"), _tip("task_types", "quantitative", ",", "task types"),
               _tip("images", "quantitative", ","), _tip("samples", "quantitative", ","),
               _tip("colour", "quantitative", ".0%", colour_title)]
    fill = {"field": "colour", "type": "quantitative", "title": colour_title,
            "scale": {"domain": [0, 1], "scheme": "redyellowgreen"}, "legend": {"format": ".0%"}}
    ink = {"condition": {"test": "datum.colour < 0.15 || datum.colour > 0.85", "value": "white"},  # on dark ends
           "value": "black"}
    return select, tooltip, fill, ink


def _edge() -> dict:
    return {"field": "edge", "type": "quantitative", "scale": None, "legend": None}


def icicle(levels: int, *, pick: str, colour_title: str, height: int = 620) -> dict:
    """A left-to-right icicle of a partitioned tree (`coverage.partition`; data as `_tree_parts` plus depth,
    depth_end, y0, y1, y_mid): a column per level, each node a band as tall as its share of its parent. Labels are
    cut to the column's width (the `width` signal) by Vega itself. Clicking a band or its label selects its node:
    the point selection `pick`."""
    select, tooltip, fill, ink = _tree_parts(pick, colour_title)
    y = {"type": "quantitative", "scale": {"domain": [0, 1], "reverse": True}, "axis": None}
    x = {"type": "quantitative", "scale": {"domain": [0, levels]}, "axis": None}
    return {"height": height,
            "layer": [{"params": [select], "mark": {"type": "rect", "stroke": "white", "cursor": "pointer"},
                       "encoding": {"x": {"field": "depth", **x}, "x2": {"field": "depth_end"},
                                    "y": {"field": "y0", **y}, "y2": {"field": "y1"},
                                    "color": fill, "strokeWidth": _edge(), "tooltip": tooltip}},
                      {"mark": {"type": "text", "align": "left", "baseline": "middle", "dx": 4, "cursor": "pointer",
                                "limit": {"expr": f"width / {levels} - 8"}},
                       "encoding": {"x": {"field": "depth", **x}, "y": {"field": "y_mid", **y},
                                    "text": {"field": "label"}, "color": ink, "tooltip": tooltip}}]}


def sunburst(levels: int, *, pick: str, colour_title: str, height: int = 620) -> dict:
    """The same partition as rings: the top in the middle, a ring per level, each node an arc as wide as its share
    of its parent; the radius fills the view (Vega-Lite's default radius range). Data: `icicle`'s plus each label's
    rotation `angle`, radius `label_r` (in levels) and `side`: labels run along the radius and end at their ring's
    outer edge, where there is most room ("right" on the right half, "left" on the left, upright both); a whole
    disc's is "center"ed. Labels are cut to the ring's thickness."""
    select, tooltip, fill, ink = _tree_parts(pick, colour_title)
    theta = {"type": "quantitative", "scale": {"domain": [0, 1], "range": [0, 2 * math.pi]}}
    radius = {"type": "quantitative", "scale": {"type": "linear", "domain": [0, levels], "zero": True}}
    return {"height": height, "view": {"stroke": None},
            "layer": [{"params": [select], "mark": {"type": "arc", "stroke": "white", "cursor": "pointer"},
                       "encoding": {"theta": {"field": "y0", **theta}, "theta2": {"field": "y1"},
                                    "radius": {"field": "depth", **radius}, "radius2": {"field": "depth_end"},
                                    "color": fill, "strokeWidth": _edge(), "tooltip": tooltip}},
                      *({"transform": [{"filter": f"datum.side == '{side}'"}],
                        "mark": {"type": "text", "cursor": "pointer", "fontSize": 10, "align": side, "dx": dx,
                                 "limit": {"expr": f"min(width, height) / 2 / {levels} - 6"}},
                        "encoding": {"theta": {"field": "y_mid", **theta}, "radius": {"field": "label_r", **radius},
                                     "angle": {"field": "angle", "type": "quantitative", "scale": None},
                                     "text": {"field": "label"}, "color": ink, "tooltip": tooltip}}
                        for side, dx in (("right", -3), ("left", 3), ("center", 0)))]}


def treemap(width: float, height: float, *, pick: str, colour_title: str) -> dict:
    """Nested rectangles (`coverage.treemap`; data as `_tree_parts` plus x0, x1, y0, y1 in a width x height
    canvas, and chars: how many characters of its name fit the rectangle at that canvas width); the chart
    stretches to its container and each label is cut to its rectangle's width at the drawn size."""
    select, tooltip, fill, ink = _tree_parts(pick, colour_title)
    x = {"type": "quantitative", "scale": {"domain": [0, width]}, "axis": None}
    y = {"type": "quantitative", "scale": {"domain": [0, height], "reverse": True}, "axis": None}
    return {"height": height,
            "layer": [{"params": [select], "mark": {"type": "rect", "stroke": "white", "cursor": "pointer"},
                       "encoding": {"x": {"field": "x0", **x}, "x2": {"field": "x1"},
                                    "y": {"field": "y0", **y}, "y2": {"field": "y1"},
                                    "color": fill, "strokeWidth": _edge(), "tooltip": tooltip}},
                      {"transform": [{"calculate": f"truncate(datum.label, floor(datum.chars * width / {width}))",
                                      "as": "shown"}],
                       "mark": {"type": "text", "align": "left", "baseline": "top", "dx": 3, "dy": 2,
                                "cursor": "pointer"},
                       "encoding": {"x": {"field": "x0", **x}, "y": {"field": "y0", **y},
                                    "text": {"field": "shown"}, "color": ink, "tooltip": tooltip}}]}
