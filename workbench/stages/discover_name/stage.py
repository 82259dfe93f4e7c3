"""The discovery naming stage: a VLM names one task type for a cluster of images no task type fits.

One call per cluster through the stage seam (exemplar images attached, the nearest task types and candidate parents
in the prompt; cached with the raw reply, priced, dry-run). A name that repeats a sibling under the chosen parent
(same loose key, or a sentence-embedding cosine at or above `text_embedding.duplicate_threshold`) is stored as a
duplicate; otherwise a `proposed` node with origin 'discovered' is added. Every reply gets a `discoveries` row.
How clusters are found and what they became is `analysis/discovery.py`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from workbench.core.clock import utcnow
from workbench.core.workspace import Workspace
from workbench.llm.prompts import PromptTemplate
from workbench.models.textembed import embed_texts, workspace_cache_dir
from workbench.stages.base import LLMStage, Outcome, StageRun
from workbench.stages.discover_name.parse import parse_name
from workbench.stages.vision import UrlCache
from workbench.taxonomy.model import LIVE, Provenance, Taxonomy
from workbench.taxonomy.names import SEP, loose_key

STAGE = "discover_name"
PROMPT = "discover_name.j2"


@dataclass
class Cluster:
    label: int
    image_ids: list[str]
    exemplar_ids: list[str]
    cohesion: float
    nearest: list[dict]                    # {node_id, path, score}, best first
    parents: list[tuple[str, str]]         # (node_id, path) candidate parents, the suggested one first
    siblings: list[str] = field(default_factory=list)   # names under the suggested parent

    @property
    def key(self) -> str:
        return hashlib.sha256("\x00".join(sorted(self.image_ids)).encode()).hexdigest()[:16]


class DiscoverNameStage(LLMStage):
    """One VLM call per cluster: the exemplar images attached, the nearest task types and parents in the prompt."""

    name = STAGE
    expected_output_tokens = 80
    produces = "proposed"

    def __init__(self, ws: Workspace, prompt: PromptTemplate, endpoint="default", params: dict | None = None,
                 dup_threshold: float | None = None):
        self.prompt, self.endpoint = prompt, endpoint
        self.params = params if params is not None else {"temperature": 0.0, "max_tokens": 200}
        self.urls = UrlCache(ws)
        cfg = ws.config.text_embedding
        self.dup_threshold = cfg.duplicate_threshold if dup_threshold is None else dup_threshold
        self.text_model, self.text_cache = cfg.model, None
        self.proposals: list[dict] = []

    def context(self, row: Cluster) -> dict:
        return {"size": len(row.image_ids), "nearest": row.nearest, "sep": SEP,
                "parents": [p for _, p in row.parents] or ["(a new first-level area)"], "siblings": row.siblings}

    def images(self, row: Cluster) -> list[str]:
        return [self.urls(i) for i in row.exemplar_ids]

    def parse(self, raw: str, row: Cluster) -> dict:
        return parse_name(raw)

    def _duplicate(self, ws: Workspace, name: str, parent_id: str | None) -> tuple[str | None, str]:
        """The sibling the name repeats (loose key, then sentence-embedding cosine), if any."""
        idx = Taxonomy.of(ws).index(LIVE)   # proposals are siblings too: never propose one twice
        kids = idx.kids(parent_id) if parent_id else idx.roots()
        for k in kids:
            if loose_key(k.name) == loose_key(name):
                return k.id, "same name"
        if not kids:
            return None, ""
        vecs = embed_texts([name] + [k.name for k in kids], self.text_model, cache_dir=workspace_cache_dir(ws))
        sims = vecs[1:] @ vecs[0]
        best = int(np.argmax(sims))
        if sims[best] >= self.dup_threshold:
            return kids[best].id, f"embedding {float(sims[best]):.2f}"
        return None, ""

    def record(self, ws: Workspace, oc: Outcome, run: StageRun) -> None:
        c: Cluster = oc.row
        rec = oc.record
        raw = rec.raw_text if rec else None
        prov = {"call_key": oc.key, "raw": raw, "prompt_file": str(oc.prompt.path.name), "prompt_hash": oc.prompt.hash,
                    "model": rec.model if rec else None}
        entry = dict(cluster=c.label, cluster_key=c.key, size=len(c.image_ids), cohesion=c.cohesion,
                     image_ids=json.dumps(c.image_ids), exemplar_ids=json.dumps(c.exemplar_ids),
                     nearest=json.dumps(c.nearest), stage_run_id=run.id, created_at=utcnow(), **prov)
        if oc.error:
            run.add("unreadable")
            entry.update(status="unreadable", note=oc.error)
        else:
            by_path = {p: pid for pid, p in c.parents}
            parent_id = by_path.get(oc.value["parent"] or "", c.parents[0][0] if c.parents else None)
            dup, why = self._duplicate(ws, oc.value["name"], parent_id)
            entry.update(name=oc.value["name"], parent_id=parent_id, note=oc.value["reason"])
            if dup:
                run.add("duplicate")
                entry.update(status="duplicate", duplicate_of=dup, note=f"repeats a sibling ({why})")
            else:
                node = Taxonomy.of(ws).add(oc.value["name"], parent_id, origin="discovered", status="proposed",
                                       provenance=Provenance(run.id, prov["prompt_file"], prov["prompt_hash"],
                                                             prov["model"]),
                                       note=f"discovered from {len(c.image_ids)} unfit image(s), cluster {c.key}")
                run.add("proposed")
                entry.update(status="proposed", node_id=node.id)
        cols = ", ".join(entry)
        cur = ws.store.conn.execute(f"INSERT INTO discoveries ({cols}) VALUES ({', '.join('?' * len(entry))})",
                                    list(entry.values()))
        self.proposals.append({**entry, "id": cur.lastrowid})
