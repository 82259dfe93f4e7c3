"""`workbench audit` as one library call: the text audit, then (where asked or possible) the image pass, the
comparison with another audit and the LLM label sample; and the report the command prints.

    run = run_audit(ws, dataset, name=..., compare_with="selected", label_sample=50)
    print("\\n".join(report_lines(ws, run)))          # or json.dumps(run.as_dict())

Progress goes to the caller's callbacks (`note` for one-line notes, `on_chunk` per finished chunk), so the
library prints nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workbench.analysis import audit_image, audit_label
from workbench.analysis.audit import (
    CHUNK_SIZE,
    CUE_WEIGHT,
    EXEMPLAR_WEIGHT,
    MIN_SCORE,
    OWN_WEIGHT,
    TASK_TEXT,
    TOP_K,
    AuditResult,
    audit,
    audit_items,
    compare,
    crosstab,
    store_summary,
    summarise,
)
from workbench.analysis.audit_embed import check_backend, default_backend, static_cached
from workbench.analysis.audit_quality import LEVELS, load_results, trust_lines
from workbench.analysis.audit_read import MAX_CHARS
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.stages.base import RunReport

Note = Callable[[str], None]
EXPORT_FORMATS = ("csv", "parquet", "jsonl")


@dataclass
class AuditRun:
    """What one `run_audit` did: the text audit (its summary holds the image figures under "image"), the
    comparison, and the label sample's run and agreement (None on a dry run)."""

    result: AuditResult
    min_score: float
    top_k: int
    compare_with: str | None = None
    comparison: pd.DataFrame | None = None        # audit.compare(): one row per live node
    labels_run: RunReport | None = None
    labels: dict | None = None                    # audit_label.label_agreement()

    def as_dict(self) -> dict:
        """The `--json` output."""
        res = self.result
        out = {"name": res.name, "items": res.items, "resumed_from": res.resumed_from,
               "reused_vectors": res.reused_vectors, "task_texts_embedded": res.task_texts_embedded,
               "text_backend": res.text_backend, "summary": res.summary, "quality": load_results()}
        if self.comparison is not None:
            cmp = self.comparison
            out["compare"] = cmp[cmp["level"] == 1][["path", "items_a", "items_b", "share_a", "share_b",
                                                      "diff"]].to_dict("records")
        if self.labels_run is not None:
            out["labels"] = {"run": self.labels_run.as_dict(), "agreement": self.labels}
        return out


def run_audit(ws: Workspace, dataset: Path, *, name: str | None = None, fmt: str | None = None,
              task_field: str | None = None, top_k: int = TOP_K, chunk_size: int = CHUNK_SIZE,
              min_score: float = MIN_SCORE, text_backend: str | None = None, images: bool | None = None,
              image_root: Path | None = None, replace: bool = False, compare_with: str | None = None,
              label_sample: int | None = None,
              seed: int = 0, endpoint: str | None = None, label_prompt: str | None = None, dry_run: bool = False,
              budget_usd: float | None = None, note: Note | None = None,
              on_chunk: Callable[[int, int], None] | None = None, label_progress: bool = False) -> AuditRun:
    """Audit `dataset` (`audit.audit`), then: its images with CLIP (images=None: when the CLIP weights are on
    this machine and some image file resolves; True: required, an error otherwise; False: never), a comparison
    with another audit (or `selected`), and an LLM label sample of `label_sample` items (dry_run: estimate)."""
    backend = check_backend(text_backend or default_backend())
    if note:
        note(f"text backend: {backend}" + ("" if text_backend else " (default; --text-backend to choose)"))
        if backend == "static" and not static_cached(ws, ws.config.text_embedding.model):
            note("distilling the static model from the sentence model once for this workspace (1-4 min on a CPU; "
                 "cached in arrays/audit/models/)")
    res = audit(ws, dataset, name=name, fmt=fmt, task_field=task_field, top_k=top_k, chunk_size=chunk_size,
                min_score=min_score, text_backend=backend, replace=replace, on_chunk=on_chunk)
    if images is not False and res.done >= res.items:
        image = assign_images(ws, res, images=images, image_root=image_root, top_k=top_k, note=note)
        if image is not None:     # the figures again: imaged items now carry the fused assignment
            res.summary.update(summarise(ws, res.name, min_score=min_score), image=image)
            store_summary(ws, res.name, res.summary)
    run = AuditRun(res, min_score, top_k, compare_with)
    if compare_with:
        run.comparison = compare(ws, res.name, compare_with, min_score)
    if label_sample:
        run.labels_run = audit_label.label_sample(ws, res.name, label_sample, seed=seed, endpoint=endpoint,
                                                  prompt=label_prompt, dry_run=dry_run, budget_usd=budget_usd,
                                                  progress=label_progress)
        run.labels = None if dry_run else audit_label.label_agreement(ws, res.name)
    return run


def assign_images(ws: Workspace, res: AuditResult, *, images: bool | None, image_root: Path | None, top_k: int,
                  note: Note | None = None) -> dict | None:
    """Assign the audited items' images with CLIP and store the figures; None when skipped (images=None and
    no image resolves or no local CLIP weights). images=True: each reason to skip is an error instead."""
    # The files first: CLIP (open_clip, torch) is only loaded when some image resolves.
    source, fmt = ws.store.query("SELECT source, format FROM audit_datasets WHERE name=?", (res.name,))[0]
    found = sum(p is not None for p in audit_image.image_paths(Path(source), fmt, image_root))
    why = audit_image.clip_ready(ws) if found or images else None
    if why and images:
        raise WorkbenchError(f"--images: {why}")
    if why:
        return None
    if not found:
        if images:
            raise WorkbenchError(f"--images: no item's image file resolves (relative to "
                                 f"{image_root or Path(source).parent}); give --image-root")
        return None
    if note:
        note(f"images: {found:,} of {res.items:,} item(s) have an image file; assigning with CLIP "
             f"({ws.config.clip.model})")
    image = audit_image.assign_images(ws, res.name, image_root=image_root, top_k=top_k)
    audit_image.store_summary(ws, res.name, image)
    return image


def report_lines(ws: Workspace, run: AuditRun) -> list[str]:
    """The summary `workbench audit` prints: coverage, categories, the long tail, the image agreement, the
    dataset's own task field against ours, the comparison and the label sample's agreement."""
    res, s, top_k = run.result, run.result.summary, run.top_k
    lines = [f"{res.name}: {res.items:,} item(s) ({res.resumed_from:,} from an earlier run), {s['assigned']:,} "
             f"assigned to {s['with_items']} of {s['task_types']} task types (top-1 score >= {run.min_score}), "
             f"{s['unassigned']:,} unassigned; {res.seconds:.1f}s; text backend {res.text_backend}"
             + (f"; taxonomy changed: stored text vectors of {res.reused_vectors:,} item(s) reused (nothing "
                f"re-embedded), {res.task_texts_embedded:,} new task-type text(s) embedded, every item re-assigned "
                "(a new task type may win any item)" if res.reused_vectors else "")
             + (f"; {s['truncated']:,} instruction(s) cut at {MAX_CHARS:,} characters" if s.get("truncated") else ""),
             "by category: " + ", ".join(f"{k} {v:,}" for k, v in
                                         sorted(s["by_category"].items(), key=lambda kv: -kv[1])),
             f"task types with none: {s['none']}" + (f" (e.g. {', '.join(s['none_paths'][:5])})"
                                                     if s["none"] else "")]
    if s["categories_without_items"]:
        lines.append("categories with none: " + ", ".join(s["categories_without_items"]))
    lines += ["most over-represented: " + "; ".join(f"{o['path']} {o['items']:,} ({o['x_uniform']:.1f}x uniform)"
                                                    for o in s["over_represented"][:5]),
              f"long tail: the top 1% of task types ({s['top1pct_task_types']}) hold {s['top1pct_share']:.0%} "
              f"of the assigned items; gini {s['long_tail']['gini']:.2f}"]
    lines += trust_lines({"text_backend": res.text_backend.split("-")[0], "task_text": TASK_TEXT,
                          "own_weight": OWN_WEIGHT, "exemplar_weight": EXEMPLAR_WEIGHT, "cue_weight": CUE_WEIGHT,
                          "own_task_field": bool(s.get("own_task_field"))})
    if s.get("confidence"):
        lines.append("confidence per item (top-1/top-2 margin, calibrated on the dev split): " + ", ".join(
            f"{k} {v:,}" for k, v in sorted(s["confidence"].items(), key=lambda kv: LEVELS.index(kv[0]))))
    lines.append(_assignment_line(s))
    im = s.get("image")
    if im and im.get("with_image"):
        lines.append(f"images: {im['with_image']:,} item(s) assigned by CLIP too; text and image top-1 agree on "
                     f"{im['top1_agree']:.0%} (same category {im['category_agree']:.0%}; image top-1 in the text "
                     f"top-{top_k} {im['image_top1_in_text_topk']:.0%})")
    lines += _crosstab_lines(ws, res.name, run.min_score) + _compare_lines(run) + _label_lines(run.labels, top_k)
    return lines


def _assignment_line(s: dict) -> str:
    """Which assignment the figures and items are: text only, or text and image fused (audit_image.fuse)."""
    if s.get("assignment") == "text+image":
        return (f"assignment: text and image fused for {s['fused_items']:,} item(s) with an image (the image "
                "overturns only a text top-1 below the high-confidence margin), text alone for the rest")
    if s.get("image_out_of_date"):
        return ("assignment: text only; the image pass was made against other task types (the taxonomy changed "
                "since): run with --images again to fuse them")
    return "assignment: text only (no image pass)"


def _crosstab_lines(ws: Workspace, name: str, min_score: float) -> list[str]:
    ct = crosstab(ws, name, min_score)
    if ct.empty:
        return []
    cells = ct.stack().sort_values(ascending=False)
    return ["own task field x our category (top cells):"] + [
        f"  {own!s:30} -> {ours}: {n:,}" for (own, ours), n in cells[cells > 0].head(10).items()]


def _compare_lines(run: AuditRun) -> list[str]:
    if run.comparison is None:
        return []
    top = run.comparison[run.comparison["level"] == 1].sort_values("diff", key=abs, ascending=False)
    return [f"compare with {run.compare_with} (share of assigned items, per category):"] + [
        f"  {r['path']:45} {r['share_a']:6.1%}  {r['share_b']:6.1%}  ({r['diff']:+.1%})"
        for _, r in top.head(12).iterrows()]


def _label_lines(labels: dict | None, top_k: int) -> list[str]:
    if not labels or not labels.get("answered"):
        return []
    pct = lambda v: "n/a" if v is None else f"{v:.0%}"
    lines = [f"LLM labels of {labels['answered']} sampled item(s) (all stored for this audit): embedding top-1 = "
             f"label on {pct(labels['top1'])} of the {labels['labelled']} labelled; label in the top-{top_k} on "
             f"{pct(labels['topk_hit'])} ({pct(labels['none_share'])} none of them)"]
    for cat, f in sorted(labels["by_category"].items(), key=lambda kv: -kv[1]["answered"])[:12]:
        lines.append(f"  {cat:45} {f['answered']:4} item(s): top-1 {pct(f['top1'])}, in top-{top_k} "
                     f"{pct(f['topk_hit'])}")
    return lines


def item_rows(ws: Workspace, name: str, min_score: float = MIN_SCORE, **filters) -> list[dict]:
    """`audit_items` as JSON-ready rows (topk as [[path, score], ...])."""
    return _rows(audit_items(ws, name, min_score=min_score, **filters))


def _rows(df: pd.DataFrame) -> list[dict]:
    rows = df.to_dict("records")
    for r in rows:
        r["topk"] = [[p, float(sc)] for p, sc in r["topk"]]
        r["assigned"] = bool(r["assigned"])
    return rows


def export_items(ws: Workspace, name: str, out: Path, fmt: str, *, min_score: float = MIN_SCORE,
                 **filters) -> tuple[Path, int]:
    """Write audit `name`'s items (one row each, `audit_items`' columns; topk as JSON text in csv) to `out`
    as csv, parquet or jsonl. Returns (the file, the rows written)."""
    import json

    if fmt not in EXPORT_FORMATS:
        raise WorkbenchError(f"--format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    df = audit_items(ws, name, min_score=min_score, **filters)
    out = Path(out)
    if not out.parent.is_dir():
        raise WorkbenchError(f"--out {out}: the folder {out.parent} does not exist")
    tmp = out.with_name(out.name + ".tmp")
    if fmt == "jsonl":
        with tmp.open("w", encoding="utf-8") as f:
            for r in _rows(df):
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    else:
        df = df.assign(topk=[json.dumps([[p, float(sc)] for p, sc in t], ensure_ascii=False) for t in df["topk"]])
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
    tmp.replace(out)
    return out, len(df)
