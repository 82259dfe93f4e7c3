"""Why a plan's total moved since the last one: the edits (task types, images, workbench.toml, calls on the
rows there now) and the measured rates (per-call tokens and latency, keep rate, pass rates...) that changed.

`explain(ws, plan, remember=True)` compares the plan with the last one made for the same `--images` and
`--through` (kept in the `meta` table under `plan:last:<images>:<through>`), writes the lines into
`plan.changes` and, with `remember`, stores this one. When the total moved and nothing was edited, the lines
name the rates that moved it, with their old and new values.
"""

from __future__ import annotations

import hashlib
import json

from workbench.analysis.plan import Plan
from workbench.core.clock import utcnow
from workbench.core.workspace import Workspace

MOVED = 0.005          # a total or a rate moved when it changed by more than 0.5 %


def snapshot(ws: Workspace, plan: Plan) -> dict:
    cost = plan.total("cost_usd")
    try:
        config = hashlib.sha256((ws.root / "workbench.toml").read_bytes()).hexdigest()[:16]
    except OSError:
        config = ""
    rates = {k: r.value for k, r in plan.rates.items()}
    for s in plan.stages:
        for what in ("prompt_tokens", "completion_tokens", "latency_s"):
            text = str(s.per_call.get(what, "")).split(" ")[0].replace(",", "")
            try:
                rates[f"{s.stage} {what.replace('_', ' ')} per call"] = float(text)
            except ValueError:
                continue
    return {"at": utcnow(), "task_types": plan.task_types, "images": plan.images_registered, "config": config,
            "ready": {s.stage: s.ready for s in plan.stages if s.ready is not None},
            "calls": plan.total("calls").value, "cost_usd": None if cost is None else cost.value, "rates": rates}


def _moved(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a != b
    return abs(a - b) > MOVED * max(abs(a), abs(b), 1e-12)


def compare(prev: dict, cur: dict) -> list[str]:
    """The lines that say what moved the plan since `prev` (none when its totals did not move)."""
    if not (_moved(prev.get("cost_usd"), cur["cost_usd"]) or _moved(prev.get("calls"), cur["calls"])):
        return []
    edits = []
    for what, label in (("task_types", "task types"), ("images", "registered images")):
        if prev.get(what) != cur[what]:
            edits.append(f"{label} {prev.get(what)} -> {cur[what]}")
    if prev.get("config") != cur["config"]:
        edits.append("workbench.toml changed")
    for stage, n in cur["ready"].items():
        if prev.get("ready", {}).get(stage) != n:
            edits.append(f"{stage} calls on the rows there now {prev.get('ready', {}).get(stage)} -> {n}")
    rates = [f"{k} {_fmt(prev['rates'][k])} -> {_fmt(v)}" for k, v in cur["rates"].items()
             if k in prev.get("rates", {}) and _moved(prev["rates"][k], v)]

    def total(d):
        return "unknown" if d.get("cost_usd") is None else f"${d['cost_usd']:,.2f}"

    head = (f"since the last plan ({prev.get('at', '?')}): calls {prev.get('calls', 0):,.0f} -> {cur['calls']:,.0f}, "
            f"cost {total(prev)} -> {total(cur)}")
    out = [head + (f"; edits: {'; '.join(edits)}" if edits else "; no edit (same task types, images, settings and "
                   "rows)")]
    if rates:
        out.append("measured rates that moved: " + "; ".join(rates))
    elif not edits:
        out.append("no measured rate moved by more than 0.5 %")
    return out


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def explain(ws: Workspace, plan: Plan, *, images: int | None, remember: bool = False) -> list[str]:
    key = f"plan:last:{'' if images is None else images}:{plan.through}"
    cur = snapshot(ws, plan)
    row = ws.store.scalar("SELECT value FROM meta WHERE key=?", (key,))
    try:
        plan.changes = compare(json.loads(row), cur) if row else []
    except (ValueError, KeyError, TypeError):    # an older or damaged record: nothing to compare with
        plan.changes = []
    if remember:
        with ws.store.write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(cur)))
    return plan.changes
