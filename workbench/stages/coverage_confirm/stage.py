"""LLM confirmation of (reference task, task type) pairs for reference coverage.

One call per pair through the stage seam (`LLMStage`: cached in `llm_calls` with the raw reply, priced,
dry-run, budget and failure-rate stops); the prompt is `prompts/coverage_confirm.j2` (or a file given).
The reply is JSON `{"match": true|false, "reason": "..."}`; a bare yes/no is accepted too.
`run_confirm` returns the RunReport and `{(reference_path, task_path): {"match", "reason", "raw"}}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from workbench.core.errors import ParseFailure
from workbench.core.workspace import Workspace
from workbench.llm.prompts import PromptTemplate
from workbench.stages.base import LLMStage, Outcome, RunReport, StageRun
from workbench.stages.replies import first_json
from workbench.taxonomy.names import SEP

STAGE = "coverage_confirm"
PROMPT = "coverage_confirm.j2"


@dataclass(frozen=True)
class ConfirmRow:
    reference_path: str
    task_path: str


def parse_answer(raw: str) -> dict:
    text = (raw or "").strip()
    obj = first_json(text)
    if obj is not None:
        if isinstance(obj, dict) and isinstance(obj.get("match"), bool):
            return {"match": obj["match"], "reason": str(obj.get("reason", ""))[:500]}
    word = re.match(r"\W*(yes|no)\b", text, re.I)
    if word:
        return {"match": word.group(1).lower() == "yes", "reason": text[:500]}
    raise ParseFailure('no {"match": true|false} and no leading yes/no in the reply')


class CoverageConfirmStage(LLMStage):
    name = STAGE
    expected_output_tokens = 40
    produces = "confirmed"

    def __init__(self, prompt: PromptTemplate, endpoint="default", params: dict | None = None):
        self.prompt = prompt
        self.endpoint = endpoint
        self.params = params if params is not None else {"temperature": 0.0, "max_tokens": 120}
        self.answers: dict[tuple[str, str], dict] = {}

    def context(self, row: ConfirmRow) -> dict:
        return {"reference": row.reference_path, "reference_task": row.reference_path.split(SEP)[-1],
                "task_path": row.task_path, "task_name": row.task_path.split(SEP)[-1], "sep": SEP}

    def parse(self, raw: str, row: ConfirmRow) -> dict:
        return parse_answer(raw)

    def record(self, ws: Workspace, oc: Outcome, run: StageRun) -> None:
        raw = oc.record.raw_text if oc.record else None
        if oc.error:
            run.add("unreadable")
            self.answers[(oc.row.reference_path, oc.row.task_path)] = {"match": None, "reason": oc.error, "raw": raw}
            return
        key = "confirmed" if oc.value["match"] else "rejected"
        run.add(key)
        self.answers[(oc.row.reference_path, oc.row.task_path)] = {**oc.value, "raw": raw}


def run_confirm(ws: Workspace, pairs: list[ConfirmRow], *, endpoint=None, prompt: str | Path | None = None,
                dry_run: bool = False, budget_usd: float | None = None,
                progress: bool | None = None) -> tuple[RunReport, dict]:
    tpl = PromptTemplate.load(prompt or PROMPT, workspace_root=ws.root)
    stage = CoverageConfirmStage(tpl, endpoint or "default")
    rows = list(dict.fromkeys(pairs))
    report = stage.run(ws, rows, dry_run=dry_run, budget_usd=budget_usd, progress=progress)
    return report, stage.answers
