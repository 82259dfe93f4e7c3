"""Q&A: one question-answer pair per kept (image, task type), written by the VLM.

One call per image, asking for all of its kept task types. Accepted pairs become `samples` rows
with status 'ok'; pairs with an empty answer/question, a task type that was not requested, or a
requested type the reply left out become status 'rejected' with the reason. Sample ids hash
(image, task type, question), so a re-run from the cache rewrites the same rows (upsert: votes
already cast on them stay).
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.stages.base import Outcome, RunReport, StageRun
from workbench.stages.qa.parse import parse_qa_reply
from workbench.stages.vision import ImageStage, sample_id, task_types_per_image
from workbench.taxonomy.names import SEP


@dataclass
class QARow:
    image_id: str
    task_types: list[tuple[str, str]]    # (node_id, path)


class QAStage(ImageStage):
    name = "qa"
    produces = "samples"
    expected_output_tokens = 600
    default_prompt = "qa.j2"

    def __init__(self, ws: Workspace, prompt: str | None = None, **kw):
        super().__init__(ws, ws.config.qa, prompt, **kw)

    def rows(self, ws: Workspace) -> list[QARow]:
        rows = qa_rows(ws, image_ids=self.image_ids, limit=self.limit)
        if not rows:
            raise WorkbenchError("qa: no image has a kept task type yet; run `workbench filter` first")
        return rows

    def context(self, row: QARow) -> dict:
        return {"task_types": [p for _, p in row.task_types], "sep": SEP}

    def parse(self, raw: str, row: QARow):
        return parse_qa_reply(raw, [p for _, p in row.task_types])   # raises QAParseError (a ParseFailure)

    def previous_key(self, ws: Workspace, row: QARow) -> str | None:
        return ws.store.scalar("SELECT call_key FROM samples WHERE image_id=? ORDER BY created_at DESC LIMIT 1",
                               (row.image_id,))

    def changed_inputs(self, ws: Workspace, row: QARow) -> str:
        before = {r[0] for r in ws.store.query("SELECT DISTINCT node_id FROM samples WHERE image_id=? AND node_id "
                                               "IS NOT NULL", (row.image_id,))}
        if before != {n for n, _ in row.task_types}:
            return "kept task types changed (filter re-run, task types removed)"
        return "a kept task type's text changed (rename, move, merge)"

    def record(self, ws: Workspace, oc: Outcome, run: StageRun) -> None:
        row: QARow = oc.row
        now = utcnow()
        node_of = {p: n for n, p in row.task_types}
        # (sample id, node_id, label, question, answer, status, reason)
        new: list[tuple[str, str | None, str | None, str | None, str | None, str, str | None]] = []
        nid: str | None   # None: a reply pair whose task type is none of the row's
        if oc.error is not None:
            for nid, _ in row.task_types:
                new.append((sample_id(row.image_id, nid, ""), nid, None, None, None, "rejected",
                            f"parse error: {oc.error}"))
        else:
            answered = set()
            for p in oc.value.pairs:
                nid = node_of.get(p.task_type)
                if p.reason is None:
                    answered.add(nid)
                new.append((sample_id(row.image_id, nid or p.task_type, p.question or ""), nid,
                            None if nid else p.task_type, p.question, p.answer,
                            "ok" if p.reason is None else "rejected", p.reason))
            for nid, _path in row.task_types:
                if nid not in answered and not any(n == nid for _, n, *_ in new):
                    new.append((sample_id(row.image_id, nid, ""), nid, None, None, None, "rejected",
                                "no Q&A returned for this task type"))
        conn = ws.store.conn
        keep = [s[0] for s in new]
        conn.execute(f"DELETE FROM samples WHERE image_id=? AND id NOT IN ({','.join('?' * len(keep))})",
                     (row.image_id, *keep))
        conn.executemany(
            "INSERT INTO samples(id, image_id, node_id, label, question, answer, status, reason, call_key, "
            "stage_run_id, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
            "node_id=excluded.node_id, label=excluded.label, question=excluded.question, answer=excluded.answer, "
            "status=excluded.status, reason=excluded.reason, call_key=excluded.call_key, "
            "stage_run_id=excluded.stage_run_id",
            [(sid, row.image_id, nid, label, q, a, st, why, oc.key, run.id, now) for sid, nid, label, q, a, st, why
             in new])
        run.add("samples", sum(s[5] == "ok" for s in new))
        run.add("rejected", sum(s[5] != "ok" for s in new))


def qa_rows(ws: Workspace, *, image_ids: list[str] | None = None, limit: int | None = None) -> list[QARow]:
    sql = ("SELECT d.image_id, d.node_id FROM filter_decisions d LEFT JOIN matches m "
           "ON m.image_id = d.image_id AND m.node_id = d.node_id WHERE d.kept = 1 ORDER BY d.image_id, m.rank")
    return [QARow(i, t) for i, t in task_types_per_image(ws, sql, image_ids=image_ids, limit=limit)]


def run_qa(ws: Workspace, *, image_ids: list[str] | None = None, limit: int | None = None, prompt: str | None = None,
           endpoint: str | None = None, **run_opts) -> RunReport:
    """run_opts: dry_run, budget_usd, progress, refresh_failed, on_result (see LLMStage.run)."""
    return QAStage(ws, prompt, endpoint=endpoint, image_ids=image_ids, limit=limit).run(ws, **run_opts)
