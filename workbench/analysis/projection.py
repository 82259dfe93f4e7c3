"""2-D projections of embedding sets (UMAP), computed once, stored under a key, reloaded.

As in FiftyOne Brain, a projection is a config (inputs + parameters) whose key is a hash of
both; the coordinates go to `arrays/projection-<key>.npy` and a `projections` row records the
method, parameters and the item order ([kind, item_id] per row). Asking again with the same
inputs and parameters reloads the file; new embeddings (a changed set) give a new key.

Image and task-type (text) embeddings of one CLIP model share a space, so they are projected
together: one map shows where images and task types fall. `points(ws, proj)` is that map as a table (one row per
point, with its first-level category), what the notebooks' map draws.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from workbench.analysis import umap_fit
from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.stages.embed.stage import RowStore
from workbench.taxonomy.model import LIVE, Taxonomy

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_PARAMS = {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine", "random_state": 0}
METHODS = ("umap", "pca")


@dataclass
class Projection:
    key: str
    method: str
    params: dict
    coords: np.ndarray          # (n, 2) float32
    items: list[tuple[str, str]]  # (kind 'image' | 'task', item_id) per row
    created_at: str


def embedding_sets(store) -> list[dict]:
    rows = store.query("SELECT s.key, s.kind, s.model, s.pretrained, s.template, s.dim, s.array_file, s.updated_at, "
                       "(SELECT count(*) FROM embedding_rows r WHERE r.set_key = s.key) AS n "
                       "FROM embedding_sets s ORDER BY s.updated_at DESC")
    return [dict(r) for r in rows]


def default_sets(available: list[dict]) -> list[str]:
    """What a map shows unless told otherwise: the newest model's sets (its image and text sets), of
    `embedding_sets` (newest first)."""
    newest = available[0]["model"] if available else None
    return [s["key"] for s in available if s["model"] == newest][:2]


def _set_fingerprint(store, set_key: str) -> dict:
    row = store.one("SELECT key, kind, dim, array_file, updated_at FROM embedding_sets WHERE key=?", (set_key,))
    if row is None:
        raise WorkbenchError(f"no embedding set {set_key!r}; run the CLIP embedding stage first "
                             "(`workbench embed WORKSPACE`)")
    n, max_row = store.one("SELECT count(*), max(row) FROM embedding_rows WHERE set_key=?", (set_key,))
    return {"key": row["key"], "kind": row["kind"], "dim": row["dim"], "updated_at": row["updated_at"],
            "rows": n, "max_row": max_row}


def projection_key(store, set_keys: list[str], method: str, params: dict) -> str:
    inputs = [_set_fingerprint(store, k) for k in sorted(set_keys)]
    blob = json.dumps({"inputs": inputs, "method": method, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _load_set(ws: Workspace, set_key: str) -> tuple[np.ndarray, list[tuple[str, str]]]:
    row = ws.store.one("SELECT * FROM embedding_sets WHERE key=?", (set_key,))
    path = ws.arrays_dir / row["array_file"]
    if not path.exists():
        raise WorkbenchError(f"{path}: embedding array of set {set_key!r} is missing; re-run the embedding stage")
    rows = ws.store.query("SELECT row, item_id FROM embedding_rows WHERE set_key=? ORDER BY row", (set_key,))
    idx = np.fromiter((r["row"] for r in rows), dtype=np.int64, count=len(rows))
    kind = "image" if row["kind"] == "image" else "task"
    items = [(kind, r["item_id"]) for r in rows]
    if path.is_dir():  # the embedding stage's chunked row store (stages/embed/stage.py)

        n_rows = row["n_rows"] if "n_rows" in row.keys() and row["n_rows"] is not None else int(idx.max() + 1)
        return RowStore(path).read(idx, int(n_rows)), items
    arr = np.load(path, mmap_mode="r")
    if len(idx) and idx.max() >= arr.shape[0]:
        raise WorkbenchError(f"{path}: has {arr.shape[0]} rows but the database lists row {idx.max()}; "
                             "re-run the embedding stage")
    return np.asarray(arr[idx], dtype=np.float32), items


def load(ws: Workspace, key: str) -> Projection | None:
    row = ws.store.one("SELECT * FROM projections WHERE key=?", (key,))
    if row is None:
        return None
    path = ws.arrays_dir / row["array_file"]
    if not path.exists():
        return None
    items = [tuple(x) for x in json.loads(row["items"])]
    return Projection(key, row["method"], json.loads(row["params"]), np.load(path), items, row["created_at"])


def save(ws: Workspace, key: str, method: str, params: dict, coords: np.ndarray,
         items: list[tuple[str, str]]) -> Projection:
    """Store coordinates under `key` (file first, then the row: a crash leaves no row without a file)."""
    coords = np.asarray(coords, dtype=np.float32)
    if coords.shape != (len(items), 2):
        raise ValueError(f"coords shape {coords.shape} does not match {len(items)} items")
    name = f"projection-{key}.npy"
    tmp = ws.arrays_dir / f".{name}.tmp.npy"
    np.save(tmp, coords)
    tmp.replace(ws.arrays_dir / name)
    created = utcnow()
    with ws.store.write() as conn:
        conn.execute("INSERT OR REPLACE INTO projections(key, method, params, array_file, items, created_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (key, method, json.dumps(params, sort_keys=True), name, json.dumps(items), created))
    return Projection(key, method, params, coords, items, created)


def _fit(x: np.ndarray, method: str, params: dict) -> np.ndarray:
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=params.get("random_state", 0)).fit_transform(x)
    n_neighbors = max(2, min(int(params["n_neighbors"]), len(x) - 1))
    return umap_fit.fit(x, n_neighbors, float(params["min_dist"]), params["metric"], params.get("random_state"))


def _stacked(ws: Workspace, set_keys: list[str]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """The sets' embeddings one below the other, each row scaled to unit length, and their items."""
    parts, items = [], []
    dims = set()
    for k in set_keys:
        x, its = _load_set(ws, k)
        dims.add(x.shape[1])
        parts.append(x)
        items.extend(its)
    if len(dims) > 1:
        raise WorkbenchError(f"embedding sets {set_keys} have different dimensions {sorted(dims)}; "
                             "project sets of one CLIP model together")
    x = np.concatenate(parts) if parts else np.zeros((0, 2), np.float32)
    if len(x) < 3:
        raise WorkbenchError(f"only {len(x)} embeddings to project; embed more images or task types first")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1), items


def get_or_compute(ws: Workspace, set_keys: list[str], method: str = "umap", params: dict | None = None,
                   compute: bool = True) -> Projection | None:
    """The stored projection of these sets with these parameters; computed and stored if missing."""
    if method not in METHODS:
        raise WorkbenchError(f"projection method must be one of {', '.join(METHODS)}; got {method!r}")
    if not set_keys:
        raise WorkbenchError("choose at least one embedding set to project")
    params = {**DEFAULT_PARAMS, **(params or {})} if method == "umap" else {"random_state": 0, **(params or {})}
    key = projection_key(ws.store, set_keys, method, params)
    found = load(ws, key)
    if found is not None or not compute:
        return found
    if method == "umap":
        umap_fit.preload()   # its import runs beside reading the embeddings and finding their neighbours
    try:
        x, items = _stacked(ws, set_keys)
        coords = _fit(x, method, params)
    finally:
        umap_fit.wait_preload()
    return save(ws, key, method, params, coords, items)


POINT_COLUMNS = ["x", "y", "kind", "item_id", "category", "label"]
UNMATCHED = "(unmatched)"


def points(ws: Workspace, proj: Projection) -> pd.DataFrame:
    """One row per point of a stored projection: x, y, kind ('image' | 'task'), item_id, category (the first-level
    category of the task type, or of the image's best match; UNMATCHED for an image without one) and label (the
    task type's path, the image's file). Task types that are no longer live leaves (given children or removed
    since they were embedded) are left out, as the dashboard's map leaves them out: they are not task types."""
    import pandas as pd  # not at the top: `workbench map` and `workbench dashboard` import this module, not pandas

    idx = Taxonomy.of(ws).index(None)
    live = Taxonomy.of(ws).index(LIVE)
    leaves = {n.id for n in live.leaves()}
    best = {r["image_id"]: r["node_id"] for r in ws.store.query("SELECT image_id, node_id FROM matches WHERE rank=1")}
    files = {r["id"]: r["path"] for r in ws.store.query("SELECT id, path FROM images")}

    def category(node_id: str | None) -> str:
        return idx.path_names(node_id)[0] if node_id in idx.nodes else UNMATCHED

    rows = []
    for (kind, item), (x, y) in zip(proj.items, proj.coords.tolist()):
        if kind == "task" and item not in leaves:
            continue
        node = item if kind == "task" else best.get(item)
        label = idx.paths.get(item, item) if kind == "task" else files.get(item, item)
        rows.append((x, y, kind, item, category(node), label))
    return pd.DataFrame(rows, columns=POINT_COLUMNS)
