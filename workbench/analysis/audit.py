"""Audit an existing SFT dataset: which of our task types does it cover, how often, what is missing?

Every item's first human turn (`<image>` tokens stripped) is embedded with the sentence model
(`textembed`) and compared with the task types (`TASK_TEXT`: "a question asking for <name>"); the top-k
task types and their cosine scores are kept. The top-1 task type counts the item when its score reaches `min_score`
(below it the item is "unassigned": instructions such as "What is this?" name no task). The dataset's own
task field, when it has one, is kept beside the assignment and cross-tabulated, not trusted.

Reads LLaVA JSON (a list of {"id", "image", "conversations": [{"from": "human", "value"}, ...]}), JSONL,
ShareGPT (the same `conversations`, or OpenAI-style `messages` with role/content), Parquet files (or a
folder of them) and Hugging Face `datasets` folders (`save_to_disk`).

Text backends (`audit_embed.py`): `minilm` (the default, the reference) or `static` (model2vec distilled
locally from the same model: 1 M items in ~1-2 min, but ~43-63 % top-1 agreement with minilm); the backend
is stored with the audit (`text_backend`) and a resume never mixes two. Measured (`benchmarks/bench_audit.py`,
2 cores): minilm ~770 items/s on data with 44 % distinct instructions (1 M in ~21 min; ~52 min if all are
distinct); the LLM label sample (`audit_label.py`) is the way to check either backend.

Scale: items are processed in chunks (`chunk_size`); each chunk's result is written to
`arrays/audit/<dir>/chunk-NNNNNN.npz` before the next starts, so a stopped audit resumes at the first
missing chunk. Within a chunk, repeated instructions are embedded once and texts are sorted by length
(less padding per batch). The `audit_datasets` table (component `audit`, `analysis/schema.py`) holds progress and
the summary.

API (used by the dashboard, and by `audit_run.run_audit`: the whole `workbench audit` command):
    audit(ws, dataset, name=...) -> AuditResult          run or resume; stores the summary
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.analysis import audit_embed
from workbench.analysis.audit_embed import embed
from workbench.analysis.coverage import load_counts, long_tail, node_frame
from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.taxonomy.model import Taxonomy
from workbench.taxonomy.names import SEP

TOP_K = 5
CHUNK_SIZE = 8192
MIN_SCORE = 0.25            # top-1 score below which an item counts as unassigned
SELECTED = "selected"       # compare() with this name: the workspace's own selected samples
# How a task type is phrased for comparison with instructions: of the path ("a > b > c"), the bare leaf,
# "the vision task of ..." and this, this put the most of tests/data/llava_sample.json where a reader
# would (the path sent "Describe the image in detail" to "code screenshot explanation").
TASK_TEXT = "a question asking for {}"
TASK_FIELDS = ("task", "task_type", "category", "ability", "type")
_IMAGE_TOKEN = re.compile(r"<image>\s*", re.I)
_SPACE = re.compile(r"\s+")


@dataclass
class AuditResult:
    name: str
    items: int
    done: int
    resumed_from: int            # items already assigned by an earlier run
    seconds: float
    summary: dict = field(default_factory=dict)
    text_backend: str = "minilm"   # audit_embed.tag(): how the vectors were made


# -- reading datasets --------------------------------------------------------------------------------

def _clean(text) -> str:
    if isinstance(text, list):   # OpenAI-style content parts
        text = " ".join(p.get("text", "") for p in text if isinstance(p, dict))
    return _SPACE.sub(" ", _IMAGE_TOKEN.sub(" ", str(text or ""))).strip()


def first_instruction(rec: dict) -> str:
    """The first human/user turn of a LLaVA/ShareGPT/messages record, `<image>` stripped."""
    conv = rec.get("conversations") or rec.get("messages") or rec.get("conversation")
    if isinstance(conv, (list, tuple, np.ndarray)):
        for turn in conv:
            if not isinstance(turn, dict):
                continue
            role = str(turn.get("from") or turn.get("role") or "").lower()
            if role in ("human", "user"):
                return _clean(turn.get("value") if turn.get("value") is not None else turn.get("content"))
    for key in ("instruction", "question", "prompt", "query"):
        if isinstance(rec.get(key), str):
            return _clean(rec[key])
    return ""


def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return "hf-datasets"
        if any(path.glob("*.parquet")):
            return "parquet"
        raise WorkbenchError(f"{path}: a folder that is neither a Hugging Face `datasets` folder (state.json) "
                             "nor a folder of .parquet files")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "llava-json"
    raise WorkbenchError(f"{path}: unknown dataset format {suffix!r}; give a .json, .jsonl or .parquet file, "
                         "or a Hugging Face `datasets` folder")


def _records(path: Path, fmt: str):
    """Records as dicts, in a stable order."""
    if fmt == "llava-json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise WorkbenchError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}); LLaVA JSON is a list "
                                 "of records") from None
        if isinstance(data, dict):   # {"data": [...]} wrappers
            data = next((v for v in data.values() if isinstance(v, list)), None)
        if not isinstance(data, list):
            raise WorkbenchError(f"{path}: expected a JSON list of records (LLaVA format)")
        yield from data
    elif fmt == "jsonl":
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise WorkbenchError(f"{path}: line {n}: not valid JSON ({exc.msg})") from None
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=65536):
                yield from batch.to_pylist()
    elif fmt == "hf-datasets":
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
        for batch in ds.iter(batch_size=65536):
            keys = list(batch)
            yield from (dict(zip(keys, vals)) for vals in zip(*(batch[k] for k in keys)))
    else:
        raise WorkbenchError(f"unknown dataset format {fmt!r}: llava-json, jsonl, parquet or hf-datasets")


def read_dataset(path: str | Path, fmt: str | None = None, task_field: str | None = None):
    """(format, instructions, own task labels or None, the task field used)."""
    path = Path(path)
    if not path.exists():
        raise WorkbenchError(f"{path}: no such file or folder")
    fmt = fmt or detect_format(path)
    texts: list[str] = []
    tasks: list[str | None] = []
    field_used = task_field
    for n, rec in enumerate(_records(path, fmt)):
        if not isinstance(rec, dict):
            raise WorkbenchError(f"{path}: item {n}: a {type(rec).__name__}, not a record (dict)")
        if n == 0 and field_used is None:
            field_used = next((k for k in TASK_FIELDS if k in rec), None)
        elif n == 0 and field_used not in rec:
            raise WorkbenchError(f"{path}: item 0 has no field {field_used!r} (--task-field); its fields: "
                                 f"{', '.join(sorted(rec))}")
        texts.append(first_instruction(rec))
        if field_used:
            v = rec.get(field_used)
            tasks.append(None if v is None else str(v))
    if not texts:
        raise WorkbenchError(f"{path}: no items read")
    return fmt, texts, (tasks if field_used else None), field_used


# -- assigning ---------------------------------------------------------------------------------------

def _tasks(ws: Workspace):
    idx = Taxonomy.of(ws).index()
    leaves = [n.id for n in idx.leaves()]
    if not leaves:
        raise WorkbenchError("the workspace has no task types to audit against: import a taxonomy first "
                             "(`workbench taxonomy import` or `workbench init --seed`)")
    return idx, leaves


def task_vectors(ws: Workspace, idx, leaves, backend: str = "minilm") -> np.ndarray:
    texts = [TASK_TEXT.format(idx.nodes[i].name) for i in leaves]
    return audit_embed.task_vectors(ws, texts, backend, ws.config.text_embedding.model)


def embed_unique(texts: list[str], model: str | None, ws: Workspace | None = None,
                 backend: str = "minilm") -> np.ndarray:
    """Vectors of `texts`, each distinct text embedded once, sorted by length (less padding per batch)."""
    uniq, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    order = sorted(range(len(uniq)), key=lambda i: len(uniq[i]))
    vecs = embed(ws, [uniq[i] or "(no instruction)" for i in order], backend, model)
    out = np.empty_like(vecs)
    out[order] = vecs
    return out[inverse]


def assign(vecs: np.ndarray, task_vecs: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns (n, k) int32, scores (n, k) float32), best first."""
    sims = vecs @ task_vecs.T
    k = min(top_k, sims.shape[1])
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    ps = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-ps, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int32), np.take_along_axis(ps, order, axis=1)


def _dir_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]
    return f"{safe}-{hashlib.blake2b(name.encode(), digest_size=4).hexdigest()}"


def audit(ws: Workspace, dataset: str | Path, *, name: str | None = None, fmt: str | None = None,
          task_field: str | None = None, top_k: int = TOP_K, chunk_size: int = CHUNK_SIZE,
          min_score: float = MIN_SCORE, max_chunks: int | None = None, text_backend: str | None = None,
          on_chunk: Callable[[int, int], None] | None = None) -> AuditResult:
    """Assign every item of `dataset` to task types (resuming a stopped audit of the same name, source,
    tree and text backend) and store the summary. max_chunks: stop after that many new chunks (the rest on
    the next call). text_backend: `audit_embed.BACKENDS` (default `audit_embed.default_backend()`)."""
    import time


    t0 = time.monotonic()
    if top_k < 1 or chunk_size < 1:
        raise WorkbenchError("--top-k and --chunk-size must be at least 1")
    dataset = Path(dataset)
    name = name or dataset.stem
    fmt, texts, tasks, field_used = read_dataset(dataset, fmt, task_field)
    idx, leaves = _tasks(ws)
    model = ws.config.text_embedding.model
    backend = audit_embed.check_backend(text_backend or audit_embed.default_backend())
    btag = audit_embed.tag(backend, model)
    key = hashlib.sha256(json.dumps([model, [(i, idx.paths[i]) for i in leaves]]).encode()).hexdigest()[:16]
    params = (str(dataset.resolve()), len(texts), chunk_size, top_k, key)
    d = ws.arrays_dir / "audit" / _dir_name(name)
    row = ws.store.query("SELECT source, items, chunk_size, top_k, tasks_key, COALESCE(text_backend, 'minilm'), "
                         "done FROM audit_datasets WHERE name=?", (name,))
    if row and tuple(row[0][:5]) == params and row[0][5] != btag and row[0][6] > 0:
        # never mix vectors of two backends in one audit, and never throw the stored ones away unasked
        was = row[0][5].split("-")[0]
        raise WorkbenchError(f"audit {name!r} was made with the text backend {row[0][5]}; resume it with "
                             f"--text-backend {was}, or audit under another --name to compare backends")
    now = utcnow()
    if not row or tuple(row[0][:5]) != params or row[0][5] != btag:
        if d.exists():
            shutil.rmtree(d)   # a different dataset, tree or chunking under this name: start again
        with ws.store.write() as c:
            c.execute("DELETE FROM audit_datasets WHERE name=?", (name,))
            c.execute("INSERT INTO audit_datasets(name, source, format, items, done, chunk_size, top_k, model, "
                      "tasks_key, task_field, array_dir, status, created_at, updated_at, text_backend) "
                      "VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                      (name, params[0], fmt, len(texts), chunk_size, top_k, model, key, field_used,
                       str(d.relative_to(ws.root)), now, now, btag))
    d.mkdir(parents=True, exist_ok=True)
    (d / "tasks.json").write_text(json.dumps(leaves))
    task_vecs = task_vectors(ws, idx, leaves, backend)
    n_chunks = math.ceil(len(texts) / chunk_size)
    have = {i for i in range(n_chunks) if (d / f"chunk-{i:06d}.npz").exists()}
    resumed = sum(min(chunk_size, len(texts) - i * chunk_size) for i in have)
    new, done = 0, resumed
    for i in range(n_chunks):
        if i in have:
            continue
        if max_chunks is not None and new >= max_chunks:
            break
        lo, hi = i * chunk_size, min(len(texts), (i + 1) * chunk_size)
        cols, scores = assign(embed_unique(texts[lo:hi], model, ws, backend), task_vecs, top_k)
        own = np.asarray(["" if t is None else t for t in tasks[lo:hi]], dtype=str) if tasks else np.zeros(0, "U1")
        tmp = d / f"chunk-{i:06d}.tmp.npz"
        np.savez(tmp, cols=cols, scores=scores.astype(np.float16), own=own)
        os.replace(tmp, d / f"chunk-{i:06d}.npz")   # a chunk is either whole or absent
        new += 1
        done += hi - lo
        with ws.store.write() as c:
            c.execute("UPDATE audit_datasets SET done=?, updated_at=? WHERE name=?", (done, utcnow(), name))
        if on_chunk:
            on_chunk(done, len(texts))
    result = AuditResult(name, len(texts), done, resumed, 0.0, text_backend=btag)
    if done >= len(texts):
        result.summary = summarise(ws, name, min_score=min_score)
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


def load_assignments(ws: Workspace, name: str):
    """(task-type node ids, columns (n, k), scores (n, k), own labels (n,) or None) of a stored audit."""
    array_dir, items, done, chunk_size = _meta(ws, name)
    d = ws.root / array_dir
    leaves = json.loads((d / "tasks.json").read_text())
    files = sorted(d.glob("chunk-[0-9]*.npz"))
    files = [f for f in files if not f.name.endswith(".tmp.npz")]
    if not files:
        return leaves, np.zeros((0, 1), np.int32), np.zeros((0, 1), np.float32), None
    cols, scores, own = [], [], []
    for f in files:
        with np.load(f) as z:
            cols.append(z["cols"])
            scores.append(z["scores"].astype(np.float32))
            own.append(z["own"])
    own_all = np.concatenate(own) if own and len(own[0]) else None
    return leaves, np.concatenate(cols), np.concatenate(scores), own_all


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
        "own_task_field": own is not None,
        "text_backend": ws.store.query("SELECT COALESCE(text_backend, 'minilm') FROM audit_datasets WHERE name=?",
                                       (name,))[0][0],
    }


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
