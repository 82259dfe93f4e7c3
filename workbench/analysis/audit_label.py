"""An LLM labels a random sample of an audited dataset: the check on the embedding assignment.

For N items drawn at random (seeded) from a finished audit, the model is shown the item's first
instruction and its top-k candidate task types (the embedding's, best first) plus "none", and picks one
(`prompts/audit_label.j2`, reply `{"choice": <number>, "reason": "..."}`; a bare number or "none" is
accepted). One call per item through the stage seam (`stages/audit_label/`: `AuditLabelStage`, an `LLMStage`, cached in
`llm_calls` with the raw reply, priced, dry-run, budget and failure-rate stops). Choices are stored in `audit_labels`.

`label_agreement` then says how often the embedding's top-1 equals the LLM's label (over the items the LLM
labelled), how often the label is among the top-k at all ("none" counts as a miss), overall and per
first-level category of the embedding's top-1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.analysis.audit import load_assignments
from workbench.analysis.audit_read import read_dataset
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm.prompts import PromptTemplate
from workbench.stages.audit_label.stage import PROMPT, AuditLabelStage, LabelRow
from workbench.stages.base import RunReport
from workbench.taxonomy.model import Taxonomy
from workbench.taxonomy.names import SEP


def sample_rows(ws: Workspace, name: str, n: int, seed: int = 0) -> list[LabelRow]:
    """N items of a finished audit, drawn without replacement with `seed`, with their top-k candidates."""
    meta = ws.store.query("SELECT source, format, task_field, status, items FROM audit_datasets WHERE name=?",
                          (name,))
    if not meta:
        raise WorkbenchError(f"no audit named {name!r}: run `workbench audit WORKSPACE DATASET --name {name}` first")
    source, fmt, task_field, status, items = meta[0]
    if status != "done":
        raise WorkbenchError(f"audit {name!r} is not finished ({status}); run `workbench audit` again to complete "
                             "it before labelling a sample")
    if n < 1:
        raise WorkbenchError("--label-sample must be at least 1")
    _, texts, _, _ = read_dataset(Path(source), fmt, task_field)
    if len(texts) != items:
        raise WorkbenchError(f"{source}: now {len(texts):,} items, the audit {name!r} had {items:,}; audit it again")
    leaves, cols, _, _ = load_assignments(ws, name)
    paths = Taxonomy.of(ws).index().paths
    picked = np.sort(np.random.default_rng(seed).choice(len(texts), size=min(n, len(texts)), replace=False))
    rows = []
    for i in picked.tolist():
        cand = tuple(str(leaves[c]) for c in cols[i])
        rows.append(LabelRow(name, i, seed, texts[i] or "(no instruction)", cand,
                             tuple(paths.get(c, f"(removed task type {c})") for c in cand)))
    return rows


def label_sample(ws: Workspace, name: str, n: int, *, seed: int = 0, endpoint=None, prompt: str | Path | None = None,
                 dry_run: bool = False, budget_usd: float | None = None,
                 progress: bool | None = None) -> RunReport:
    tpl = PromptTemplate.load(prompt or PROMPT, workspace_root=ws.root)
    stage = AuditLabelStage(tpl, endpoint or "default")
    return stage.run(ws, sample_rows(ws, name, n, seed), dry_run=dry_run, budget_usd=budget_usd, progress=progress)


def label_frame(ws: Workspace, name: str) -> pd.DataFrame:
    """The stored labels of an audit: item, label, status, top1 (the embedding's), hit (label in top-k)."""
    rows = ws.store.query("SELECT item, candidates, label, status, reason FROM audit_labels WHERE audit=? "
                          "ORDER BY item", (name,))
    df = pd.DataFrame([tuple(r) for r in rows], columns=["item", "candidates", "label", "status", "reason"])
    df["top1"] = [json.loads(c)[0] for c in df["candidates"]] if len(df) else []
    return df


def label_agreement(ws: Workspace, name: str) -> dict:
    """Agreement of the embedding's assignment with the LLM labels of a sample (unreadable replies left out):
    top1 (share of labelled items where the label is the embedding's top-1), topk_hit (share of answered
    items whose label is one of the top-k; "none" is a miss), none_share, and per first-level category of
    the embedding's top-1 the same figures."""
    df = label_frame(ws, name)
    df = df[df["status"] != "unreadable"]
    if df.empty:
        return {"answered": 0}
    paths = Taxonomy.of(ws).index().paths
    df = df.assign(category=[paths.get(t, "(removed)").split(SEP)[0] for t in df["top1"]],
                   agree=(df["label"] == df["top1"]), hit=df["status"] == "labelled")

    def figures(g: pd.DataFrame) -> dict:
        lab = g[g["hit"]]
        return {"answered": int(len(g)), "labelled": int(len(lab)),
                "top1": float(lab["agree"].mean()) if len(lab) else None,
                "top1_of_answered": float(g["agree"].mean()),
                "topk_hit": float(g["hit"].mean()), "none_share": float((~g["hit"]).mean())}

    out = figures(df)
    out["by_category"] = {c: figures(g) for c, g in df.groupby("category")}
    return out
