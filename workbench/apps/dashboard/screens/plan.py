"""Plan: what a run over the current taxonomy and images (or N images) will cost and take, per stage and per
first-level category (workbench/analysis/plan.py; the same figures as `workbench plan`)."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from workbench.analysis.plan import _dur
from workbench.apps.dashboard import charts, data
from workbench.apps.dashboard.queries import plan as pq
from workbench.apps.dashboard.text import md
from workbench.core.workspace import Workspace

STAGES = ("expand", "embed", "match", "filter", "qa", "referee", "select", "export")


def _fmt(r: dict | None, money: bool = False) -> str:
    if r is None:
        return "unknown"
    f = "${:,.2f}" if money else "{:,.0f}"
    s = f.format(r["value"])
    return s if r["low"] == r["high"] else f"{s} ({f.format(r['low'])}..{f.format(r['high'])})"


def render(root: str, ws: Workspace) -> None:
    registered = int(data.table_version(root, "images")[0])
    c1, c2 = st.columns(2)
    images = c1.number_input("Images to plan for", min_value=0, value=registered, step=1000, key="plan_images",
                             help="Default: the registered images. More: the pilot's rates are scaled up.")
    through = c2.selectbox("Through stage", STAGES, index=len(STAGES) - 1, key="plan_through")
    p = pq.plan_dict(root, pq.plan_version(root), None if images == registered else int(images), through)
    if not p["task_types"]:
        data.empty_state("The taxonomy is empty", "nodes")
        return
    t = p["totals"]
    m = st.columns(4)
    m[0].metric("LLM calls", _fmt(t["calls"]).split(" (")[0])
    m[1].metric("cost (list)", "unknown" if t["cost_usd"] is None else f"${t['cost_usd']['value']:,.2f}")
    m[2].metric("cost (batch)", "unknown" if t["batch_cost_usd"] is None else f"${t['batch_cost_usd']['value']:,.2f}")
    m[3].metric("LLM wall time", _dur(t["wall_s"]["value"]))
    st.caption(f"{p['images']:,} image(s) ({p['images_registered']:,} registered), {p['task_types']:,} task types. "
               "Ranges are 90 % intervals of the measured rates; calls already answered are not counted; "
               "'unknown' = no price configured for that model. Batch: stages without a batch API at their live price.")

    st.subheader("Per stage")
    rows = []
    for s in p["stages"]:
        rows.append({"stage": s["stage"], "endpoint": s["endpoint"] or "", "model": s["model"] or "",
                     "to do": _fmt(s["calls"] if s["kind"] == "llm" else s["rows"]), "done": s["done"],
                     "input tokens": _fmt(s["prompt_tokens"]) if s["kind"] == "llm" else "",
                     "output tokens": _fmt(s["completion_tokens"]) if s["kind"] == "llm" else "",
                     "cost": _fmt(s["cost_usd"], True) if s["kind"] == "llm" else "",
                     "batch cost": (_fmt(s["batch_cost_usd"], True) if s["batch_cost_usd"] is not None else
                                    ("unknown" if s["cost_usd"] is None else "n/a")) if s["kind"] == "llm" else "",
                     "wall time": (_dur(s["wall_s"]["value"]) if s["wall_s"]["value"] else
                                   (f"CPU {_dur(s['cpu_s'])} / GPU {_dur(s['gpu_s'])}" if s["cpu_s"] is not None
                                    else "")),
                     "calls saved (adaptive)": _fmt(s["calls_saved"]) if s["calls_saved"] else "",
                     "note": s["skipped"] or "; ".join(s["notes"])})
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="plan_stages")

    st.subheader("Cost per first-level category")
    cats = pd.DataFrame(p["categories"])
    priced = cats[cats["cost_usd"].notna()] if not cats.empty else cats
    if cats.empty or priced.empty or not priced["cost_usd"].sum():
        st.info("No category has a known cost to show: either nothing is left to call, or the stages' prices "
                "are unknown (set price_input_per_mtok / price_output_per_mtok on the endpoint).", icon="ℹ️")
    else:
        top = priced.sort_values("cost_usd", ascending=False).head(60)
        spd = [("free" if x == "free" else "–" if x is None or (isinstance(x, float) and math.isnan(x))
                else f"{x:,.1f}") for x in top["samples_per_usd"]]
        bars = pd.DataFrame({"category": top["name"].to_numpy(), "cost_usd": top["cost_usd"].astype(float).to_numpy(),
                             "new samples": top["samples"].to_numpy(), "samples per $": spd})
        tips = [{"field": "category", "type": "nominal"},
                {"field": "cost_usd", "type": "quantitative", "format": "$,.2f", "title": "USD"},
                {"field": "new samples", "type": "quantitative", "format": ",.0f"},
                {"field": "samples per $", "type": "nominal"}]
        st.vega_lite_chart(bars, charts.vbars("category", "cost_usd", fmt="$,.2f", y_title="USD (list price)",
                                              height=380, tooltip=tips), width="stretch", key="plan_categories")
    if not cats.empty:
        st.dataframe(cats[["name", "task_types", "cost_usd", "batch_cost_usd", "samples", "samples_per_usd"]]
                     .astype({"samples_per_usd": str}), hide_index=True, key="plan_category_table")

    st.subheader("Rates and assumptions")
    st.dataframe(pd.DataFrame([{"rate": k, "value": r["value"], "low": r["low"], "high": r["high"],
                                "measured on": r["n"], "source": r["source"]} for k, r in p["rates"].items()]),
                 hide_index=True, key="plan_rates")
    for a in p["assumptions"]:
        st.markdown(f"- assumed: {md(a)}")


def prewarm(root: str) -> None:
    pq.plan_dict(root, pq.plan_version(root), None, "export")   # the page's default: the registered images, to export
