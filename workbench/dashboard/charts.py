"""Simple first-screen charts as Vega-Lite (Altair): bars, labelled bars, a labelled heatmap.

Streamlit draws Vega-Lite with code already in its page bundle, while a Plotly chart makes the browser load and run
4.7 MB of JavaScript first (measured in a new tab on a 2-core machine: a page with a 3-bar chart and a small table
renders in 1.35 s with Vega-Lite, 2.54 s with Plotly). Plotly stays where Vega-Lite has no equivalent: the tree
charts, the interactive embedding map, the Gaps page's trees.
"""

from __future__ import annotations

import altair as alt
import pandas as pd


def hbars(df: pd.DataFrame, label: str, value: str, *, fmt: str = ",", height: int = 320) -> alt.Chart:
    """Horizontal bars in the frame's row order, each with its value written at its end (a funnel, a ranking)."""
    base = alt.Chart(df).encode(y=alt.Y(f"{label}:N", sort=None, title=None, axis=alt.Axis(labelLimit=320)),
                                x=alt.X(f"{value}:Q", title=None),
                                tooltip=[alt.Tooltip(f"{label}:N"), alt.Tooltip(f"{value}:Q", format=fmt)])
    text = base.mark_text(align="left", dx=4).encode(text=alt.Text(f"{value}:Q", format=fmt))
    return (base.mark_bar() + text).properties(height=height)


def vbars(df: pd.DataFrame, x: str, y: str, *, fmt: str = ",", y_title: str | None = None, height: int = 320,
          y_domain: tuple[float, float] | None = None, tooltip: list | None = None) -> alt.Chart:
    """Vertical bars in the frame's row order with their values written on top."""
    scale = alt.Scale(domain=list(y_domain)) if y_domain else alt.Undefined
    base = alt.Chart(df).encode(x=alt.X(f"{x}:N", sort=None, title=None, axis=alt.Axis(labelAngle=-30)),
                                y=alt.Y(f"{y}:Q", title=y_title, axis=alt.Axis(format=fmt), scale=scale),
                                tooltip=tooltip or [alt.Tooltip(f"{x}:N"), alt.Tooltip(f"{y}:Q", format=fmt)])
    text = base.mark_text(baseline="bottom", dy=-3).encode(text=alt.Text(f"{y}:Q", format=fmt))
    return (base.mark_bar() + text).properties(height=height)


def heatmap(df: pd.DataFrame, x: str, y: str, value: str, *, domain: tuple[float, float], scheme: str,
            fmt: str = ".3f", height: int = 320) -> alt.Chart:
    """Cells coloured by `value` on a fixed domain, each labelled with its value (long-form frame: x, y, value)."""
    base = alt.Chart(df).encode(x=alt.X(f"{x}:N", sort=None, title=None), y=alt.Y(f"{y}:N", sort=None, title=None))
    cells = base.mark_rect().encode(
        color=alt.Color(f"{value}:Q", scale=alt.Scale(domain=list(domain), scheme=scheme), title=None),
        tooltip=[alt.Tooltip(f"{x}:N"), alt.Tooltip(f"{y}:N"), alt.Tooltip(f"{value}:Q", format=fmt)])
    strong = 0.5 * max(abs(domain[0]), abs(domain[1]))   # dark cells at either end of a diverging scheme
    text = base.mark_text().encode(text=alt.Text(f"{value}:Q", format=fmt),
                                   color=alt.condition(f"abs(datum['{value}']) > {strong}", alt.value("white"),
                                                       alt.value("black")))
    return (cells + text).properties(height=height)
