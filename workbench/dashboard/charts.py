"""Simple first-screen charts as Vega-Lite specs (plain dicts for `st.vega_lite_chart`): bars, a labelled heatmap.

Streamlit draws Vega-Lite with code already in its page bundle, while a Plotly chart makes the browser load and run
4.7 MB of JavaScript first (measured in a new tab on a 2-core machine: a page with a 3-bar chart and a small table
renders in 1.35 s with Vega-Lite, 2.54 s with Plotly). The specs are written as dicts rather than through Altair:
importing Altair costs 2 s on a cold server (its schema validation pulls in a grammar compiler). Plotly stays where
Vega-Lite has no equivalent: the tree charts, the interactive embedding map, the Gaps page's trees.
"""

from __future__ import annotations


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
