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
from workbench.stages.base import why_text

STAGES = ("expand", "embed", "match", "filter", "qa", "referee", "select", "export")


def _money(v: float) -> str:
    """Whole dollars from $100 up, cents below (never a cut-off figure)."""
    return f"${v:,.0f}" if abs(v) >= 100 else f"${v:,.2f}"


def _fmt(r: dict | None, money: bool = False) -> str:
    if r is None:
        return "unknown"
    f = _money if money else (lambda v: f"{v:,.0f}")
    s = f(r["value"])
    return s if f(r["low"]) == f(r["high"]) == s else f"{s} ({f(r['low'])}..{f(r['high'])})"


def _metrics(p: dict) -> None:
    t = p["totals"]
    top, bottom = st.columns(2), st.columns(2)
    calls = t["calls"]
    top[0].metric("LLM calls", f"{calls['value']:,.0f}", help=f"90 % range {_fmt(calls)}")
    top[1].metric("LLM wall time", _dur(t["wall_s"]["value"]), help="stages one after another")
    bottom[0].metric("cost (list)", "unknown" if t["cost_usd"] is None else _money(t["cost_usd"]["value"]),
                     help=None if t["cost_usd"] is None else f"90 % range {_fmt(t['cost_usd'], True)}")
    bottom[1].metric("cost (batch)", "unknown" if t["batch_cost_usd"] is None else
                     _money(t["batch_cost_usd"]["value"]), help="stages without a batch API at their live price")


def _stage_rows(p: dict) -> list[dict]:
    rows = []
    for s in p["stages"]:
        llm = s["kind"] == "llm"
        rows.append({"stage": s["stage"], "endpoint": s["endpoint"] or "", "model": s["model"] or "",
                     "to do": _fmt(s["calls"] if llm else s["rows"]),
                     "now (its --dry-run)": "" if s["ready"] is None else f"{s['ready']:,}",
                     "why": why_text(s["reasons"]), "done": f"{s['done']:,}",
                     "input tokens": _fmt(s["prompt_tokens"]) if llm else "",
                     "output tokens": _fmt(s["completion_tokens"]) if llm else "",
                     "cost": _fmt(s["cost_usd"], True) if llm else "",
                     "batch cost": (_fmt(s["batch_cost_usd"], True) if s["batch_cost_usd"] is not None else
                                    ("unknown" if s["cost_usd"] is None else "no batch API")) if llm else "",
                     "wall time": (_dur(s["wall_s"]["value"]) if s["wall_s"]["value"] else
                                   (f"CPU {_dur(s['cpu_s'])} / GPU {_dur(s['gpu_s'])}" if s["cpu_s"] is not None
                                    else "")),
                     "calls saved (adaptive)": _fmt(s["calls_saved"]) if s["calls_saved"] else "",
                     "note": s["skipped"] or "; ".join(s["notes"])})
    return rows


def _no_cost_message(p: dict, cats: pd.DataFrame) -> str:
    unpriced = [s["stage"] for s in p["stages"] if s["kind"] == "llm" and s["cost_usd"] is None
                and (s["calls"]["high"] or 0) > 0]
    if unpriced:
        return (f"The categories' costs are unknown: {', '.join(unpriced)} use a model with no price (set "
                "price_input_per_mtok / price_output_per_mtok on its endpoint, or [prices]).")
    return "Nothing is left to call for the filter, Q&A or referees: every category's cost is $0."


def _category_table(cats: pd.DataFrame) -> pd.DataFrame:
    def money(v):
        return "unknown" if v is None or (isinstance(v, float) and math.isnan(v)) else _money(float(v))

    def per_usd(v):
        return ("free" if v == "free" else "unknown" if v is None or (isinstance(v, float) and math.isnan(v))
                else f"{float(v):,.1f}")

    return pd.DataFrame({"category": cats["name"], "task types": cats["task_types"].astype(int),
                         "cost": [money(v) for v in cats["cost_usd"]],
                         "batch cost": [money(v) for v in cats["batch_cost_usd"]],
                         "new samples": cats["samples"].astype(float).round().astype(int),
                         "samples per $": [per_usd(v) for v in cats["samples_per_usd"]]})


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
    _metrics(p)
    st.caption(f"{p['images']:,} image(s) ({p['images_registered']:,} registered), {p['task_types']:,} task types. "
               "Ranges are 90 % intervals of the measured rates; calls already answered are not counted; "
               "'now' is what each stage's own --dry-run says for the rows there now.")
    if p.get("changes"):
        st.info("  \n".join(md(c) for c in p["changes"]), icon="ℹ️")
    for s in p["stages"]:
        for w in s["warnings"]:
            st.warning(md(f"{s['stage']}: {w}"))

    st.subheader("Per stage")
    # Figures with their 90 % range ("7,435 (5,948..9,002)") get room enough to show whole (no "7,435 (5,9…").
    px = {"to do": 110, "input tokens": 170, "output tokens": 170, "cost": 150, "batch cost": 150, "why": 200,
          "wall time": 120, "note": 400}
    st.dataframe(pd.DataFrame(_stage_rows(p)), hide_index=True, key="plan_stages",
                 column_config={c: st.column_config.TextColumn(c, width=w) for c, w in px.items()})

    st.subheader("Cost per first-level category")
    cats = pd.DataFrame(p["categories"])
    priced = cats[cats["cost_usd"].notna() & (cats["cost_usd"].astype(float) > 0)] if not cats.empty else cats
    if cats.empty or priced.empty:
        st.info(_no_cost_message(p, cats), icon="ℹ️")
    else:
        top = priced.sort_values("cost_usd", ascending=False).head(60)
        bars = pd.DataFrame({"category": top["name"].to_numpy(), "cost_usd": top["cost_usd"].astype(float).to_numpy()})
        # Horizontal bars, one row each: the value labels sit at the bars' ends and never overlap.
        st.vega_lite_chart(bars, charts.hbars("category", "cost_usd", fmt="$,.2f", height=max(120, 22 * len(bars))),
                           width="stretch", key="plan_categories")
    if not cats.empty:
        st.dataframe(_category_table(cats), hide_index=True, key="plan_category_table")

    st.subheader("Rates and assumptions")
    st.dataframe(pd.DataFrame([{"rate": k, "value": round(r["value"], 3), "low": round(r["low"], 3),
                                "high": round(r["high"], 3), "measured on": r["n"], "source": r["source"]}
                               for k, r in p["rates"].items()]), hide_index=True, key="plan_rates")
    for a in p["assumptions"]:
        st.markdown(f"- assumed: {md(a)}")
    _preflight(root, None if images == registered else int(images))


def _preflight(root: str, images: int | None) -> None:
    st.subheader("Pre-flight")
    st.caption("The checks before paying for a large run (`workbench preflight`): the taxonomy, endpoints, "
               "prices, referee families and the plan against [limits] budget_usd.")
    if st.button("Run the pre-flight checks", key="plan_preflight"):
        from workbench.apps.preflight import SHOWN, preflight  # lazy: doctor's probes only when asked for

        rep = preflight(Workspace.open(root), images=images)
        for f in rep.findings:
            body = f"**{f.check}**: {md(f.message)}"
            if f.nodes:
                body += "\n\n" + md("; ".join(f.nodes[:SHOWN])) + (f" (and {len(f.nodes) - SHOWN:,} more)"
                                                                       if len(f.nodes) > SHOWN else "")
            if f.ok:
                st.success(body)
            else:
                st.error(body + f"\n\nfix: {md(f.fix)}")
        n = len(rep.failed)
        (st.error if n else st.success)(f"{n} check(s) failed" if n else "every check passed: ready for the run")


def prewarm(root: str) -> None:
    pq.plan_dict(root, pq.plan_version(root), None, "export")   # the page's default: the registered images, to export
