"""Referees: several VLMs each vote 1/0 on every Q&A sample.

Referees are configured as `[[referees]]` (name, endpoint, prompt, answer_aware). The default
prompt asks, as the paper's did, whether the task type and question suit the image; the
answer-aware prompt also shows and judges the answer. One `votes` row per (sample, referee) with the
raw text; an ambiguous reply is stored as vote NULL, valid 0 (never as a 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.config import RefereeConfig
from workbench.errors import ConfigError, ParseFailure, WorkbenchError
from workbench.pipeline.base import Outcome, RunReport, StageRun
from workbench.pipeline.referee.parse import parse_vote
from workbench.pipeline.vision import ImageStage


@dataclass
class VoteRow:
    sample_id: str
    image_id: str
    task_type: str
    question: str
    answer: str


class RefereeStage(ImageStage):
    expected_output_tokens = 4

    def __init__(self, ws, referee: RefereeConfig, *, limit: int | None = None):
        self.referee = referee
        self.name = f"referee:{referee.name}"
        self.default_prompt = "referee_answer_aware.j2" if referee.answer_aware else "referee.j2"
        super().__init__(ws, referee, endpoint=referee.endpoint, limit=limit)

    def run_params(self) -> dict:
        return {"referee": self.referee.name}

    def rows(self, ws) -> list[VoteRow]:
        rows = vote_rows(ws, limit=self.limit)
        if not rows:
            raise WorkbenchError(no_samples_message(ws, "referee"))
        return rows

    def context(self, row: VoteRow) -> dict:
        return {"task_type": row.task_type, "question": row.question, "answer": row.answer}

    def parse(self, raw: str, row: VoteRow):
        vote = parse_vote(raw)
        if vote is None:
            raise ParseFailure(f"ambiguous vote {raw.strip()[:60]!r}")
        return vote

    def record(self, ws, oc: Outcome, run: StageRun) -> None:
        # An ambiguous reply is vote NULL / valid 0 with its raw text, never a 0.
        vote = oc.value if oc.error is None else None
        ws.store.conn.execute(
            "INSERT INTO votes(sample_id, referee, vote, valid, raw_text, call_key, prompt_hash, stage_run_id) "
            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(sample_id, referee) DO UPDATE SET vote=excluded.vote, "
            "valid=excluded.valid, raw_text=excluded.raw_text, call_key=excluded.call_key, "
            "prompt_hash=excluded.prompt_hash, stage_run_id=excluded.stage_run_id",
            (oc.row.sample_id, self.referee.name, vote, int(vote is not None), oc.record.raw_text, oc.key,
             oc.prompt.hash, run.id))
        run.add("votes_1" if vote == 1 else "votes_0" if vote == 0 else "ambiguous")


def no_samples_message(ws, stage: str) -> str:
    rejected = int(ws.store.scalar("SELECT count(*) FROM samples WHERE status='rejected'"))
    if rejected:
        return (f"{stage}: no usable Q&A samples: all {rejected} were rejected (see `workbench rejections "
                f"WORKSPACE --stage qa`); fix the Q&A prompt or endpoint and run `workbench qa --refresh-failed`")
    return f"{stage}: no Q&A samples yet; run `workbench qa` first"


def vote_rows(ws, *, limit: int | None = None) -> list[VoteRow]:
    idx = ws.taxonomy.index(None)
    rows = ws.store.query("SELECT id, image_id, node_id, question, answer FROM samples WHERE status='ok' "
                          "ORDER BY image_id, id")
    out = [VoteRow(r["id"], r["image_id"], idx.paths.get(r["node_id"], ""), r["question"], r["answer"])
           for r in rows]
    return out[:limit] if limit is not None else out


def referees(ws, names: list[str] | None = None) -> list[RefereeConfig]:
    refs = ws.config.referees
    if not refs:
        raise ConfigError(f"{ws.root / 'workbench.toml'}: no [[referees]] configured; add one per referee "
                          "(name, endpoint) and an [endpoints.NAME] for each")
    if names:
        known = {r.name: r for r in refs}
        missing = [n for n in names if n not in known]
        if missing:
            raise WorkbenchError(f"unknown referee(s) {missing}; configured: {sorted(known)}")
        refs = [known[n] for n in names]
    return refs


def run_referees(ws, *, names: list[str] | None = None, limit: int | None = None, **run_opts) -> list[RunReport]:
    """Every configured referee (or `names`) votes on every ok sample; one stage run per referee.
    run_opts: dry_run, budget_usd, progress, refresh_failed, on_result (see LLMStage.run)."""
    rows = vote_rows(ws, limit=limit)
    if not rows:
        raise WorkbenchError(no_samples_message(ws, "referee"))
    return [RefereeStage(ws, ref, limit=limit).run(ws, rows, **run_opts) for ref in referees(ws, names)]
