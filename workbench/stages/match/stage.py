"""Top-k task types per image by true cosine similarity, chunked, incremental.

Rows are L2-normalised, so cosine = dot product. Images go through in chunks whose score block
(chunk × task types, float32) stays under `[match] memory_mb`; the full image × task matrix is
never built. `matches` keeps rank (1 = best), score and `target_hash` (the hash of the task text
that was scored).

Incremental rule (exact: the result always equals a full recomputation, up to ties):
- a new `match_key` (image set, text set, k) drops the old matches and starts afresh;
- a stored row is *stale* when its task type is no longer a live leaf or its text changed (rename,
  move, merge: `target_hash` differs); an image with a stale row, with fewer rows than it should
  have (a deleted task type's rows cascade away), or with no rows is recomputed against all task types;
- every other image keeps its rows and is scored only against the task types added since the last
  run (new leaves, changed texts): its new top-k is the top-k of its old top-k ∪ those scores.
  Removing a task type that was outside an image's top-k cannot change that top-k.
`match_targets` records which task types (and text hashes) the stored matches cover. Each chunk
commits on its own, and merging is idempotent, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.stages.base import Stage, StageRun
from workbench.stages.dispatch import current
from workbench.stages.embed import stage as E
from workbench.stages.embed.clip import resolve_device
from workbench.stages.embed.stage import _read_set
from workbench.taxonomy.model import Taxonomy, task_type_counts


@dataclass
class MatchReport:
    match_key: str = ""
    k: int = 0
    images: int = 0
    task_types: int = 0
    recomputed: int = 0        # images scored against all task types
    merged: int = 0            # images scored only against new task types
    new_targets: int = 0
    removed_targets: int = 0
    chunk_rows: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"matched {self.images} image(s) against {self.task_types} task type(s), k={self.k}: "
                f"{self.recomputed} fully scored, {self.merged} updated with {self.new_targets} new/changed "
                f"task type(s); {self.removed_targets} task type(s) gone since the last run")


def chunk_rows(n_targets: int, memory_mb: int, chunk_size: int) -> int:
    """Images per chunk so that one float32 score block stays under memory_mb."""
    return max(1, min(chunk_size, (memory_mb * 2**20) // (4 * max(1, n_targets))))


def topk_cosine(queries: np.ndarray, targets: np.ndarray, k: int, *, chunk: int = 4096,
                device: str = "cpu"):
    """Yield (start, indices [c×k], scores [c×k]) of the top-k targets per query, chunk by chunk.

    Both inputs must be L2-normalised rows; scores are their dot products (= cosine).
    """
    import torch

    k = min(k, targets.shape[0])
    t = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)).to(device)
    for start in range(0, queries.shape[0], chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[start:start + chunk], dtype=np.float32)).to(device)
        scores = q @ t.T
        vals, idx = torch.topk(scores, k, dim=1, largest=True, sorted=True)
        del scores
        yield start, idx.cpu().numpy(), vals.cpu().numpy()


def _key(*parts) -> str:
    return hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()[:16]


def match(ws: Workspace, k: int | None = None, *, embed: bool = True, progress=None, engine=None) -> MatchReport:
    """Top-k task types for every image; computes missing embeddings first unless embed=False.
    engine: where full scoring runs (see MatchStage; default `stages.dispatch.current()`, local unless set)."""
    engine = engine if engine is not None else current()
    t0 = time.perf_counter()
    cfg = ws.config.match
    k = int(cfg.k if k is None else k)
    if k < 1:
        raise WorkbenchError(f"--k must be at least 1; got {k}")
    if embed:
        E.embed_texts_clip(ws)
        E.embed_images(ws, engine=engine)
    report = MatchStage(k, progress, engine=engine).run(ws)
    report.seconds = time.perf_counter() - t0
    return report


class MatchStage(Stage):
    """Exact cosine top-k of every image against every task type (`Taxonomy.of(ws).leaves()`: accepted, or proposed
    too with `[taxonomy] use_proposed`), incremental (see match()).

    engine: None (local) or a `workbench.engine` engine whose `topk_blocks` scores the full-scoring chunks
    elsewhere (the task-type matrix broadcast once); the driver writes their rows as the local path does.
    The incremental merge (few new task types) stays local: it reads the stored matches."""

    name = "match"

    def __init__(self, k: int, progress=None, engine=None):
        self.k, self.progress, self.engine = k, progress, engine

    def run_params(self) -> dict:
        return {"k": self.k, **({"engine": self.engine.name} if self.engine is not None else {})}

    def execute(self, ws: Workspace, run: StageRun) -> MatchReport:
        k, progress, cfg = self.k, self.progress, ws.config.match
        ident = E._identity(ws)
        text_key, image_key = E.text_set_key(ws, ident), E.image_set_key(ws, ident)
        match_key = _key(image_key, text_key, k)
        items = E.current_task_texts(ws)
        if not items:
            counts = task_type_counts(ws)
            if counts.awaiting:
                raise WorkbenchError(f"the taxonomy has no accepted task types to match against; {counts.line()}")
            raise WorkbenchError("the taxonomy has no task types to match against; import or add some "
                                 "(`workbench taxonomy import`, `workbench init --seed`)")
        node_ids, text_arr = E.get_text_embeddings(ws)
        if len(node_ids) != len(items):
            raise WorkbenchError(f"{len(items) - len(node_ids)} task type(s) have no text embedding for the current "
                                 "[clip] config; run `workbench embed WORKSPACE` first")
        hashes = {n: h for n, _, h in items}
        image_ids, _ = _image_rows(ws, image_key)
        report = MatchReport(match_key=match_key, k=k, images=len(image_ids), task_types=len(node_ids))
        n_chunk = chunk_rows(len(node_ids), cfg.memory_mb, cfg.chunk_size)
        report.chunk_rows = n_chunk
        device = _device(ws)

        with ws.store.write() as conn:
            conn.execute("DELETE FROM matches WHERE match_key != ?", (match_key,))
            conn.execute("DELETE FROM match_targets WHERE match_key != ?", (match_key,))
        prev = {r["node_id"]: r["input_hash"] for r in ws.store.query(
            "SELECT node_id, input_hash FROM match_targets WHERE match_key=?", (match_key,))}
        current = {n: hashes[n] for n in node_ids}
        new_targets = [i for i, n in enumerate(node_ids) if prev.get(n) != current[n]]
        report.new_targets = len(new_targets) if prev else len(node_ids)
        report.removed_targets = sum(1 for n, h in prev.items() if current.get(n) != h)

        full, keep = _classify(ws, match_key, image_ids, current, expected=min(k, len(prev)) if prev else k)
        run.summary.update(match_key=match_key, full=len(full), keep=len(keep))
        # 1) full scoring for new / stale images
        if full and self.engine is not None:
            parts = ((full[s:s + n_chunk], _image_vectors(ws, image_key, full[s:s + n_chunk]))
                     for s in range(0, len(full), n_chunk))
            for part, idx, vals in self.engine.topk_blocks(parts, text_arr, k):
                _write(ws, match_key, part, idx, vals, node_ids, current)
                report.recomputed += len(part)
                if progress:
                    progress(report.recomputed, len(full) + len(keep))
        elif full:
            ids_arr = np.array(full, dtype=object)
            for start in range(0, len(full), n_chunk):
                part = list(ids_arr[start:start + n_chunk])
                x = _image_vectors(ws, image_key, part)
                for _, idx, vals in topk_cosine(x, text_arr, k, chunk=n_chunk, device=device):
                    _write(ws, match_key, part, idx, vals, node_ids, current)
                report.recomputed += len(part)
                if progress:
                    progress(report.recomputed, len(full) + len(keep))
        # 2) merge only new task types into the images whose rows are still valid
        if keep and new_targets and prev:
            sub = text_arr[new_targets]
            sub_ids = [node_ids[i] for i in new_targets]
            for start in range(0, len(keep), n_chunk):
                part = keep[start:start + n_chunk]
                x = _image_vectors(ws, image_key, part)
                _merge(ws, match_key, part, x, sub, sub_ids, current, k, device)
                report.merged += len(part)
                if progress:
                    progress(report.recomputed + report.merged, len(full) + len(keep))
        with ws.store.write() as conn:
            conn.execute("DELETE FROM match_targets WHERE match_key=?", (match_key,))
            conn.executemany("INSERT INTO match_targets(match_key, node_id, input_hash) VALUES (?, ?, ?)",
                             [(match_key, n, h) for n, h in current.items()])
        return report


@dataclass
class MatchTodo:
    """What `match` would do now (the same `_classify` rule as its run), for planners: images scored in full
    (not embedded or matched yet, a stale row: a task type's text changed or it is gone) and images that only
    get the new task types merged in."""

    full: int = 0
    merge: int = 0
    new_targets: int = 0
    stale: int = 0           # of `full`: images whose stored rows are stale


def match_todo(ws: Workspace, k: int | None = None, *, match_key: str | None = None) -> MatchTodo:
    """`match_key`: the key of the stored matches, for a planner that must not load the CLIP config's weights
    to compute the current key (default: the current config's key, as `match` computes it)."""
    k = int(ws.config.match.k if k is None else k)
    registered = [r[0] for r in ws.store.query("SELECT id FROM images")]
    if match_key is None:
        ident = E._identity(ws)
        text_key, image_key = E.text_set_key(ws, ident), E.image_set_key(ws, ident)
        match_key = _key(image_key, text_key, k)
        image_ids, _ = _image_rows(ws, image_key)
    else:
        image_ids = registered     # not embedded yet or not matched: scored in full, as `match` does after embedding
    not_embedded = len(registered) - len(image_ids)
    current = {n: h for n, _, h in E.current_task_texts(ws)}
    prev = {r["node_id"]: r["input_hash"] for r in ws.store.query(
        "SELECT node_id, input_hash FROM match_targets WHERE match_key=?", (match_key,))}
    new_targets = sum(1 for n, h in current.items() if prev.get(n) != h)
    full, keep, stale = _classify(ws, match_key, image_ids, current, expected=min(k, len(prev)) if prev else k,
                                  with_stale=True)
    return MatchTodo(full=len(full) + max(0, not_embedded), merge=len(keep) if new_targets and prev else 0,
                     new_targets=new_targets, stale=stale)


def _device(ws: Workspace) -> str:
    return resolve_device(ws.config.clip.device)


def _image_rows(ws: Workspace, image_key: str) -> tuple[list[str], dict[str, int]]:
    rows = ws.store.query(
        "SELECT e.item_id, e.row FROM embedding_rows e JOIN images i ON i.id = e.item_id "
        "WHERE e.set_key=? ORDER BY e.row", (image_key,))
    return [r["item_id"] for r in rows], {r["item_id"]: r["row"] for r in rows}


def _image_vectors(ws: Workspace, image_key: str, ids: list[str]) -> np.ndarray:
    got, arr = _read_set(ws, image_key, ids)
    if got != list(ids):
        raise WorkbenchError("image embeddings changed during matching; run `workbench match` again")
    return arr


def _classify(ws: Workspace, match_key: str, image_ids: list[str], current: dict[str, str],
              expected: int, with_stale: bool = False):
    """Split images into (recompute fully, keep and merge new targets); `with_stale`: also how many of the
    recomputed have stale rows (a task type's text changed or it is gone)."""
    rows = ws.store.query("SELECT image_id, node_id, target_hash FROM matches WHERE match_key=?", (match_key,))
    count: dict[str, int] = {}
    stale: set[str] = set()
    for r in rows:
        count[r["image_id"]] = count.get(r["image_id"], 0) + 1
        if current.get(r["node_id"]) != r["target_hash"]:
            stale.add(r["image_id"])
    full: list[str] = []
    keep: list[str] = []
    for i in image_ids:
        (full if i in stale or count.get(i, 0) < expected else keep).append(i)
    if with_stale:
        return full, keep, sum(1 for i in full if i in stale)
    return full, keep


def _write(ws: Workspace, match_key, image_ids, idx, vals, node_ids, current) -> None:
    rows = []
    for r, image_id in enumerate(image_ids):
        for rank in range(idx.shape[1]):
            n = node_ids[idx[r, rank]]
            rows.append((image_id, n, rank + 1, float(vals[r, rank]), match_key, current[n]))
    with ws.store.write() as conn:
        conn.executemany("DELETE FROM matches WHERE image_id=?", [(i,) for i in image_ids])
        conn.executemany("INSERT INTO matches(image_id, node_id, rank, score, match_key, target_hash) "
                         "VALUES (?, ?, ?, ?, ?, ?)", rows)


def _merge(ws: Workspace, match_key, image_ids, x, sub, sub_ids, current, k, device) -> None:
    q = ",".join("?" * len(image_ids))
    old: dict[str, dict[str, float]] = {i: {} for i in image_ids}
    for row in ws.store.query(f"SELECT image_id, node_id, score FROM matches WHERE match_key=? AND image_id IN ({q})",
                              (match_key, *image_ids)):
        old[row["image_id"]][row["node_id"]] = row["score"]
    kk = min(k, len(sub_ids))
    out: list[tuple[str, str, int, float, str, str]] = []   # the rows of `matches`
    for _, idx, vals in topk_cosine(x, sub, kk, chunk=len(image_ids), device=device):
        for r, image_id in enumerate(image_ids):
            cand = dict(old[image_id])
            for j in range(idx.shape[1]):   # new scores win: idempotent if this chunk ran before
                cand[sub_ids[idx[r, j]]] = float(vals[r, j])
            best = sorted(cand.items(), key=lambda t: (-t[1], t[0]))[:k]
            out.extend((image_id, n, rank + 1, s, match_key, current[n]) for rank, (n, s) in enumerate(best))
    with ws.store.write() as conn:
        conn.executemany("DELETE FROM matches WHERE image_id=?", [(i,) for i in image_ids])
        conn.executemany("INSERT INTO matches(image_id, node_id, rank, score, match_key, target_hash) "
                         "VALUES (?, ?, ?, ?, ?, ?)", out)


# -- queries for the dashboard -----------------------------------------------------------------
def image_matches(ws: Workspace, image_id: str) -> list[dict]:
    """An image's stored top-k: rank, node id, task path, score."""
    idx = Taxonomy.of(ws).index()
    rows = ws.store.query("SELECT node_id, rank, score FROM matches WHERE image_id=? ORDER BY rank", (image_id,))
    return [{"rank": r["rank"], "node_id": r["node_id"], "path": idx.paths.get(r["node_id"], r["node_id"]),
             "score": r["score"]} for r in rows]


def images_for_task(ws: Workspace, node_id: str, *, max_rank: int | None = None,
                    limit: int | None = None) -> list[dict]:
    """Images matched to a task type (best score first)."""
    nid = Taxonomy.of(ws).resolve(node_id).id
    sql = "SELECT image_id, rank, score FROM matches WHERE node_id=?"
    params: list = [nid]
    if max_rank is not None:
        sql += " AND rank <= ?"
        params.append(max_rank)
    sql += " ORDER BY score DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return [dict(r) for r in ws.store.query(sql, params)]


def match_counts(ws: Workspace, *, max_rank: int | None = None) -> dict[str, int]:
    """Images per task type (node id → count) among live task types; 0 for those with none."""
    sql = "SELECT node_id, count(*) AS n FROM matches" + (" WHERE rank <= ?" if max_rank else "") + " GROUP BY node_id"
    got = {r["node_id"]: r["n"] for r in ws.store.query(sql, (max_rank,) if max_rank else ())}
    return {n.id: got.get(n.id, 0) for n, _ in Taxonomy.of(ws).leaves()}


def tasks_without_images(ws: Workspace, *, max_rank: int | None = None) -> list[tuple[str, str]]:
    """(node id, path) of live task types that no image was matched to."""
    counts = match_counts(ws, max_rank=max_rank)
    return [(n.id, p) for n, p in Taxonomy.of(ws).leaves() if counts.get(n.id, 0) == 0]


def no_image_line(ws: Workspace, *, max_rank: int | None = None) -> str:
    """"N of M task types have no image": M is the number of task types (`match_counts` lists each once, with 0
    for those no image was matched to), so the figure and its total come from one count."""
    counts = match_counts(ws, max_rank=max_rank)
    empty = sum(1 for n in counts.values() if n == 0)
    return f"{empty} of {len(counts)} task types have no image"


def low_score_images(ws: Workspace, threshold: float | None = None) -> list[dict]:
    """Images whose best match scores below the threshold (default `[match] low_score_threshold`)."""
    th = ws.config.match.low_score_threshold if threshold is None else float(threshold)
    rows = ws.store.query("SELECT image_id, node_id, score FROM matches WHERE rank=1 AND score < ? ORDER BY score",
                          (th,))
    return [{"image_id": r["image_id"], "best_node_id": r["node_id"], "best_score": r["score"]} for r in rows]
