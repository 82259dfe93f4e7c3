"""The audit label stage: an LLM picks one of an audited item's top-k candidate task types, or none.

One call per item through the stage seam (cached in `llm_calls` with the raw reply, priced, dry-run, budget and
failure-rate stops); each choice is stored in `audit_labels` (component `audit` of `analysis/schema.py`).
Which items are asked and what their labels say about the embedding assignment is `analysis/audit_label.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from workbench.core.clock import utcnow
from workbench.core.workspace import Workspace
from workbench.llm.prompts import PromptTemplate
from workbench.stages.audit_label.parse import parse_choice
from workbench.stages.base import LLMStage, Outcome, StageRun
from workbench.taxonomy.names import SEP

STAGE = "audit_label"
PROMPT = "audit_label.j2"


@dataclass(frozen=True)
class LabelRow:
    audit: str
    item: int
    seed: int
    instruction: str
    candidates: tuple[str, ...]     # node ids, the embedding's best first
    paths: tuple[str, ...]



class AuditLabelStage(LLMStage):
    name = STAGE
    expected_output_tokens = 40
    produces = "labelled"

    def __init__(self, prompt: PromptTemplate, endpoint="default", params: dict | None = None):
        self.prompt = prompt
        self.endpoint = endpoint
        self.params = params if params is not None else {"temperature": 0.0, "max_tokens": 120}

    @property
    def lock_key(self) -> str | None:
        return None       # labels of different audits may be asked for at once; rows are keyed by item

    def context(self, row: LabelRow) -> dict:
        return {"instruction": row.instruction, "candidates": list(row.paths), "sep": SEP}

    def parse(self, raw: str, row: LabelRow) -> dict:
        return parse_choice(raw, len(row.candidates))

    def record(self, ws: Workspace, oc: Outcome, run: StageRun) -> None:
        row: LabelRow = oc.row
        if oc.error:
            status, label, reason = "unreadable", None, oc.error
        else:
            c = oc.value["choice"]
            status, label, reason = ("none", None, oc.value["reason"]) if c == 0 else \
                ("labelled", row.candidates[c - 1], oc.value["reason"])
        run.add(status)
        rec = oc.record
        ws.store.conn.execute(
            "INSERT OR REPLACE INTO audit_labels(audit, item, seed, instruction, candidates, label, status, reason, "
            "prompt_hash, model, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (row.audit, row.item, row.seed, row.instruction, json.dumps(list(row.candidates)), label, status,
             reason, oc.prompt.hash, rec.model if rec else None, utcnow()))
