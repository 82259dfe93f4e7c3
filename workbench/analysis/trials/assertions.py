"""Assertions a test set checks on every output of a trial, each with a pass rate per version.

Specs (strings, so they fit a CLI flag and a JSON column): `non-empty` (the reply parsed and says something),
`regex:PATTERN` (the raw reply matches, case-insensitive), `not-parent` (expansion: no proposed name repeats the
parent's), `max-chars:N` (the raw reply is at most N characters) and `rubric:TEXT` (an LLM grades the reply 1/0
against TEXT, through the stages' seam like any call: `RubricStage`, cached, priced, within the trial's budget). A
failed call or an unreadable reply fails every assertion; a rubric grade that could not be read is left out of
the pass rate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from workbench.core.errors import ParseFailure, WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm.prompts import PromptTemplate
from workbench.stages.base import LLMStage, Outcome
from workbench.stages.referee.parse import parse_vote
from workbench.taxonomy.names import name_key

KINDS = ("non-empty", "regex:", "not-parent", "max-chars:", "rubric:")
RUBRIC_PROMPT = """[system]
You grade one model reply against a rubric. Answer 1 if the reply satisfies the rubric and 0 if it does not, then
give one short sentence why.
[user]
Rubric: {{ rubric }}

Reply:
{{ reply }}
"""


def check_specs(specs: list[str]) -> None:
    """Refuse an unknown or malformed spec before anything is called."""
    for s in specs:
        if not any(s == k or (k.endswith(":") and s.startswith(k)) for k in KINDS):
            raise WorkbenchError(f"assertion {s!r}: use one of non-empty, regex:PATTERN, not-parent, max-chars:N, "
                                 "rubric:TEXT")
        if s.startswith("regex:"):
            try:
                re.compile(s[6:])
            except re.error as exc:
                raise WorkbenchError(f"assertion {s!r}: not a regular expression ({exc})") from None
        if s.startswith("rubric:") and not s[7:].strip():
            raise WorkbenchError(f"assertion {s!r}: say what a good reply does, e.g. rubric:names a concrete skill")
        if s.startswith("max-chars:") and not s[10:].isdigit():
            raise WorkbenchError(f"assertion {s!r}: give a whole number, e.g. max-chars:400")


def evaluate(specs: list[str], *, ok: bool, raw: str | None, value: Any, shown: str | None,
             parent: str | None = None) -> dict[str, int | None]:
    """spec -> 1 (passed) or 0, for one output (a rubric of a readable reply: None until `grade` fills it)."""
    out: dict[str, int | None] = {}
    for s in specs:
        if not ok:
            out[s] = 0
        elif s.startswith("rubric:"):
            out[s] = None
        elif s == "non-empty":
            out[s] = int(bool((shown or "").strip()) and shown not in ("(no names)", "(no pairs)", "keeps none"))
        elif s.startswith("regex:"):
            out[s] = int(re.search(s[6:], raw or "", re.IGNORECASE) is not None)
        elif s.startswith("max-chars:"):
            out[s] = int(len(raw or "") <= int(s[10:]))
        else:   # not-parent
            names = [p.name for p in getattr(value, "proposals", []) if p.name]
            out[s] = int(parent is None or all(name_key(n) != name_key(parent) for n in names))
    return out


@dataclass(frozen=True)
class RubricRow:
    rubric: str
    reply: str


class RubricStage(LLMStage):
    """An LLM grades replies 1/0 against a rubric (calls named `trial:rubric`; records nothing itself)."""

    name = "trial:rubric"
    expected_output_tokens = 40

    def __init__(self, endpoint="default"):
        self.prompt = PromptTemplate.from_text(RUBRIC_PROMPT, path="trial_rubric.j2")
        self.endpoint = endpoint
        self.params = {"temperature": 0.0, "max_tokens": 80}

    @property
    def lock_key(self) -> str | None:
        return None

    def context(self, row: RubricRow) -> dict:
        return {"rubric": row.rubric, "reply": row.reply}

    def parse(self, raw: str, row: RubricRow) -> int:
        vote = parse_vote(raw)
        if vote is None:
            raise ParseFailure(f"no 1/0 grade in {raw.strip()[:60]!r}")
        return vote


def grade(ws: Workspace, outputs: list[dict], specs: list[str], *, budget_usd: float | None,
          endpoint=None) -> float:
    """Fill each readable output's rubric checks (1/0; None when the grade could not be read). Returns the cost."""
    rubrics = [s for s in specs if s.startswith("rubric:")]
    asked = [(o, s, RubricRow(s[7:].strip(), o["raw"] or "")) for o in outputs for s in rubrics
             if o["checks"].get(s, 0) is None]
    if not asked or (budget_usd is not None and budget_usd <= 0):
        return 0.0
    by_row = {id(row): (o, s) for o, s, row in asked}

    def on(oc: Outcome) -> None:
        o, s = by_row[id(oc.row)]
        o["checks"][s] = oc.value if oc.ok else None

    report = RubricStage(endpoint or "default").run(ws, [row for *_, row in asked], on_result=on,
                                                    budget_usd=budget_usd, progress=False)
    return report.cost_usd or 0.0
