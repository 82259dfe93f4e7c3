"""Figures per version of a trial, from its stored outputs (so a reopened trial shows the same figures).

For every stage: items, ok, call failures, parse failures, not run, empties, tokens, cost, mean latency and cached
replies; then per stage: expand: names proposed, names repeating the parent, names duplicating an existing
sibling, overlap (Jaccard of the name sets, per item, mean) with each other version; filter: keep rate; Q&A:
pairs per image and empty answers; referees: pass rate and Cohen's κ with each other machine referee's stored
votes and with people's votes on the same samples; then each assertion's pass rate.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from workbench.analysis.agreement import cohen_kappa
from workbench.core.workspace import Workspace
from workbench.taxonomy.names import name_key


def _names(parsed: Any) -> set[str]:
    if not isinstance(parsed, dict):
        return set()
    return {name_key(p["name"]) for p in parsed.get("proposals", []) if p.get("name") and p["outcome"] != "dropped"}


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def _common(out: pd.DataFrame) -> dict:
    ok = out[out.status == "ok"]
    cost = out.cost_usd.dropna()
    return {"items": len(out), "ok": len(ok), "call failures": int((out.status == "call_failed").sum()),
            "parse failures": int((out.status == "parse_failed").sum()),
            "not run": int((out.status == "not_run").sum()),
            "empties": int(sum(s in ("(no names)", "(no pairs)", "keeps none", "") for s in ok.shown.fillna(""))),
            "prompt tokens": int(out.prompt_tokens.fillna(0).sum()),
            "completion tokens": int(out.completion_tokens.fillna(0).sum()),
            "cost usd": float(cost.sum()) if len(cost) == out.call_key.notna().sum() else None,
            "mean latency s": _round(_mean(list(out.latency_s.dropna()))),
            "cached": int(out.cached.fillna(0).sum())}


def _expand(out: pd.DataFrame, others: dict[str, pd.DataFrame]) -> dict:
    props = [p for v in out.parsed if isinstance(v, dict) for p in v.get("proposals", [])]
    named = [p for p in props if p.get("name")]
    fig = {"names proposed": sum(p["outcome"] != "dropped" for p in named),
           "names repeating the parent": sum(p.get("reason") == "repeats the parent's name" for p in named),
           "names duplicating a sibling": sum(p["outcome"] == "existing" for p in named)}
    mine = dict(zip(out.item, out.parsed.map(_names)))
    for label, o in others.items():
        theirs = dict(zip(o.item, o.parsed.map(_names)))
        j = [len(mine[i] & theirs[i]) / len(mine[i] | theirs[i]) for i in mine if i in theirs and mine[i] | theirs[i]]
        fig[f"overlap with {label}"] = _mean(j)
    return fig


def _referee(ws: Workspace, out: pd.DataFrame, referee: str) -> dict:
    votes = {(r[0], r[1]): r[2] for r in ws.store.query(
        "SELECT sample_id, referee, vote FROM votes WHERE valid=1 AND referee <> ?", (referee,))}
    mine = {i: v for i, v, s in zip(out.item, out.parsed, out.status) if s == "ok" and v in (0, 1)}
    fig: dict[str, Any] = {"pass rate": _mean([float(v) for v in mine.values()])}
    raters = sorted({r for _, r in votes})
    people = [r for r in raters if r.startswith("human:")]
    for who in [r for r in raters if not r.startswith("human:")] + (["people"] if people else []):
        pairs = [(v, votes[(i, r)]) for i, v in mine.items()
                 for r in (people if who == "people" else [who]) if (i, r) in votes]
        k = cohen_kappa([a for a, _ in pairs], [b for _, b in pairs]) if len(pairs) >= 2 else float("nan")
        fig[f"κ with {who}"] = None if k != k else round(k, 3)
        fig[f"n with {who}"] = len(pairs)
    return fig


def _stage_figures(ws: Workspace, stage: str, out: pd.DataFrame, others: dict[str, pd.DataFrame]) -> dict:
    ok = out[out.status == "ok"]
    if stage.startswith("expand"):
        return _expand(out, others)
    if stage == "filter":
        kept = sum(len(v.get("kept", [])) for v in ok.parsed)
        return {"labels kept": kept, "keep rate (images keeping any)": _mean([float(bool(v.get("kept")))
                                                                               for v in ok.parsed])}
    if stage == "qa":
        pairs = [p for v in ok.parsed for p in v.get("pairs", [])]
        return {"pairs per image": _mean([float(len(v.get("pairs", []))) for v in ok.parsed]),
                "empty answers": sum(not (p.get("answer") or "").strip() for p in pairs),
                "rejected pairs": sum(p.get("reason") is not None for p in pairs)}
    if stage.startswith("referee:"):
        return _referee(ws, out, stage.split(":", 1)[1])
    return {}


def figures(ws: Workspace, stage: str, outputs: pd.DataFrame, columns: dict[str, str],
            assertions: list[str]) -> pd.DataFrame:
    """One column per version (`columns`: hash -> column label), one row per figure."""
    by = {h: outputs[outputs.version == h] for h in columns}
    table = {}
    for h, label in columns.items():
        out = by[h]
        fig = _common(out)
        others = {columns[o]: by[o] for o in columns if o != h}
        fig.update(_stage_figures(ws, stage, out, others))
        for spec in assertions:
            passed = [c[spec] for c in out.checks if isinstance(c, dict) and c.get(spec) is not None]
            fig[f"assert {spec}"] = _mean([float(x) for x in passed])
        table[label] = pd.Series(fig, dtype=object)
    return pd.DataFrame(table)
