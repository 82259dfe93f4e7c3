"""Bottom-up discovery: name the task types the taxonomy lacks, from the images no task type fits.

1. Candidates: images every one of whose filter candidates the VLM rejected (`filter_decisions` all kept=0,
   the strongest signal) and images whose best match scores below a threshold (`low_score_images`).
2. Their CLIP image embeddings are clustered with scikit-learn's HDBSCAN (noise stays unlabelled). A cluster
   must also be cohesive: its members' mean cosine to their centroid must beat that of random groups of the
   same size drawn from the candidates by `min_gain`, so a loose group of leftovers is not named.
3. Per cluster: the k members nearest its medoid are the exemplars; the nearest task types are the live
   leaves whose CLIP text embedding is nearest the centroid; the suggested parent is the parent whose
   children's mean text embedding is nearest the centroid.
4. The VLM names one task type (`stages/discover_name/`: `DiscoverNameStage`, prompt `discover_name.j2`,
   exemplar images attached) through the stage seam: cached with the raw reply, priced, dry-run.
5. The name is checked against the siblings under the chosen parent: the same loose key
   (`taxonomy.names.loose_key`) or a sentence-embedding cosine at or above `text_embedding.duplicate_threshold`
   marks it a duplicate (no node). Otherwise a `proposed` node with origin 'discovered' is added, and the
   `discoveries` row keeps the cluster, its images, exemplars, nearest task types, raw reply, prompt hash, model.
6. `discovery_report` closes the loop: after a discovered node is accepted and `workbench match` has run
   (incremental), how many of the cluster's previously unfit images the node (or its subtree) now takes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm.prompts import PromptTemplate
from workbench.stages.base import RunReport
from workbench.stages.discover_name.stage import PROMPT, Cluster, DiscoverNameStage
from workbench.stages.embed.stage import get_image_embeddings, get_text_embeddings
from workbench.stages.match.stage import low_score_images
from workbench.taxonomy.model import Taxonomy


@dataclass
class DiscoveryResult:
    candidates: int = 0
    filter_rejected: int = 0
    low_score: int = 0
    clusters: list[Cluster] = field(default_factory=list)
    rejected_loose: int = 0               # HDBSCAN clusters dropped for low cohesion
    report: RunReport | None = None
    proposals: list[dict] = field(default_factory=list)


# -- 1. candidates ------------------------------------------------------------------------------
def candidates(ws: Workspace, threshold: float | None = None) -> dict[str, str]:
    """{image_id: why}: 'filter_rejected' (the VLM kept none of its candidates) or 'low_score'."""
    out = {r["image_id"]: "filter_rejected" for r in ws.store.query(
        "SELECT image_id FROM filter_decisions GROUP BY image_id HAVING max(kept) = 0")}
    for r in low_score_images(ws, threshold):
        out.setdefault(r["image_id"], "low_score")
    return out


# -- 2./3. clusters ---------------------------------------------------------------------------------
def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def _cohesion(x: np.ndarray) -> float:
    return float((x @ _unit(x.mean(0))).mean())


def find_clusters(ws: Workspace, image_ids: list[str], emb: np.ndarray, *, min_cluster_size: int = 10,
                  exemplars: int = 6, n_nearest: int = 5, n_parents: int = 3, min_gain: float = 0.1,
                  pool: np.ndarray | None = None, seed: int = 0) -> tuple[list[Cluster], int]:
    """Cluster the candidates' embeddings; return (cohesive clusters, biggest first; clusters dropped as loose).
    `pool`: the embeddings random groups are drawn from for the cohesion baseline (default: the candidates;
    `discover` passes every image, so that candidates which are all one tight cluster still count)."""
    try:
        from sklearn.cluster import HDBSCAN
    except ImportError:
        raise WorkbenchError("discovery clusters with scikit-learn's HDBSCAN (>= 1.3): pip install "
                             "'taskgalaxy-workbench[analysis]'") from None


    if len(image_ids) < max(2, min_cluster_size):
        return [], 0
    x = _unit(np.asarray(emb, np.float32))
    labels = HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit(x).labels_
    if (labels == -1).all():
        # HDBSCAN never returns one cluster of everything (allow_single_cluster would merge real clusters
        # elsewhere): when the candidates may all be one missing family, the cohesion test below decides.
        labels = np.zeros_like(labels)
    node_ids, text = get_text_embeddings(ws)
    idx = Taxonomy.of(ws).index()
    keep = [i for i, n in enumerate(node_ids) if n in idx.nodes and idx.is_leaf(n)]
    node_ids, text = [node_ids[i] for i in keep], text[keep]
    parent_ids = sorted({idx.nodes[n].parent_id for n in node_ids if idx.nodes[n].parent_id})
    by_parent = {p: [i for i, n in enumerate(node_ids) if idx.nodes[n].parent_id == p] for p in parent_ids}
    parent_vecs = _unit(np.stack([text[by_parent[p]].mean(0) for p in parent_ids])) if parent_ids else None
    pool = x if pool is None else pool            # rows already L2-normalised (get_image_embeddings)
    rng = np.random.default_rng(seed)
    out, loose = [], 0
    for label in sorted(set(labels) - {-1}):
        members = np.flatnonzero(labels == label)
        xm = x[members]
        coh = _cohesion(xm)
        m = min(len(members), len(pool))
        baseline = np.mean([_cohesion(_unit(pool[np.sort(rng.choice(len(pool), m, replace=False))]))
                            for _ in range(8)])
        if coh < baseline + min_gain:
            loose += 1
            continue
        # exemplars: the members nearest the medoid (the member with the highest mean similarity to the others)
        sub = xm if len(xm) <= 2000 else xm[rng.choice(len(xm), 2000, replace=False)]
        medoid = xm[int(np.argmax((xm @ sub.T).mean(1)))]
        ex = members[np.argsort(-(xm @ medoid), kind="stable")[:exemplars]]
        centroid = _unit(xm.mean(0))
        nearest, parents = [], []
        if len(node_ids):
            s = text @ centroid
            for i in np.argsort(-s, kind="stable")[:n_nearest]:
                nearest.append({"node_id": node_ids[i], "path": idx.paths[node_ids[i]], "score": round(float(s[i]), 4)})
        if parent_vecs is not None:
            ps = parent_vecs @ centroid
            parents = [(parent_ids[i], idx.paths[parent_ids[i]]) for i in np.argsort(-ps, kind="stable")[:n_parents]]
        siblings = [k.name for k in idx.kids(parents[0][0])] if parents else [r.name for r in idx.roots()]
        out.append(Cluster(int(label), [image_ids[i] for i in members], [image_ids[i] for i in ex], round(coh, 4),
                           nearest, parents, siblings))
    out.sort(key=lambda c: -len(c.image_ids))
    return out, loose


def discover(ws: Workspace, *, min_cluster_size: int = 10, threshold: float | None = None, exemplars: int = 6,
             min_gain: float = 0.1, endpoint=None, prompt: str | Path | None = None, dry_run: bool = False,
             budget_usd: float | None = None, progress: bool | None = None) -> DiscoveryResult:
    """Candidates -> clusters -> one VLM-named `proposed` node per cohesive cluster (see the module doc)."""
    if min_cluster_size < 2:
        raise WorkbenchError(f"--min-cluster-size must be at least 2; got {min_cluster_size}")
    why = candidates(ws, threshold)
    res = DiscoveryResult(candidates=len(why), filter_rejected=sum(v == "filter_rejected" for v in why.values()))
    res.low_score = res.candidates - res.filter_rejected
    if not why:
        return res
    ids, emb = get_image_embeddings(ws)
    pos = {i: n for n, i in enumerate(ids)}
    cand = [i for i in sorted(why) if i in pos]
    if not cand:
        raise WorkbenchError(f"none of the {len(why)} candidate image(s) has an image embedding for the current "
                             "[clip] config; run `workbench embed WORKSPACE` first")
    res.clusters, res.rejected_loose = find_clusters(ws, cand, emb[[pos[i] for i in cand]],
                                                     min_cluster_size=min_cluster_size, exemplars=exemplars,
                                                     min_gain=min_gain, pool=emb)
    if not res.clusters:
        return res
    tpl = PromptTemplate.load(prompt or PROMPT, workspace_root=ws.root)
    stage = DiscoverNameStage(ws, tpl, endpoint or "default")
    res.report = stage.run(ws, res.clusters, dry_run=dry_run, budget_usd=budget_usd, progress=progress)
    res.proposals = stage.proposals
    return res


# -- 6. the loop --------------------------------------------------------------------------------------
def discovery_report(ws: Workspace) -> list[dict]:
    """Per discovery: its node's status and how many of its previously unfit images the node (or its subtree)
    now takes, as the best match (`top1`) and anywhere in the stored top-k (`topk`). `matched` is False until
    `workbench match` has scored the node (its row in `match_targets`)."""
    idx = Taxonomy.of(ws).index(None)
    out = []
    for r in ws.store.query("SELECT * FROM discoveries ORDER BY id"):
        images = json.loads(r["image_ids"])
        row = {"id": r["id"], "name": r["name"], "status": r["status"], "node_id": r["node_id"],
               "node_status": None, "path": None, "images": len(images), "matched": False, "top1": 0, "topk": 0}
        nid = r["node_id"]
        if nid and nid in idx.nodes:
            sub = idx.subtree(nid)
            row.update(node_status=idx.nodes[nid].status, path=idx.paths[nid])
            marks = ",".join("?" * len(sub))
            row["matched"] = bool(ws.store.scalar(
                f"SELECT count(*) FROM match_targets WHERE node_id IN ({marks})", sub))
            for start in range(0, len(images), 500):
                part = images[start:start + 500]
                im = ",".join("?" * len(part))
                got = ws.store.query(
                    f"SELECT image_id, min(rank) AS best FROM matches WHERE node_id IN ({marks}) "
                    f"AND image_id IN ({im}) GROUP BY image_id", (*sub, *part))
                row["topk"] += len(got)
                row["top1"] += sum(1 for g in got if g["best"] == 1)
        out.append(row)
    return out
