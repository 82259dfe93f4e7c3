"""Referees: several VLMs each vote 1/0 on every Q&A sample.

Referees are configured as `[[referees]]` (name, endpoint, prompt, answer_aware). The default
prompt asks, as the paper's did, whether the task type and question suit the image; the
answer-aware prompt also shows and judges the answer. One `votes` row per (sample, referee) with the
raw text; an ambiguous reply is stored as vote NULL, valid 0 (never as a 0).

Adaptive voting (`run_referees(adaptive=True)`, the default of `workbench referee`): with k-of-N selection
(k = `[select] min_votes`) the referees are asked in their configured order, each only about the samples whose
outcome the votes so far leave open: a sample is decided once it has k positive votes, or when even positive
votes from every referee not yet heard could not reach k (an ambiguous vote counts as not positive, as in
selection). So 2-of-3 asks the third referee only where the first two disagree, and selection on these votes
equals selection on full votes. A fixed `[referee] audit_fraction` of samples (by a hash of the sample id) is
always asked of every referee, so agreement figures stay measurable on an unbiased sample.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from workbench.core.config import RefereeConfig
from workbench.core.errors import ConfigError, ParseFailure, WorkbenchError
from workbench.core.workspace import Workspace
from workbench.stages.base import Outcome, RunReport, StageRun
from workbench.stages.referee.parse import parse_vote
from workbench.stages.vision import ImageStage
from workbench.taxonomy.model import Taxonomy, task_type_counts


@dataclass
class VoteRow:
    sample_id: str
    image_id: str
    task_type: str
    question: str
    answer: str


class RefereeStage(ImageStage):
    expected_output_tokens = 4

    def __init__(self, ws: Workspace, referee: RefereeConfig, *, limit: int | None = None,
                 adaptive: dict | None = None):
        """adaptive: recorded in the run's params (min_votes, referees, audit_fraction, asked, decided)."""
        self.referee = referee
        self.name = f"referee:{referee.name}"
        self.default_prompt = "referee_answer_aware.j2" if referee.answer_aware else "referee.j2"
        self.adaptive = adaptive
        super().__init__(ws, referee, endpoint=referee.endpoint, limit=limit)

    def run_params(self) -> dict:
        extra = {"adaptive": True, **self.adaptive} if self.adaptive else {"adaptive": False}
        return {"referee": self.referee.name, **extra}

    def rows(self, ws: Workspace) -> list[VoteRow]:
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

    def previous_key(self, ws: Workspace, row: VoteRow) -> str | None:
        return ws.store.scalar("SELECT call_key FROM votes WHERE sample_id=? AND referee=?",
                               (row.sample_id, self.referee.name))

    def changed_inputs(self, ws: Workspace, row: VoteRow) -> str:
        old = ws.store.scalar("SELECT request FROM llm_calls c JOIN votes v ON v.call_key = c.key WHERE "
                              "v.sample_id=? AND v.referee=?", (row.sample_id, self.referee.name)) or ""
        if json.dumps(row.question, ensure_ascii=False)[1:-1] not in old:
            return "the Q&A changed (Q&A re-run)"
        return "the task type's text changed (rename, move, merge)"

    def record(self, ws: Workspace, oc: Outcome, run: StageRun) -> None:
        # An ambiguous reply is vote NULL / valid 0 with its raw text, never a 0.
        vote = oc.value if oc.error is None else None
        assert oc.record is not None   # the base records answered calls only
        ws.store.conn.execute(
            "INSERT INTO votes(sample_id, referee, vote, valid, raw_text, call_key, prompt_hash, stage_run_id) "
            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(sample_id, referee) DO UPDATE SET vote=excluded.vote, "
            "valid=excluded.valid, raw_text=excluded.raw_text, call_key=excluded.call_key, "
            "prompt_hash=excluded.prompt_hash, stage_run_id=excluded.stage_run_id",
            (oc.row.sample_id, self.referee.name, vote, int(vote is not None), oc.record.raw_text, oc.key,
             oc.prompt.hash, run.id))
        run.add("votes_1" if vote == 1 else "votes_0" if vote == 0 else "ambiguous")


def no_samples_message(ws: Workspace, stage: str) -> str:
    ok = int(ws.store.scalar("SELECT count(*) FROM samples WHERE status='ok'"))
    if ok:   # there are samples, but none of a task type (their nodes await review or were rejected)
        counts = task_type_counts(ws)
        return (f"{stage}: all {ok} Q&A sample(s) belong to nodes that are not task types (proposals awaiting "
                f"review, or rejected); accept them first: `{counts.accept_command()}` (or set [taxonomy] "
                "use_proposed = true in workbench.toml)")
    rejected = int(ws.store.scalar("SELECT count(*) FROM samples WHERE status='rejected'"))
    if rejected:
        return (f"{stage}: no usable Q&A samples: all {rejected} were rejected (see `workbench rejections "
                f"WORKSPACE --stage qa`); fix the Q&A prompt or endpoint and run `workbench qa --refresh-failed`")
    return f"{stage}: no Q&A samples yet; run `workbench qa` first"


def vote_rows(ws: Workspace, *, limit: int | None = None) -> list[VoteRow]:
    """The ok samples of task types (a sample of a node awaiting review waits, kept, until it is accepted)."""
    idx = Taxonomy.of(ws).index()
    rows = ws.store.query("SELECT id, image_id, node_id, question, answer FROM samples WHERE status='ok' "
                          "ORDER BY image_id, id")
    out = [VoteRow(r["id"], r["image_id"], idx.paths[r["node_id"]], r["question"], r["answer"])
           for r in rows if r["node_id"] in idx.nodes]
    return out[:limit] if limit is not None else out


def referees(ws: Workspace, names: list[str] | None = None) -> list[RefereeConfig]:
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


def is_audit(sample_id: str, fraction: float) -> bool:
    """Whether a sample belongs to the always-fully-voted audit set: a fixed hash of its id, so the same
    samples are audited in every run and by every process."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(sample_id.encode(), digest_size=8, person=b"wb-audit").digest(), "big")
    return h < fraction * 2 ** 64


def decided(yes: int, heard: int, n_referees: int, k: int) -> bool:
    """k-of-N is settled by `yes` positive votes out of `heard` (the rest of the N not yet heard)."""
    return yes >= k or yes + (n_referees - heard) < k


def expected_calls(pass_rates: list[float], k: int) -> float:
    """Expected referee calls per (non-audit) sample under adaptive k-of-N voting, for independent referees
    asked in this order with these pass rates (full voting: len(pass_rates)). For planners and benchmarks."""
    import itertools

    total = 0.0
    for outcome in itertools.product((0, 1), repeat=len(pass_rates)):
        p, yes, heard = 1.0, 0, 0
        for v, r in zip(outcome, pass_rates):
            p *= r if v else 1 - r
        for v in outcome:
            if decided(yes, heard, len(pass_rates), k):
                break
            heard += 1
            yes += v
        total += p * heard
    return total


@dataclass
class AdaptivePlan:
    """Which samples one referee is asked about in adaptive voting, and why the others are not."""

    rows: list[VoteRow]
    asked: int = 0          # not yet voted on by this referee and still open (or audited)
    already: int = 0        # voted on before (re-read from the cache, no call)
    decided: int = 0        # settled by the other referees' votes: not asked
    audit: int = 0          # audit samples among the asked
    params: dict = field(default_factory=dict)


def adaptive_rows(ws: Workspace, referee: str, rows: list[VoteRow], *, order: list[str], k: int,
                  audit_fraction: float) -> AdaptivePlan:
    """The rows `referee` must vote on given the votes stored now (one grouped query)."""
    q = ",".join("?" * len(order))
    votes = {r[0]: (r[1], r[2], r[3]) for r in ws.store.query(
        f"SELECT sample_id, sum(vote = 1), count(*), max(referee = ?) FROM votes WHERE referee IN ({q}) "
        "GROUP BY sample_id", (referee, *order))}
    plan = AdaptivePlan(rows=[])
    for row in rows:
        yes, heard, mine = votes.get(row.sample_id, (0, 0, 0))
        if mine:
            plan.already += 1
        elif is_audit(row.sample_id, audit_fraction):
            plan.audit += 1
            plan.asked += 1
        elif decided(yes or 0, heard, len(order), k):
            plan.decided += 1
            continue
        else:
            plan.asked += 1
        plan.rows.append(row)
    plan.params = {"min_votes": k, "referees": order, "audit_fraction": audit_fraction, "asked": plan.asked,
                   "already_voted": plan.already, "decided_before": plan.decided, "audit": plan.audit}
    return plan


def run_referees(ws: Workspace, *, names: list[str] | None = None, limit: int | None = None, adaptive: bool = False,
                 on_plan=None, **run_opts) -> list[RunReport]:
    """The configured referees (or `names`) vote on the ok samples; one stage run per referee.

    adaptive=False: every referee votes on every sample. adaptive=True: in `[[referees]]` order, each only
    where the k-of-N outcome is still open or the sample is in the audit set (see the module docstring);
    `on_plan(referee_name, AdaptivePlan)` is told who is asked. A dry run cannot know the votes it would get:
    it counts the referees after the first as if the earlier ones had not voted yet.
    run_opts: dry_run, budget_usd, progress, refresh_failed, on_result (see LLMStage.run)."""
    rows = vote_rows(ws, limit=limit)
    if not rows:
        raise WorkbenchError(no_samples_message(ws, "referee"))
    chosen = referees(ws, names)
    if not adaptive:
        return [RefereeStage(ws, ref, limit=limit).run(ws, rows, **run_opts) for ref in chosen]
    order = [r.name for r in ws.config.referees]
    chosen = sorted(chosen, key=lambda r: order.index(r.name))
    k, fraction = ws.config.select.min_votes, ws.config.referee.audit_fraction
    reports = []
    for ref in chosen:   # in configured order: each plan reads the votes the previous referee just wrote
        plan = adaptive_rows(ws, ref.name, rows, order=order, k=k, audit_fraction=fraction)
        if on_plan is not None:
            on_plan(ref.name, plan)
        reports.append(RefereeStage(ws, ref, limit=limit, adaptive=plan.params).run(ws, plan.rows, **run_opts))
    return reports
