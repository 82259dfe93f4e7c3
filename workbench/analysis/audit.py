"""Audit an existing SFT dataset: which of our task types does it cover, how often, what is missing?

Every item's instruction (`audit_read.py`: its first human turn, with the later ones when the first is short,
and the start of the answer when those are short still; public-set boilerplate taken out, `audit_cues.py`)
is embedded with the sentence model (`textembed`) and scored against each task type (`combine`): its cosine
with the task type's name (`TASK_TEXT` filled with the leaf name and with the whole path, averaged) mixed
with its best cosine with the typical instructions under that task type (`audit_exemplars.py`,
EXEMPLAR_WEIGHT), plus the item's format cues (a box, a caption request, OCR tokens, code; CUE_WEIGHT); both
weights fitted on the dev split (`benchmarks/eval_audit.py --fit`). When the dataset has its own task field
(`task`, `task_name`, `category`, ... or `--task-field`), that label, embedded the same way, is added as
evidence (`OWN_WEIGHT` x its cosine with each task type) wherever it agrees with the instructions on the whole
(`OWN_AGREE`). The top-k task types and their scores are kept; where the image pass ran (`audit_image.py`),
its fused text+image top-k is read instead (`fused_status`). The
top-1 task type counts the item when its score reaches `min_score` (below it the item is "unassigned":
instructions such as "What is this?" name no task). The own task field is also cross-tabulated. Measured
quality and the per-item confidence: `audit_quality.py` (figures from `benchmarks/eval_audit.py`).

Reading and the input checks (what is refused, with one line): `audit_read.py`.

Text backends (`audit_embed.py`): `minilm` (the default, the reference) or `static` (model2vec distilled
locally from the same model: 1 M items in ~1-2 min, but ~43-63 % top-1 agreement with minilm); the backend
is stored with the audit (`text_backend`) and a resume never mixes two. Measured (`benchmarks/bench_audit.py`,
2 cores): minilm ~770 items/s on data with 44 % distinct instructions (1 M in ~21 min; ~52 min if all are
distinct); the LLM label sample (`audit_label.py`) is the way to check either backend. A larger sentence model
(all-mpnet-base-v2, 438 MB, as a local `text_embedding.model` folder) was tried on the dev split with the weights
fitted for MiniLM: top-1 category accuracy 0.901 against MiniLM's 0.895, for ~2.5x the embedding time: not adopted.

Scale: items are processed in chunks (`chunk_size`); each chunk's result (top-k columns and scores, own
labels, the tasks key, and the text vectors of its distinct instructions in float16) is written to
`arrays/audit/<dir>/chunk-NNNNNN.npz` before the next starts, so a stopped audit resumes at the first
missing chunk; after a taxonomy change a re-run only re-assigns, from the stored vectors (no item embedded
again; only task-type texts not in the workspace's vector cache, counted in `task_texts_embedded`).
`items.jsonl` holds each item's id, instruction, image and own label (`audit_items`). A stored audit made
from other data or settings is replaced only with `replace`; a second audit of one name at once is refused
(a lock file beside its folder). Within a chunk, repeated instructions are embedded once and texts are sorted by length
(less padding per batch). The `audit_datasets` table (component `audit`, `analysis/schema.py`) holds progress and
the summary.

API (used by the dashboard, and by `audit_run.run_audit`: the whole `workbench audit` command):
    audit(ws, dataset, name=...) -> AuditResult          run or resume; stores the summary
    audit_items(ws, name, category=, task_type=, limit=) one row per item: instruction, image, top-k, confidence
    list_audits(ws) -> DataFrame                         the stored audits
    item_counts(ws, name) -> Series                      assigned items per task type (node id)
    audit_frame(ws, name) -> DataFrame                   coverage.node_frame with `items` summed over subtrees
    summarise(ws, name) -> dict                          the figures (stored by `audit`)
    crosstab(ws, name) -> DataFrame                      the dataset's own task field x our first level
    compare(ws, a, b) -> DataFrame                       two audits (or SELECTED: this workspace's selected
                                                         samples) side by side, per task type and category
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.analysis import audit_embed, audit_exemplars
from workbench.analysis.audit_cues import CUES, cue_matrix
from workbench.analysis.audit_embed import embed
from workbench.analysis.audit_quality import confidence_levels
from workbench.analysis.audit_read import Items, read_items
from workbench.analysis.coverage import load_counts, long_tail, node_frame
from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.taxonomy.model import Taxonomy
from workbench.taxonomy.names import SEP

TOP_K = 5
IMAGE_FILE = "image.npz"    # the image pass's top-k and fused top-k (audit_image.py), in the audit's folder
CHUNK_SIZE = 8192
MIN_SCORE = 0.25            # top-1 score below which an item counts as unassigned
SELECTED = "selected"       # compare() with this name: the workspace's own selected samples
# How a task type is phrased for comparison with instructions: its vector is the mean of this template
# filled with the bare leaf name and with the whole path ("a > b > c" as words). Chosen on the dev split of
# benchmarks/eval_audit.py (0.757 -> 0.784 top-1 category accuracy over "a question asking for <leaf>";
# hubness correction and centring the instructions gained nothing there).
TASK_TEXT = "a visual question about {}"
# Weight of the dataset's own task label (embedded like a task type) added to the instruction's cosine.
# On the dev split of benchmarks/eval_audit.py (items with their `task` field): 0 -> 0.764, 0.3 -> 0.838,
# 0.5 -> 0.878, 0.7 -> 0.885, 1.0 -> 0.905, 1.5 -> 0.878; 0.7 sits on the plateau below the peak, as fields in
# the wild say less than these ("conv", "detail") and should not outvote the instruction.
OWN_WEIGHT = 0.7
# A label counts as evidence only where it agrees with the instructions on the whole: at least this share of
# its items (in the chunk) have their text-only top-1 in the label's own first-level category. A field that
# says little ("conv" of LLaVA-Instruct) would otherwise pull all its items to whatever it resembles. On the dev
# split: one uninformative label on every item ("conv", "vqa", "general") cost 2.5-4 points without this check
# and nothing with it; on the items' real labels 0 -> 0.858, 0.1 -> 0.833, 0.3 -> 0.809.
OWN_AGREE = 0.1
# The instruction's score for a task type mixes its cosine with the task type's name (TASK_TEXT) and the
# better of that and its best cosine with the typical instructions under it (audit_exemplars.py):
# (1 - EXEMPLAR_WEIGHT) x name + EXEMPLAR_WEIGHT x max(name, examples); a task type never scores less than its
# name alone ("Which species of bird is this?" stays with "bird species identification"). Format cues
# (audit_cues.py) add CUE_WEIGHT x their cosine with each task type, scaled to 1 at the nearest one.
# Fitted on the dev split of benchmarks/eval_audit.py (`--fit`, a grid over both weights, instruction only);
# see the numbers there and in ARCHITECTURE.md.
EXEMPLAR_WEIGHT = 0.5
CUE_WEIGHT = 0.3
QUERY_VERSION = 2           # how the embedded text is made (audit_read, audit_cues): other stored vectors are redone


@dataclass
class AuditResult:
    name: str
    items: int
    done: int
    resumed_from: int            # items already assigned by an earlier run
    seconds: float
    summary: dict = field(default_factory=dict)
    text_backend: str = "minilm"   # audit_embed.tag(): how the vectors were made
    reused_vectors: int = 0        # items whose stored text vectors were reused (a taxonomy change)
    task_texts_embedded: int = 0   # task-type/example/cue texts embedded anew (a rename: its two; the rest cached)
    truncated: int = 0             # instructions cut at audit_read.MAX_CHARS


# -- assigning ---------------------------------------------------------------------------------------

def _tasks(ws: Workspace):
    idx = Taxonomy.of(ws).index()
    leaves = [n.id for n in idx.leaves()]
    if not leaves:
        raise WorkbenchError("the workspace has no task types to audit against: import a taxonomy first "
                             "(`workbench taxonomy import` or `workbench init --seed`)")
    return idx, leaves


def task_vectors(ws: Workspace, idx, leaves, backend: str = "minilm") -> np.ndarray:
    model = ws.config.text_embedding.model
    leaf = audit_embed.task_vectors(ws, [TASK_TEXT.format(idx.nodes[i].name) for i in leaves], backend, model)
    path = audit_embed.task_vectors(ws, [TASK_TEXT.format(idx.paths[i].replace(SEP, " ")) for i in leaves],
                                    backend, model)
    v = leaf + path
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass
class Evidence:
    """What an instruction's vector is scored against: the task types' name vectors, the typical
    instructions (their vectors, and per example group the task-type columns it counts for) and the
    format cues' scaled cosines with each task type."""

    task_vecs: np.ndarray
    ex_vecs: np.ndarray
    ex_owner: np.ndarray
    ex_cols: list[list[int]]
    cue_sims: np.ndarray
    key: str
    embedded: int = 0           # task-type, example and cue texts embedded anew (the rest came from the cache)


def evidence(ws: Workspace, idx, leaves, backend: str = "minilm") -> Evidence:
    model = ws.config.text_embedding.model
    texts, cols, owner = audit_exemplars.groups(audit_exemplars.load(ws.root), idx, leaves)
    names = [TASK_TEXT.format(idx.nodes[i].name) for i in leaves] + [
        TASK_TEXT.format(idx.paths[i].replace(SEP, " ")) for i in leaves]
    fresh = audit_embed.new_task_texts(ws, names + texts + [c[1] for c in CUES], backend, model)
    tv = task_vectors(ws, idx, leaves, backend)
    ev = audit_embed.task_vectors(ws, texts, backend, model) if texts else np.zeros((0, tv.shape[1]), np.float32)
    cs = audit_embed.task_vectors(ws, [c[1] for c in CUES], backend, model) @ tv.T
    cs = cs - cs.mean(axis=1, keepdims=True)
    cs = np.clip(cs / np.maximum(cs.max(axis=1, keepdims=True), 1e-6), 0.0, None)
    key = hashlib.sha256(repr((texts, cols)).encode()).hexdigest()[:12]
    return Evidence(tv, ev.astype(np.float32), np.asarray(owner, np.int32), cols, cs.astype(np.float32), key,
                    fresh)


def combine(vecs: np.ndarray, ev: Evidence, cues: np.ndarray | None, w_ex: float | None = None,
            w_cue: float | None = None) -> np.ndarray:
    """(items, task types) scores: the name cosine mixed with max(name, best example) (EXEMPLAR_WEIGHT), plus the
    format cues' evidence (CUE_WEIGHT). cues: (items, len(CUES)) 0/1 or None."""
    w_ex = EXEMPLAR_WEIGHT if w_ex is None else w_ex
    w_cue = CUE_WEIGHT if w_cue is None else w_cue
    name = vecs @ ev.task_vecs.T
    sims = name
    if w_ex and len(ev.ex_vecs):
        es = vecs @ ev.ex_vecs.T
        best = name.copy()
        for g, cols in enumerate(ev.ex_cols):
            best[:, cols] = np.maximum(best[:, cols], es[:, ev.ex_owner == g].max(axis=1, keepdims=True))
        sims = (1 - w_ex) * name + w_ex * best
    if w_cue and cues is not None and len(cues):
        sims = sims + w_cue * (cues @ ev.cue_sims)
    return sims.astype(np.float32)


def embed_unique(texts: list[str], model: str | None, ws: Workspace | None = None,
                 backend: str = "minilm") -> tuple[np.ndarray, np.ndarray]:
    """(vectors of the distinct texts, each item's row in them): each distinct text embedded once, sorted by
    length (less padding per batch)."""
    uniq, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    order = sorted(range(len(uniq)), key=lambda i: len(uniq[i]))
    vecs = embed(ws, [uniq[i] or "(no instruction)" for i in order], backend, model)  # type: ignore[arg-type]
    out = np.empty_like(vecs)
    out[order] = vecs
    return out, inverse.astype(np.int32)


def own_bias(ws: Workspace, labels: list[str | None], idx, leaves, backend: str) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's own task labels as evidence: (per distinct label, OWN_WEIGHT x the cosine of
    TASK_TEXT(label) with each task type, shape (labels, task types); each item's row). An empty label adds 0."""
    uniq, inverse = np.unique(np.asarray(["" if t is None else t for t in labels], dtype=object),
                              return_inverse=True)
    texts = [TASK_TEXT.format(str(u).replace("_", " ")) for u in uniq]
    sims = embed(ws, texts, backend, ws.config.text_embedding.model) @ task_vectors(ws, idx, leaves, backend).T
    sims[np.asarray([not u for u in uniq])] = 0.0
    return (OWN_WEIGHT * sims).astype(np.float32), inverse.astype(np.int32)


def consistent_labels(bias: np.ndarray, inverse: np.ndarray, text_sims: np.ndarray, cats: np.ndarray) -> np.ndarray:
    """Per distinct own label: 1.0 when at least OWN_AGREE of its items' text-only top-1 task types lie in the
    label's own top-1 first-level category (`cats`: category number per task type), else 0.0."""
    text_cat = cats[text_sims.argmax(1)]
    label_cat = cats[bias.argmax(1)]
    keep = np.zeros(len(bias), np.float32)
    for j in range(len(bias)):
        mine = text_cat[inverse == j]
        keep[j] = float(len(mine) > 0 and bias[j].any() and (mine == label_cat[j]).mean() >= OWN_AGREE)
    return keep


def assign(vecs: np.ndarray, task_vecs: np.ndarray, top_k: int,
           bias: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(columns (n, k) int32, scores (n, k) float32), best first. bias: (n, task types) added to the cosines
    (the own task field's evidence)."""
    sims = vecs @ task_vecs.T
    if bias is not None:
        sims = sims + bias
    return top_k_of(sims, top_k)


def top_k_of(sims: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns (n, k) int32, scores (n, k) float32) of a score matrix, best first."""
    k = min(top_k, sims.shape[1])
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    ps = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-ps, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int32), np.take_along_axis(ps, order, axis=1)


def _dir_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]
    return f"{safe}-{hashlib.blake2b(name.encode(), digest_size=4).hexdigest()}"


@contextmanager
def _running(ws: Workspace, name: str):
    """Held while an audit of `name` runs: a second one of the same name (any process) is refused."""
    import filelock

    d = ws.arrays_dir / "audit"
    d.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(d / f"{_dir_name(name)}.lock"), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise WorkbenchError(f"an audit named {name!r} is running right now (another process holds "
                             f"{lock.lock_file}); wait for it to finish, or use another --name") from None
    try:
        yield
    finally:
        lock.release()


def _prepare(ws: Workspace, name: str, d: Path, params: tuple, fmt: str, field_used: str | None, model: str,
             key: str, btag: str, replace: bool) -> str | None:
    """Make the audit's row and folder ready: a new audit, a resume, a re-assignment after a taxonomy change
    (the stored text vectors are reused) or, with `replace`, a fresh start. Refuses to drop a stored audit
    unasked. Returns the tasks key the stored chunks without one were made with."""
    row = ws.store.query("SELECT source, items, chunk_size, top_k, COALESCE(text_backend, 'minilm'), done, "
                         "status, updated_at, tasks_key FROM audit_datasets WHERE name=?", (name,))
    now = utcnow()
    if row and not replace:
        r = row[0]
        if tuple(r[:4]) == params[:4] and r[4] != btag and r[5] > 0:
            # never mix vectors of two backends in one audit, and never throw the stored ones away unasked
            raise WorkbenchError(f"audit {name!r} was made with the text backend {r[4]}; resume it with "
                                 f"--text-backend {r[4].split('-')[0]}, audit under another --name to compare "
                                 "backends, or give --replace to start it again")
        if tuple(r[:4]) != params[:4] or r[4] != btag:
            raise WorkbenchError(f"an audit named {name!r} is already stored ({r[1]:,} item(s) of {r[0]}, "
                                 f"{r[2]:,} per chunk, top-{r[3]}; {r[6]}, {r[7]}); give --replace to replace it, "
                                 "or use another --name")
        if r[8] != key:          # the taxonomy changed: re-assign, reusing the text vectors
            with ws.store.write() as c:
                c.execute("UPDATE audit_datasets SET tasks_key=?, done=0, status='running', summary=NULL, "
                          "updated_at=? WHERE name=?", (key, now, name))
        return r[8]
    if d.exists():
        shutil.rmtree(d)
    with ws.store.write() as c:
        c.execute("DELETE FROM audit_labels WHERE audit=?", (name,))
        c.execute("DELETE FROM audit_datasets WHERE name=?", (name,))
        c.execute("INSERT INTO audit_datasets(name, source, format, items, done, chunk_size, top_k, model, "
                  "tasks_key, task_field, array_dir, status, created_at, updated_at, text_backend) "
                  "VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                  (name, params[0], fmt, params[1], params[2], params[3], model, key, field_used,
                   str(d.relative_to(ws.root)), now, now, btag))
    return None


def _write_items(d: Path, items: Items) -> None:
    """items.jsonl: per item [id, instruction, image, own task label], what `audit_items` shows."""
    f = d / "items.jsonl"
    if f.exists():
        return
    tmp = d / "items.tmp.jsonl"
    tasks = items.tasks or [None] * len(items.ids)
    with tmp.open("w", encoding="utf-8") as out:
        for row in zip(items.ids, items.instructions, items.images, tasks):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, f)


def _chunk_key(f: Path, old_key: str | None) -> str | None:
    """The tasks key a stored chunk was assigned with (chunks from before keys were stored: `old_key`)."""
    try:
        with np.load(f) as z:
            return str(z["key"]) if "key" in z.files else old_key
    except (OSError, ValueError):
        return None               # unreadable: computed again


def _assign_chunk(ws: Workspace, d: Path, i: int, texts: list[str], own: list[str | None] | None, key: str,
                  ctx: dict, cues: list[int] | None = None) -> bool:
    """Assign one chunk and store it (vectors too, for a re-assignment after a taxonomy change). Returns
    whether the stored text vectors were reused."""
    f = d / f"chunk-{i:06d}.npz"
    uvecs = inv = None
    if f.exists():
        try:
            with np.load(f) as z:
                if "uvecs" in z.files and len(z["inv"]) == len(texts) and "qv" in z.files \
                        and int(z["qv"]) == QUERY_VERSION:
                    uvecs, inv = z["uvecs"].astype(np.float32), z["inv"]
        except (OSError, ValueError):
            pass
    reused = uvecs is not None
    if uvecs is None:
        uvecs, inv = embed_unique(texts, ctx["model"], ws, ctx["backend"])
    vecs = uvecs[inv]
    sims = combine(vecs, ctx["evidence"], cue_matrix(cues) if cues else None)
    if own is not None and OWN_WEIGHT:
        ob, oinv = own_bias(ws, own, ctx["idx"], ctx["leaves"], ctx["backend"])
        ob *= consistent_labels(ob, oinv, sims, ctx["cats"])[:, None]
        sims = sims + ob[oinv]
    cols, scores = top_k_of(sims, ctx["top_k"])
    own_arr = np.asarray(["" if t is None else t for t in own], dtype=str) if own is not None else np.zeros(0, "U1")
    tmp = d / f"chunk-{i:06d}.tmp.npz"
    np.savez(tmp, cols=cols, scores=scores.astype(np.float16), own=own_arr, key=np.asarray(key),
             uvecs=uvecs.astype(np.float16), inv=inv, qv=np.asarray(QUERY_VERSION))
    os.replace(tmp, f)   # a chunk is either whole or absent
    return reused


def audit(ws: Workspace, dataset: str | Path, *, name: str | None = None, fmt: str | None = None,
          task_field: str | None = None, top_k: int = TOP_K, chunk_size: int = CHUNK_SIZE,
          min_score: float = MIN_SCORE, max_chunks: int | None = None, text_backend: str | None = None,
          replace: bool = False, on_chunk: Callable[[int, int], None] | None = None) -> AuditResult:
    """Assign every item of `dataset` to task types (resuming a stopped audit of the same name, source and
    text backend; after a taxonomy change only the assignment is redone, from the stored text vectors) and
    store the summary. A stored audit of this name made from other data is replaced only with `replace`;
    a second audit of one name at once is refused. max_chunks: stop after that many new chunks (the rest
    on the next call). text_backend: `audit_embed.BACKENDS` (default `audit_embed.default_backend()`)."""
    import time

    t0 = time.monotonic()
    if top_k < 1 or chunk_size < 1:
        raise WorkbenchError("--top-k and --chunk-size must be at least 1")
    dataset = Path(dataset)
    name = name or dataset.stem
    items = read_items(dataset, fmt, task_field)
    texts, tasks = items.queries, items.tasks
    idx, leaves = _tasks(ws)
    model = ws.config.text_embedding.model
    backend = audit_embed.check_backend(text_backend or audit_embed.default_backend())
    btag = audit_embed.tag(backend, model)
    ev = evidence(ws, idx, leaves, backend)
    key = hashlib.sha256(json.dumps([model, [(i, idx.paths[i]) for i in leaves], OWN_WEIGHT, OWN_AGREE,
                                     TASK_TEXT, EXEMPLAR_WEIGHT, CUE_WEIGHT, ev.key, QUERY_VERSION,
                                     [c[1] for c in CUES]]).encode()).hexdigest()[:16]
    params = (str(dataset.resolve()), len(texts), chunk_size, top_k)
    d = ws.arrays_dir / "audit" / _dir_name(name)
    with _running(ws, name):
        old_key = _prepare(ws, name, d, params, items.fmt, items.task_field, model, key, btag, replace)
        d.mkdir(parents=True, exist_ok=True)
        _write_items(d, items)
        (d / "tasks.json").write_text(json.dumps(leaves))
        first = [idx.paths[i].split(SEP)[0] for i in leaves]
        ctx = {"model": model, "backend": backend, "idx": idx, "leaves": leaves, "top_k": top_k,
               "task_vecs": ev.task_vecs, "evidence": ev,
               "cats": np.unique(first, return_inverse=True)[1]}
        n_chunks = math.ceil(len(texts) / chunk_size)
        size = lambda i: min(chunk_size, len(texts) - i * chunk_size)
        have = {i for i in range(n_chunks) if _chunk_key(d / f"chunk-{i:06d}.npz", old_key) == key}
        resumed = sum(size(i) for i in have)
        new, done, reused = 0, resumed, 0
        for i in range(n_chunks):
            if i in have:
                continue
            if max_chunks is not None and new >= max_chunks:
                break
            lo, hi = i * chunk_size, i * chunk_size + size(i)
            reused += size(i) * _assign_chunk(ws, d, i, texts[lo:hi], tasks[lo:hi] if tasks else None, key, ctx,
                                              items.cues[lo:hi])
            new += 1
            done += hi - lo
            with ws.store.write() as c:
                c.execute("UPDATE audit_datasets SET done=?, updated_at=? WHERE name=?", (done, utcnow(), name))
            if on_chunk:
                on_chunk(done, len(texts))
        result = AuditResult(name, len(texts), done, resumed, 0.0, text_backend=btag, reused_vectors=reused,
                             truncated=items.truncated, task_texts_embedded=ev.embedded)
        if done >= len(texts):
            result.summary = summarise(ws, name, min_score=min_score)
            result.summary["truncated"] = items.truncated
            with ws.store.write() as c:
                c.execute("UPDATE audit_datasets SET done=?, status='done', summary=?, updated_at=? WHERE name=?",
                          (done, json.dumps(result.summary), utcnow(), name))
    result.seconds = time.monotonic() - t0
    return result


# -- reading results ---------------------------------------------------------------------------------

def list_audits(ws: Workspace) -> pd.DataFrame:
    rows = ws.store.query("SELECT name, source, format, items, done, status, task_field, model, "
                          "COALESCE(text_backend, 'minilm'), updated_at FROM audit_datasets ORDER BY name")
    return pd.DataFrame([tuple(r) for r in rows], columns=["name", "source", "format", "items", "done", "status",
                                                          "task_field", "model", "text_backend", "updated_at"])


def _meta(ws: Workspace, name: str):
    row = ws.store.query("SELECT array_dir, items, done, chunk_size FROM audit_datasets WHERE name=?", (name,))
    if not row:
        known = ", ".join(list_audits(ws)["name"]) or "none yet"
        raise WorkbenchError(f"no audit named {name!r} in this workspace (stored: {known}); run "
                             "`workbench audit WORKSPACE DATASET --name NAME` first")
    return row[0]


def load_assignments(ws: Workspace, name: str, fused: bool = True):
    """(task-type node ids, columns (n, k), scores (n, k), own labels (n,) or None) of a stored audit: the
    chunks assigned against the current task types (after a taxonomy change, until it is re-run, fewer).
    fused: items the image pass fused (`audit_image.fuse`) carry the fused top-k (False: the text's)."""
    leaves, _, cols, scores, own, _ = _assigned(ws, name, fused)
    return leaves, cols, scores, own


def _assigned(ws: Workspace, name: str, fused: bool = True):
    """load_assignments with each row's item position in the dataset (a stopped audit has gaps) and whether
    the row is the fused text+image assignment."""
    array_dir, items, done, chunk_size = _meta(ws, name)
    key = ws.store.query("SELECT tasks_key FROM audit_datasets WHERE name=?", (name,))[0][0]
    d = ws.root / array_dir
    leaves = json.loads((d / "tasks.json").read_text())
    files = sorted(d.glob("chunk-[0-9]*.npz"))
    files = [f for f in files if not f.name.endswith(".tmp.npz")]
    cols, scores, own, pos = [], [], [], []
    for f in files:
        with np.load(f) as z:
            if "key" in z.files and str(z["key"]) != key:
                continue
            start = int(f.stem.split("-")[1]) * chunk_size
            pos.append(np.arange(start, start + len(z["cols"]), dtype=np.int64))
            cols.append(z["cols"])
            scores.append(z["scores"].astype(np.float32))
            own.append(z["own"])
    if not cols:
        return (leaves, np.zeros(0, np.int64), np.zeros((0, 1), np.int32), np.zeros((0, 1), np.float32), None,
                np.zeros(0, bool))
    own_all = np.concatenate(own) if own and len(own[0]) else None
    p, c, sc = np.concatenate(pos), np.concatenate(cols), np.concatenate(scores)
    mask = _overlay_fused(d / IMAGE_FILE, key, p, c, sc) if fused else np.zeros(len(p), bool)
    return leaves, p, c, sc, own_all, mask


def _overlay_fused(f: Path, key: str, pos: np.ndarray, cols: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Put the image pass's fused top-k (when it was made against the current task types) over the text's,
    in place; returns which rows now hold it."""
    mask = np.zeros(len(pos), bool)
    if not f.exists():
        return mask
    with np.load(f) as z:
        if "fcols" not in z.files or str(z["fkey"]) != key or not len(z["item"]):
            return mask
        item, fcols, fscores = z["item"], z["fcols"], z["fscores"].astype(np.float32)
    rows = np.searchsorted(pos, item).clip(0, max(len(pos) - 1, 0))
    ok = pos[rows] == item
    k = min(cols.shape[1], fcols.shape[1])
    cols[rows[ok], :k], scores[rows[ok], :k] = fcols[ok, :k], fscores[ok, :k]
    mask[rows[ok]] = True
    return mask


def fused_status(ws: Workspace, name: str) -> dict:
    """{"assignment": "text+image" or "text", "fused_items": n, "image_out_of_date": whether an image pass
    exists but was fused against other task types (a taxonomy change since: run it again)}."""
    array_dir = _meta(ws, name)[0]
    key = ws.store.query("SELECT tasks_key FROM audit_datasets WHERE name=?", (name,))[0][0]
    f = ws.root / array_dir / IMAGE_FILE
    n, stale = 0, False
    if f.exists():
        with np.load(f) as z:
            if "fcols" in z.files:
                stale = str(z["fkey"]) != key
                n = 0 if stale else int(len(z["item"]))
    return {"assignment": "text+image" if n else "text", "fused_items": n, "image_out_of_date": stale}


def _item_meta(ws: Workspace, name: str) -> pd.DataFrame:
    """id, instruction, image, task_field per item (items.jsonl; audits made before it: read from the source)."""
    array_dir, = ws.store.query("SELECT array_dir FROM audit_datasets WHERE name=?", (name,))[0]
    f = ws.root / array_dir / "items.jsonl"
    cols = ["id", "instruction", "image", "task_field"]
    if f.exists():
        with f.open(encoding="utf-8") as fh:
            return pd.DataFrame([json.loads(line) for line in fh], columns=cols)
    source, fmt, field_used = ws.store.query("SELECT source, format, task_field FROM audit_datasets WHERE name=?",
                                             (name,))[0]
    it = read_items(Path(source), fmt, field_used)
    return pd.DataFrame({"id": it.ids, "instruction": it.instructions, "image": it.images,
                         "task_field": it.tasks or [None] * len(it.ids)}, columns=cols)


def audit_items(ws: Workspace, name: str, *, category: str | None = None, task_type: str | None = None,
                limit: int | None = None, min_score: float = MIN_SCORE) -> pd.DataFrame:
    """The items of audit `name`, one row each: item (position in the dataset), id, instruction, image,
    task_field (the dataset's own label), top1_path, top1_score, confidence (high/medium/low, from the
    top-1/top-2 margin calibrated by benchmarks/eval_audit.py), topk (list of (path, score), best first),
    margin, assigned (top-1 score >= min_score) and assignment ("text+image" where the image pass fused it,
    else "text"). Filters: category (first-level name of the top-1, or
    "(unassigned)"), task_type (the top-1's node id or path). limit: the first N matching rows."""
    leaves, item_pos, cols, scores, _, fused = _assigned(ws, name)
    paths = Taxonomy.of(ws).index(None).paths   # every node: a task type since demoted still has its path
    lp = np.array([paths.get(n, f"(removed task type {n})") for n in leaves], dtype=object)
    n = len(cols)
    top1 = lp[cols[:, 0]] if n else np.zeros(0, object)
    assigned = scores[:, 0] >= min_score if n else np.zeros(0, bool)
    cat = np.array([p.split(SEP)[0] for p in top1], dtype=object)
    keep = np.ones(n, bool)
    if category is not None:
        keep &= np.where(assigned, cat, "(unassigned)") == category
    if task_type is not None:
        node = np.asarray(leaves, dtype=object)[cols[:, 0]] if n else np.zeros(0, object)
        keep &= (node == task_type) | (top1 == task_type)
    pos = np.flatnonzero(keep)[:limit] if limit is not None else np.flatnonzero(keep)
    meta = (_item_meta(ws, name).iloc[item_pos[pos]] if len(pos)
            else pd.DataFrame(columns=["id", "instruction", "image", "task_field"]))
    margin = (scores[pos, 0] - scores[pos, 1]) if scores.shape[1] > 1 else np.ones(len(pos), np.float32)
    out = pd.DataFrame({"item": item_pos[pos], "id": meta["id"].to_numpy(),
                        "instruction": meta["instruction"].to_numpy(), "image": meta["image"].to_numpy(),
                        "task_field": meta["task_field"].to_numpy(), "top1_path": top1[pos],
                        "top1_score": scores[pos, 0].astype(float),
                        "confidence": confidence_levels(margin, scores[pos, 0], min_score),
                        "topk": [[(lp[c], round(float(s), 4)) for c, s in zip(cols[i], scores[i])] for i in pos],
                        "margin": margin.astype(float), "assigned": assigned[pos],
                        "assignment": np.where(fused[pos], "text+image", "text")})
    return out.reset_index(drop=True)


def item_counts(ws: Workspace, name: str, min_score: float = MIN_SCORE) -> pd.Series:
    """Assigned items (top-1 score >= min_score) per task type, indexed by node id (every audited task type)."""
    leaves, cols, scores, _ = load_assignments(ws, name)
    ok = scores[:, 0] >= min_score if len(scores) else np.zeros(0, bool)
    counts = np.bincount(cols[ok, 0], minlength=len(leaves)) if len(cols) else np.zeros(len(leaves), np.int64)
    return pd.Series(counts.astype(np.int64), index=pd.Index(leaves, name="node_id"), name="items")


def _frame_from_counts(ws: Workspace, counts: pd.Series) -> pd.DataFrame:
    idx = Taxonomy.of(ws).index()
    df = node_frame(idx, pd.DataFrame({"samples": counts}))
    return df.rename(columns={"samples": "items", "with_samples": "with_items", "cov_samples": "cov_items"})


def audit_frame(ws: Workspace, name: str, min_score: float = MIN_SCORE) -> pd.DataFrame:
    """One row per live node (coverage.node_frame) with `items` summed over subtrees, `with_items` (task
    types in the subtree with at least one) and `cov_items` (their share)."""
    return _frame_from_counts(ws, item_counts(ws, name, min_score))


def summarise(ws: Workspace, name: str, min_score: float = MIN_SCORE, top: int = 10) -> dict:
    _, cols, scores, own = load_assignments(ws, name)
    counts = item_counts(ws, name, min_score)
    frame = _frame_from_counts(ws, counts)
    leaves = frame[frame["is_leaf"]]
    n_tt = len(leaves)
    assigned = int(leaves["items"].sum())
    vals = leaves["items"].to_numpy()
    top1 = max(1, math.ceil(n_tt * 0.01))
    expected = assigned / n_tt if n_tt else 0.0
    over = leaves.sort_values("items", ascending=False).head(top)
    cats = frame[frame["level"] == 1][["name", "items", "task_types", "with_items"]]
    none = leaves[leaves["items"] == 0]["path"].tolist()
    return {
        "items": int(len(cols)), "assigned": assigned, "unassigned": int(len(cols) - assigned),
        "min_score": min_score, "task_types": n_tt, "with_items": int((vals > 0).sum()),
        "none": len(none), "none_paths": none[:200],
        "categories_without_items": cats[cats["items"] == 0]["name"].tolist(),
        "over_represented": [{"path": r.path, "items": int(r["items"]),
                              "share": float(r["items"] / assigned) if assigned else 0.0,
                              "x_uniform": float(r["items"] / expected) if expected else 0.0}
                             for _, r in over.iterrows() if r["items"] > 0],
        "top1pct_task_types": top1,
        "top1pct_share": float(np.sort(vals)[::-1][:top1].sum() / assigned) if assigned else 0.0,
        "long_tail": long_tail(vals),
        "by_category": {r["name"]: int(r["items"]) for _, r in cats.iterrows()},
        "median_top1_score": float(np.median(scores[:, 0])) if len(scores) else 0.0,
        "confidence": _confidence_counts(scores, min_score),
        "own_task_field": own is not None,
        **fused_status(ws, name),
        "text_backend": ws.store.query("SELECT COALESCE(text_backend, 'minilm') FROM audit_datasets WHERE name=?",
                                       (name,))[0][0],
    }


def store_summary(ws: Workspace, name: str, summary: dict) -> None:
    """Replace the audit's stored summary (after the image pass fused its items)."""
    with ws.store.write() as c:
        c.execute("UPDATE audit_datasets SET summary=?, updated_at=? WHERE name=?",
                  (json.dumps(summary), utcnow(), name))


def _confidence_counts(scores: np.ndarray, min_score: float) -> dict:
    """Items per confidence level (audit_quality.confidence_levels)."""
    if not len(scores):
        return {}
    margin = scores[:, 0] - scores[:, 1] if scores.shape[1] > 1 else np.ones(len(scores), np.float32)
    levels, counts = np.unique(confidence_levels(margin, scores[:, 0], min_score).astype(str), return_counts=True)
    return {str(k): int(v) for k, v in zip(levels, counts)}


def crosstab(ws: Workspace, name: str, min_score: float = MIN_SCORE) -> pd.DataFrame:
    """Items per (the dataset's own task label, our first-level category of the top-1 task type);
    "(unassigned)" below min_score. Empty when the dataset has no task field."""
    leaves, cols, scores, own = load_assignments(ws, name)
    if own is None or not len(cols):
        return pd.DataFrame()
    idx = Taxonomy.of(ws).index()
    cat = np.array([idx.paths[i].split(SEP)[0] if i in idx.paths else "(removed)" for i in leaves], dtype=object)
    ours = np.where(scores[:, 0] >= min_score, cat[cols[:, 0]], "(unassigned)")
    return pd.crosstab(pd.Series(own, name="own_task"), pd.Series(ours, name="our_category"))


def selected_counts(ws: Workspace) -> pd.Series:
    """This workspace's selected samples per task type (node id)."""
    c = load_counts(ws.store)
    return c["selected"].rename("items") if "selected" in c else pd.Series(dtype="int64", name="items")


def compare(ws: Workspace, a: str, b: str = SELECTED, min_score: float = MIN_SCORE) -> pd.DataFrame:
    """Two audits side by side (b = SELECTED: the workspace's selected samples): one row per live node
    with items_a, items_b (subtree sums), share_a, share_b (of each side's assigned items) and diff
    (share_b - share_a). Columns id, path, level, is_leaf, category come from coverage.node_frame."""
    ca = item_counts(ws, a, min_score)
    cb = selected_counts(ws) if b == SELECTED else item_counts(ws, b, min_score)
    fa, fb = _frame_from_counts(ws, ca), _frame_from_counts(ws, cb)
    out = fa[["id", "path", "name", "level", "is_leaf", "category"]].copy()
    out["items_a"], out["items_b"] = fa["items"].to_numpy(), fb["items"].to_numpy()
    ta = out.loc[out["is_leaf"], "items_a"].sum()
    tb = out.loc[out["is_leaf"], "items_b"].sum()
    out["share_a"] = out["items_a"] / ta if ta else 0.0
    out["share_b"] = out["items_b"] / tb if tb else 0.0
    out["diff"] = out["share_b"] - out["share_a"]
    return out
