"""Filter: the VLM sees an image and its top-k candidate task types and keeps those that fit.

One call per image. Every candidate gets a row in `filter_decisions` (kept or 'not chosen'); a
label the VLM returned that is not a candidate is recorded with node_id NULL and reason
'not a candidate'; a reply that cannot be read marks the candidates 'parse error: ...'. Re-running
replaces an image's decisions from the cached reply (no call), so a parser change is applied by
running the stage again.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import WorkbenchError
from workbench.llm.stage import Outcome, ParseError, RunReport
from workbench.stages.filter_parse import FilterParseError, parse_filter_reply
from workbench.stages.vision_common import ImageStage, run_vlm_stage, task_types_per_image
from workbench.taxonomy.names import SEP


@dataclass
class FilterRow:
    image_id: str
    candidates: list[tuple[str, str]]    # (node_id, path), best match first


class FilterStage(ImageStage):
    stage = "filter"

    default_prompt = "filter.j2"

    def __init__(self, ws, prompt: str | None = None):
        super().__init__(ws, ws.config.filter, prompt)

    def context(self, row: FilterRow) -> dict:
        return {"candidates": [p for _, p in row.candidates], "sep": SEP}

    def parse(self, raw: str, row: FilterRow):
        try:
            return parse_filter_reply(raw, [p for _, p in row.candidates])
        except FilterParseError as exc:
            return ParseError(str(exc))


def filter_rows(ws, *, image_ids: list[str] | None = None, limit: int | None = None) -> list[FilterRow]:
    """Images with CLIP matches and their live candidates, in rank order."""
    sql = "SELECT image_id, node_id FROM matches ORDER BY image_id, rank"
    return [FilterRow(i, c) for i, c in task_types_per_image(ws, sql, image_ids=image_ids, limit=limit)]


def _record(ws, oc: Outcome, run_id) -> None:
    row: FilterRow = oc.row
    if oc.record is None or not oc.record.ok:
        return  # a failed call: nothing decided; the next run calls again
    with ws.store.write() as conn:
        conn.execute("DELETE FROM filter_decisions WHERE image_id=?", (row.image_id,))
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
        conn.executemany(
            "INSERT OR IGNORE INTO filter_decisions(image_id, node_id, label, kept, reason, call_key, stage_run_id)"
            " VALUES (?,?,?,?,?,?,?)", [(row.image_id, n, lab, k, why, oc.key, run_id) for n, lab, k, why in decisions])


def run_filter(ws, *, image_ids: list[str] | None = None, limit: int | None = None, dry_run: bool = False,
               budget_usd: float | None = None, prompt: str | None = None, endpoint: str | None = None,
               progress: bool | None = None, refresh_failed: bool = False) -> RunReport:
    rows = filter_rows(ws, image_ids=image_ids, limit=limit)
    if not rows:
        raise WorkbenchError("filter: no images with CLIP matches; run `workbench images add`, `workbench embed` "
                             "and `workbench match` first")
    stage = FilterStage(ws, prompt)
    return run_vlm_stage(ws, stage, rows, endpoint=endpoint or ws.config.filter.endpoint,
                         record=lambda oc, run_id: _record(ws, oc, run_id), dry_run=dry_run,
                         budget_usd=budget_usd, progress=progress, refresh_failed=refresh_failed)
