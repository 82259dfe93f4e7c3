"""How far an audit's assignment can be trusted: the figures `benchmarks/eval_audit.py` measured on the
project's labelled sets, and the per-item confidence calibrated there.

The evaluation writes `workbench/data/audit_eval.json` (its date, the settings evaluated, per split of the
labelled set its size and top-1 category accuracy, and the confidence cut-offs). Its splits: `dev` (tuned on),
`fresh` (the headline held-out: written before the tuning it measures) and `heldout` (an older held-out
split, looked at before: quoted for the record). Reports read it here and
never carry a number of their own; an audit made with other settings is told so.

Confidence of an item: the margin between its top-1 and top-2 fused scores. `high` / `medium` cut-offs are
the margins at which the dev split's top-1 category was right on at least `HIGH_PRECISION` /
`MEDIUM_PRECISION` of the items above them (computed by the evaluation); below `min_score` an item is `low`.
Without a results file every item is `unrated`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np

RESULTS_FILE = "audit_eval.json"
HIGH_PRECISION = 0.95
MEDIUM_PRECISION = 0.85
LEVELS = ("high", "medium", "low", "unrated")


@lru_cache(maxsize=1)
def load_results() -> dict | None:
    """The stored evaluation (None when the package has none)."""
    f = resources.files("workbench") / "data" / RESULTS_FILE
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def confidence_levels(margin: np.ndarray, top1: np.ndarray, min_score: float) -> np.ndarray:
    """Per item: high, medium or low (unrated without a stored calibration)."""
    res = load_results()
    cut = (res or {}).get("confidence")
    if not cut:
        return np.full(len(margin), "unrated", dtype=object)
    out = np.where(margin >= cut["high"], "high", np.where(margin >= cut["medium"], "medium", "low"))
    return np.where(np.asarray(top1) >= min_score, out, "low").astype(object)


def trust_lines(settings: dict) -> list[str]:
    """What the report says about the measured quality for `settings` (text_backend, own_weight, ...)."""
    res = load_results()
    if not res:
        return ["measured quality: none stored (run benchmarks/eval_audit.py)"]
    sp = res["splits"]
    head = sp.get("fresh") or sp["heldout"]        # the headline held-out: written before the tuning it measures
    line = (f"measured quality ({res['date']}, benchmarks/eval_audit.py, {res['labelled_set']}): top-1 in an "
            f"acceptable category on {sp['dev']['accuracy']:.0%} of the dev split ({sp['dev']['items']} items, "
            f"tuned on) and {head['accuracy']:.0%} of the held-out split ({head['items']} items, never tuned on)")
    if "fresh" in sp:
        line += (f"; {sp['heldout']['accuracy']:.0%} of an older held-out split ({sp['heldout']['items']} items, "
                 "looked at before)")
    conf = head.get("by_confidence") or {}
    if conf:
        line += "; held-out accuracy by confidence: " + ", ".join(
            f"{k} {v['accuracy']:.0%} ({v['items']})" for k, v in conf.items() if v["items"])
    if settings.get("own_task_field") and "accuracy_with_own_task_field" in sp["dev"]:
        line += (f"; with the dataset's own task field as evidence (as here): dev "
                 f"{sp['dev']['accuracy_with_own_task_field']:.0%}, held-out "
                 f"{head['accuracy_with_own_task_field']:.0%}")
    out = [line]
    measured = {k: v for k, v in res.get("settings", {}).items() if k != "own_task_field"}
    differ = [f"{k} {settings[k]} (measured: {measured.get(k)})" for k in sorted(settings)
              if k in measured and settings[k] != measured[k]]
    if differ:
        out.append("  these figures were measured with other settings: " + "; ".join(differ))
    return out
