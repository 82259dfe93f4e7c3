"""Near-duplicate task names, listed as merge suggestions the user can apply.

Two kinds: 'exact' — the same name once case, punctuation, hyphens and spacing are ignored
("Image-captioning" vs "image captioning"; across the tree also plain equal names under
different parents); 'embedding' — cosine similarity of sentence embeddings (workbench.models.textembed)
at or above a threshold (config `text_embedding.duplicate_threshold`). Scope 'siblings'
compares children of the same parent; 'tree' compares every pair of live nodes that are not
ancestor and descendant. Applying a suggestion merges b into a via `Taxonomy.merge`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.models.textembed import embed_texts, workspace_cache_dir
from workbench.taxonomy.model import LIVE, Taxonomy
from workbench.taxonomy.names import loose_key

CHUNK = 2048


@dataclass(frozen=True)
class MergeSuggestion:
    a_id: str          # the suggested survivor (accepted before proposed, then the older node)
    b_id: str          # the suggested victim
    a_path: str
    b_path: str
    score: float       # 1.0 for 'exact'; cosine similarity for 'embedding'
    kind: Literal["exact", "embedding"]


def _order(a, b):
    """(survivor, victim): accepted beats proposed, seed/imported/manual beat generated, then older."""
    def rank(n):
        return (n.status != "accepted", n.origin == "generated", n.created_at, n.id)
    return (a, b) if rank(a) <= rank(b) else (b, a)


def suggest_merges(ws: Workspace, *, scope: str = "siblings", threshold: float | None = None,
                   statuses=LIVE, embed: bool = True) -> list[MergeSuggestion]:
    if scope not in ("siblings", "tree"):
        raise WorkbenchError(f"scope must be 'siblings' or 'tree'; got {scope!r}")
    cfg = ws.config.text_embedding
    threshold = cfg.duplicate_threshold if threshold is None else float(threshold)
    if not 0 < threshold <= 1:
        raise WorkbenchError(f"threshold must be in (0, 1]; got {threshold}")
    idx = Taxonomy.of(ws).index(statuses)
    ids = idx.dfs()
    nodes = [idx.nodes[i] for i in ids]
    pos = {n.id: i for i, n in enumerate(nodes)}
    found: dict[tuple[str, str], MergeSuggestion] = {}

    def related(a, b) -> bool:
        return a.id in (x.id for x in idx.ancestors(b.id)) or b.id in (x.id for x in idx.ancestors(a.id))

    def add(a, b, score, kind):
        if a.id == b.id or (scope == "tree" and related(a, b)):
            return
        pair = tuple(sorted((a.id, b.id)))
        if pair in found and found[pair].kind == "exact":
            return
        s, v = _order(a, b)
        found[pair] = MergeSuggestion(s.id, v.id, idx.paths[s.id], idx.paths[v.id], round(float(score), 4), kind)

    # Exact (loose key) matches.
    groups: dict[tuple, list] = {}
    for n in nodes:
        k = (n.parent_id, loose_key(n.name)) if scope == "siblings" else (loose_key(n.name),)
        groups.setdefault(k, []).append(n)
    for members in groups.values():
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                add(members[i], members[j], 1.0, "exact")

    if embed and len(nodes) > 1:
        vecs = embed_texts([n.name for n in nodes], cfg.model, cache_dir=workspace_cache_dir(ws))
        if scope == "siblings":
            for kids in idx.children.values():
                if len(kids) < 2:
                    continue
                rows = [pos[k] for k in kids]
                sims = vecs[rows] @ vecs[rows].T
                ii, jj = np.nonzero(np.triu(sims >= threshold, k=1))
                for i, j in zip(ii, jj):
                    add(nodes[rows[i]], nodes[rows[j]], sims[i, j], "embedding")
        else:
            for start in range(0, len(nodes), CHUNK):
                sims = vecs[start:start + CHUNK] @ vecs.T
                ii, jj = np.nonzero(sims >= threshold)
                for i, j in zip(ii, jj):
                    if start + i < j:
                        add(nodes[start + i], nodes[j], sims[i, j], "embedding")
    return sorted(found.values(), key=lambda s: (s.kind != "exact", -s.score, s.a_path, s.b_path))


def apply_merge(ws: Workspace, suggestion: MergeSuggestion, *, survivor: str | None = None):
    """Merge the suggestion's victim into its survivor (or the other way round when `survivor` is b_id)."""
    if survivor not in (None, suggestion.a_id, suggestion.b_id):
        raise WorkbenchError(f"survivor must be {suggestion.a_id} or {suggestion.b_id}; got {survivor!r}")
    keep = survivor or suggestion.a_id
    victim = suggestion.b_id if keep == suggestion.a_id else suggestion.a_id
    # Merge exactly the two nodes listed: if an earlier merge already absorbed either one, its id now
    # resolves (through an alias) to another node, and merging that would join nodes nobody reviewed.
    gone = [i for i in (keep, victim) if ws.store.scalar("SELECT count(*) FROM nodes WHERE id=?", (i,)) == 0]
    if gone:
        raise WorkbenchError(f"{', '.join(gone)} was already merged away; review the suggestions again "
                             "(`workbench taxonomy duplicates`)")
    return Taxonomy.of(ws).merge(victim, keep)
