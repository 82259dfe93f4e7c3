"""Filter: the VLM sees an image and its top-k candidate task types and keeps those that fit.

One call per image. Every candidate gets a row in `filter_decisions` (kept or 'not chosen'); a
label the VLM returned that is not a candidate is recorded with node_id NULL and reason
'not a candidate' (one that names the last level of several candidates, 'ambiguous'); a reply that cannot be
read marks the candidates 'parse error: ...'. Re-running
replaces an image's decisions from the cached reply (no call), so a parser change is applied by
running the stage again.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.stages.base import Outcome, RunReport, StageRun
from workbench.stages.filter.parse import parse_filter_reply
from workbench.stages.vision import ImageStage, task_types_per_image
from workbench.taxonomy.names import SEP


@dataclass
class FilterRow:
    image_id: str
    candidates: list[tuple[str, str]]    # (node_id, path), best match first


class FilterStage(ImageStage):
    name = "filter"
    produces = "kept"
    default_prompt = "filter.j2"

    def __init__(self, ws: Workspace, prompt: str | None = None, **kw):
        super().__init__(ws, ws.config.filter, prompt, **kw)

    def rows(self, ws: Workspace) -> list[FilterRow]:
        rows = filter_rows(ws, image_ids=self.image_ids, limit=self.limit)
        if not rows:
            raise WorkbenchError("filter: no images with CLIP matches; run `workbench images add`, `workbench embed` "
                                 "and `workbench match` first")
        return rows

    def context(self, row: FilterRow) -> dict:
        return {"candidates": [p for _, p in row.candidates], "sep": SEP}

    def parse(self, raw: str, row: FilterRow):
        return parse_filter_reply(raw, [p for _, p in row.candidates])   # raises FilterParseError (a ParseFailure)

    def previous_key(self, ws: Workspace, row: FilterRow) -> str | None:
        return ws.store.scalar("SELECT call_key FROM filter_decisions WHERE image_id=? LIMIT 1", (row.image_id,))

    def changed_inputs(self, ws: Workspace, row: FilterRow) -> str:
        before = [(r[0], r[1]) for r in ws.store.query(
            "SELECT node_id, label FROM filter_decisions WHERE image_id=? AND node_id IS NOT NULL", (row.image_id,))]
        if {n for n, _ in before} != {n for n, _ in row.candidates}:
            return "CLIP candidates changed (re-match, new or removed task types)"
        if set(before) != set(row.candidates):
            return "a candidate's text changed (rename, move, merge)"
        return "candidate order changed"

    def record(self, ws: Workspace, oc: Outcome, run: StageRun) -> None:
        row: FilterRow = oc.row
        decisions: list[tuple[str | None, str, int, str | None]]   # (node_id, label, kept, reason)
        if oc.error is not None:
            decisions = [(nid, path, 0, f"parse error: {oc.error}") for nid, path in row.candidates]
        else:
            res = oc.value
            kept = set(res.kept)
            decisions = [(nid, path, int(path in kept), None if path in kept else "not chosen")
                         for nid, path in row.candidates]
            decisions += [(None, label, 0, "not a candidate") for label in dict.fromkeys(res.not_candidates)]
            decisions += [(None, label, 0, "ambiguous: the last level of several candidates; give the full path")
                          for label in dict.fromkeys(res.ambiguous)]
        conn = ws.store.conn
        conn.execute("DELETE FROM filter_decisions WHERE image_id=?", (row.image_id,))
        conn.executemany(
            "INSERT OR IGNORE INTO filter_decisions(image_id, node_id, label, kept, reason, call_key, stage_run_id)"
            " VALUES (?,?,?,?,?,?,?)", [(row.image_id, n, lab, k, why, oc.key, run.id) for n, lab, k, why in decisions])
        run.add("kept", sum(k for _, _, k, _ in decisions))
        run.add("not_kept", sum(1 for n, _, k, _ in decisions if n is not None and not k))


def filter_rows(ws: Workspace, *, image_ids: list[str] | None = None, limit: int | None = None) -> list[FilterRow]:
    """Images with CLIP matches and their live candidates, in rank order."""
    sql = "SELECT image_id, node_id FROM matches ORDER BY image_id, rank"
    return [FilterRow(i, c) for i, c in task_types_per_image(ws, sql, image_ids=image_ids, limit=limit)]


def run_filter(ws: Workspace, *, image_ids: list[str] | None = None, limit: int | None = None,
               prompt: str | None = None, endpoint: str | None = None, **run_opts) -> RunReport:
    """run_opts: dry_run, budget_usd, progress, refresh_failed, on_result (see LLMStage.run)."""
    return FilterStage(ws, prompt, endpoint=endpoint, image_ids=image_ids, limit=limit).run(ws, **run_opts)
