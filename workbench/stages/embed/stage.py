"""CLIP embeddings of task types (text) and images, cached in `arrays/` and resumable.

One *embedding set* per (kind, model architecture, weights, template or image precision); its key
is a hash of those, so changing the model or the template starts a new set and keeps the old.
A set's rows live in `arrays/<array_file>/`: every batch is written as its own chunk file
(`rows-<start>-<stop>.npy`, written to a temp name, fsynced, renamed) and only then are its
`embedding_rows` committed, so an interrupted run loses at most the batch in flight; a chunk file
whose rows were never committed is an orphan and is deleted on the next run. Once 32 chunks have accumulated
they are compacted into `base.npy` (streamed, bounded memory).

Reuse: an image's id is its content hash, so an image row is valid forever; a task type's row
records the hash of the text it embedded (its rendered `~` path), so a rename re-embeds just that
task type (its old row stays as a dead row; rows are never renumbered). New items add only their rows.
The bytes read for an image are hashed again: a file changed since registration is recorded as a
problem and never embedded under its old id.

Texts are embedded sorted by length (less padding per batch). Images decode in DataLoader workers (a large JPEG at
a reduced DCT scale that still covers the model's input side), and an image more than 20:1 is centre-cropped to
20:1 before the model's transform, whose shortest-side resize would otherwise blow it up.

Stages (`stages/base.py`): `EmbedTextStage` ("embed_text") and `EmbedImageStage` ("embed_image"; on the engine
in effect, `stages/dispatch.current()`). The public `embed_texts_clip(ws)` / `embed_images(ws)` plan first and run
the stage (one stage-run record) only when something is to be embedded. `get_text_embeddings(ws)` /
`get_image_embeddings(ws)` read the current config's sets: (ids, float32 L2-normalised array), no model load.
"""

from __future__ import annotations

import hashlib
import os
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.stages.base import Stage, StageRun
from workbench.stages.dispatch import current
from workbench.stages.embed.clip import identify, load_clip, model_key
from workbench.stages.images.register import CHANGED, MAX_ASPECT_RATIO, ImageError, open_rgb, refresh_hint
from workbench.taxonomy.model import Taxonomy

Progress = Callable[[int, int], None]   # (rows done in this run, rows to do)
# Fold chunk files into base.npy once this many exist (a rewrite of the whole set costs I/O).
COMPACT_AFTER = 32


@dataclass
class EmbedReport:
    kind: str
    set_key: str
    items: int = 0            # current items (task types or images)
    computed: int = 0         # embedded in this run
    reused: int = 0
    truncated: int = 0        # current task texts longer than the text context (cut by the tokenizer)
    truncated_examples: list[str] = field(default_factory=list)
    context_length: int | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)   # (image id, reason)
    seconds: float = 0.0
    run_id: int | None = None     # the stage run that computed rows (None: nothing to do)

    def summary(self) -> str:
        what = "task type(s)" if self.kind == "text" else "image(s)"
        s = f"{self.kind} embeddings: {self.items} {what}, {self.computed} computed, {self.reused} reused"
        if self.kind == "text" and self.truncated:
            s += (f"; {self.truncated} task text(s) are longer than the {self.context_length}-token text context "
                  f"and were truncated, e.g. {self.truncated_examples[0]!r}")
        if self.problems:
            s += (f"; {len(self.problems)} image(s) unreadable now or changed since registration, not embedded "
                  "(see `workbench images report`)")
        return s


# -- the array store ---------------------------------------------------------------------------
class RowStore:
    """The rows of one embedding set on disk: `base.npy` plus chunk files, read through memory maps."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _chunks(self) -> list[tuple[int, int, Path]]:
        out = []
        if self.folder.is_dir():
            for p in self.folder.glob("rows-*-*.npy"):
                _, a, b = p.stem.split("-")
                out.append((int(a), int(b), p))
        return sorted(out)

    def base_rows(self) -> int:
        base = self.folder / "base.npy"
        if not base.exists():
            return 0
        return int(np.load(base, mmap_mode="r").shape[0])

    def clean(self, n_rows: int) -> None:
        """Delete chunk files holding no committed rows (a crash between file and commit)."""
        base = self.base_rows()
        for start, stop, p in self._chunks():
            if start >= n_rows or stop <= base:
                p.unlink(missing_ok=True)
        for p in self.folder.glob("*.tmp*"):
            p.unlink(missing_ok=True)

    def append(self, start: int, rows: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"rows-{start:010d}-{start + len(rows):010d}.npy"
        _atomic_save(final, np.ascontiguousarray(rows, dtype=np.float32))

    def read(self, rows: np.ndarray, n_rows: int) -> np.ndarray:
        """Rows by number (any order) as a float32 array."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.zeros((0, self.dim(n_rows)), np.float32)
        parts = self._parts(n_rows)
        out = None
        for lo, hi, arr in parts:
            sel = np.nonzero((rows >= lo) & (rows < hi))[0]
            if sel.size:
                block = np.asarray(arr[rows[sel] - lo], dtype=np.float32)
                if out is None:
                    out = np.empty((rows.size, block.shape[1]), np.float32)
                out[sel] = block
        covered = np.zeros(rows.size, bool)
        for lo, hi, _ in parts:
            covered |= (rows >= lo) & (rows < hi)
        if out is None or not covered.all():
            raise WorkbenchError(f"{self.folder}: embedding rows {rows[~covered][:5].tolist()} are missing on "
                                 "disk; delete this folder and run `workbench embed` again")
        return out

    def dim(self, n_rows: int) -> int:
        parts = self._parts(n_rows)
        return int(parts[0][2].shape[1]) if parts else 0

    def _parts(self, n_rows: int) -> list[tuple[int, int, np.ndarray]]:
        parts = []
        base = self.folder / "base.npy"
        b = 0
        if base.exists():
            arr = np.load(base, mmap_mode="r")
            b = arr.shape[0]
            parts.append((0, b, arr))
        for start, stop, p in self._chunks():
            if start >= b and stop <= n_rows:
                parts.append((start, stop, np.load(p, mmap_mode="r")))
        return parts

    def compact(self, n_rows: int, min_chunks: int = 1) -> None:
        """Fold the chunks into base.npy, streaming (memory stays one chunk)."""
        chunks = [c for c in self._chunks() if c[1] <= n_rows]
        if len(chunks) < min_chunks:
            return
        parts = self._parts(n_rows)
        total = parts[-1][1] if parts else 0
        if any(parts[i][1] != parts[i + 1][0] for i in range(len(parts) - 1)) or (parts and parts[0][0] != 0):
            return  # a gap (should not happen): leave the files as they are rather than lose rows
        tmp = self.folder / "base.tmp.npy"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, parts[0][2].shape[1]))
        for lo, hi, arr in parts:
            out[lo:hi] = arr
        out.flush()
        del out, parts
        _fsync(tmp)
        os.replace(tmp, self.folder / "base.npy")
        for _, _, p in chunks:
            p.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_save(final: Path, arr: np.ndarray) -> None:
    tmp = final.with_name(final.stem + ".tmp.npy")
    with open(tmp, "wb") as f:
        np.save(f, arr)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)


# -- sets --------------------------------------------------------------------------------------
def _identity(ws: Workspace):
    return identify(ws.config.clip, base_dir=ws.root)


def text_set_key(ws: Workspace, ident=None) -> str:
    ident = ident or _identity(ws)
    return ident.key("text", ws.config.clip.template)


def image_set_key(ws: Workspace, ident=None) -> str:
    ident = ident or _identity(ws)
    return ident.key("image", ws.config.clip.image_precision)


def _set_row(ws: Workspace, key: str):
    return ws.store.one("SELECT * FROM embedding_sets WHERE key=?", (key,))


def _ensure_set(ws: Workspace, key: str, kind: str, dim: int, template: str | None) -> None:
    cfg = ws.config.clip
    now = utcnow()
    with ws.store.write() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO embedding_sets(key, kind, model, pretrained, template, dim, array_file, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, kind, cfg.model, cfg.pretrained, template, dim, f"clip-{kind}-{key}", now, now))


def row_store(ws: Workspace, key: str) -> RowStore:
    row = _set_row(ws, key)
    name = row["array_file"] if row is not None else f"clip-unknown-{key}"
    return RowStore(ws.arrays_dir / name)


def _commit_batch(ws: Workspace, key: str, store: RowStore, item_ids: list[str], hashes: list[str | None],
                  truncated: list[bool], emb: np.ndarray, replace_ids: Sequence[str] = ()) -> None:
    start = int(ws.store.scalar("SELECT n_rows FROM embedding_sets WHERE key=?", (key,)))
    store.append(start, emb)   # durable before the rows that point into it are committed
    with ws.store.write() as conn:
        if replace_ids:
            conn.executemany("DELETE FROM embedding_rows WHERE set_key=? AND item_id=?",
                             [(key, i) for i in replace_ids])
        conn.executemany(
            "INSERT INTO embedding_rows(set_key, row, item_id, input_hash, truncated) VALUES (?, ?, ?, ?, ?)",
            [(key, start + j, iid, h, int(t)) for j, (iid, h, t) in enumerate(zip(item_ids, hashes, truncated))])
        conn.execute("UPDATE embedding_sets SET n_rows=?, updated_at=? WHERE key=?",
                     (start + len(item_ids), utcnow(), key))


def _prepare(ws: Workspace, key: str) -> RowStore:
    row = _set_row(ws, key)
    store = row_store(ws, key)
    if row is not None:
        store.clean(int(row["n_rows"]))
    return store


# -- text --------------------------------------------------------------------------------------
def render_text(template: str, path: str) -> str:
    leaf = path.rsplit("~", 1)[-1]
    # Only bare fields: `{path.__class__.__mro__}` or `{leaf[0]}` would walk Python objects from a config file.
    fields = [f for _, f, _spec, _conv in string.Formatter().parse(template) if f is not None]
    if any(f not in ("path", "leaf") for f in fields):
        raise WorkbenchError(f"[clip] template = {template!r} names a field other than {{path}} or {{leaf}} "
                             f"({', '.join(repr(f) for f in fields if f not in ('path', 'leaf'))}); use those two "
                             "only, and double other braces ({{ }})")
    try:
        return template.format(path=path, leaf=leaf)
    except (KeyError, IndexError, ValueError) as exc:
        raise WorkbenchError(f"[clip] template = {template!r} cannot be filled ({exc!r}); use {{path}} and "
                             "{leaf} only, and double other braces ({{ }})") from None


def _text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def current_task_texts(ws: Workspace) -> list[tuple[str, str, str]]:
    """(node id, rendered text, text hash) for every live task type, in taxonomy order."""
    template = ws.config.clip.template
    out = []
    for node, path in Taxonomy.of(ws).leaves():
        text = render_text(template, path)
        out.append((node.id, text, _text_hash(text)))
    return out


class EmbedTextStage(Stage):
    """CLIP-embed every live task type's text whose current text has no row in the text set."""

    name = "embed_text"

    def __init__(self, *, clip=None, progress: Progress | None = None):
        self.clip, self.progress = clip, progress
        self.key = ""
        self.todo: list[tuple[str, str, str]] = []

    def plan(self, ws: Workspace) -> EmbedReport:
        """What is to be embedded (no model load): sets `todo`; the report counts what is reused."""
        cfg = ws.config.clip
        self.key = text_set_key(ws) if self.clip is None else _key_from_clip(self.clip, "text", cfg.template)
        items = current_task_texts(ws)
        self.have = {r["item_id"]: r["input_hash"] for r in ws.store.query(
            "SELECT item_id, input_hash FROM embedding_rows WHERE set_key=?", (self.key,))}
        self.items = items
        self.todo = [(nid, text, h) for nid, text, h in items if self.have.get(nid) != h]
        return EmbedReport("text", self.key, items=len(items), reused=len(items) - len(self.todo))

    def check(self, ws: Workspace) -> None:
        if self.clip is None:    # a missing model or weights is a WorkbenchError before any run record

            self.clip = load_clip(ws.config.clip, base_dir=ws.root)

    def run_params(self) -> dict:
        return {"set": self.key, "todo": len(self.todo)}

    def provenance(self) -> dict:
        return {"model": self.clip.model_name} if self.clip is not None else {}

    def execute(self, ws: Workspace, run: StageRun) -> EmbedReport:
        t0 = time.perf_counter()
        report = self.plan(ws)        # again, under the stage lock: another process may have done some
        clip, key, todo, have = self.clip, self.key, self.todo, self.have
        report.context_length = clip.context_length
        store = _prepare(ws, key)
        # Similar lengths together: the encoder only runs over the columns a batch uses.
        todo.sort(key=lambda t: len(t[1]))
        bs = ws.config.clip.batch_size
        for i in range(0, len(todo), bs):
            batch = todo[i:i + bs]
            emb, trunc = clip.encode_texts([t[1] for t in batch])
            if _set_row(ws, key) is None:
                _ensure_set(ws, key, "text", emb.shape[1], ws.config.clip.template)
                store = row_store(ws, key)
            replace = [nid for nid, _, _ in batch if nid in have]
            _commit_batch(ws, key, store, [t[0] for t in batch], [t[2] for t in batch], trunc.tolist(),
                          emb, replace)
            report.computed += len(batch)
            run.add("computed", len(batch))
            if self.progress:
                self.progress(report.computed, len(todo))
        if _set_row(ws, key) is not None:
            store.compact(int(_set_row(ws, key)["n_rows"]), min_chunks=COMPACT_AFTER)
        _truncation(ws, key, self.items, report)
        report.seconds = time.perf_counter() - t0
        return report


def embed_texts_clip(ws: Workspace, *, clip=None, progress: Progress | None = None) -> EmbedReport:
    """Embed every live task type's text; reuse rows whose text is unchanged (a stage run only if any)."""
    t0 = time.perf_counter()
    stage = EmbedTextStage(clip=clip, progress=progress)
    report = stage.plan(ws)
    if stage.todo:
        report = stage.run(ws)
    else:
        _truncation(ws, stage.key, stage.items, report)
    report.seconds = time.perf_counter() - t0
    return report


def _truncation(ws: Workspace, key: str, items, report: EmbedReport) -> None:
    rows = ws.store.query("SELECT item_id FROM embedding_rows WHERE set_key=? AND truncated=1", (key,))
    cut = {r["item_id"] for r in rows}
    texts = [text for nid, text, _ in items if nid in cut]
    report.truncated = len(texts)
    report.truncated_examples = texts[:5]
    if report.context_length is None:
        report.context_length = _context_length_hint(ws)


def _context_length_hint(ws: Workspace) -> int | None:
    model = ws.config.clip.model
    try:
        if model.endswith(".json"):
            import json

            p = Path(model) if os.path.isabs(model) else ws.root / model
            return int(json.loads(p.read_text())["text_cfg"].get("context_length", 77))
        import open_clip

        return int(open_clip.get_model_config(model)["text_cfg"].get("context_length", 77))
    except Exception:
        return None


def _key_from_clip(clip, *parts: str) -> str:
    return model_key(clip, *parts)


# -- images ------------------------------------------------------------------------------------
class ImageDataset:
    """Decodes and preprocesses images in DataLoader workers; a bad file yields its reason."""

    def __init__(self, items: list[tuple[str, str]], preprocess):
        self.items = items
        self.preprocess = preprocess
        # The model sees the image at its input size: a JPEG at least twice that decodes at a reduced
        # DCT scale that keeps the shorter side >= the input size (an averaging downscale), then the
        # model's own resize. Decoding was the bottleneck of a bf16 image tower on CPU (bench (a)).
        self.min_side = _input_side(preprocess)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        image_id, path = self.items[i]
        try:
            # expect_id: the bytes must still hash to the id (a changed file is never embedded under it)
            img = bound_aspect(open_rgb(Path(path), min_side=self.min_side, expect_id=image_id))
            return image_id, self.preprocess(img), None
        except ImageError as exc:
            return image_id, None, str(exc)
        except Exception as exc:
            return image_id, None, f"{path}: {exc}"


def bound_aspect(img, max_ratio: float | None = None):
    """Centre-crop the longer side to at most `max_ratio` times the shorter (default MAX_ASPECT_RATIO).

    The model's transform resizes the *shorter* side to its input size, so a 1x40000 image would become
    224 x 8,960,000 pixels (9.4 GB) before its centre crop. The model only ever sees the central square,
    which this crop keeps, so images within the ratio (all that registration accepts) are untouched and
    the rest give the same picture at bounded memory (at most ratio x side^2 pixels after the resize).
    """
    r = MAX_ASPECT_RATIO if max_ratio is None else max_ratio
    w, h = img.size
    if w > r * h:
        keep = max(1, int(r * h))
        left = (w - keep) // 2
        return img.crop((left, 0, left + keep, h))
    if h > r * w:
        keep = max(1, int(r * w))
        top = (h - keep) // 2
        return img.crop((0, top, w, top + keep))
    return img


def _input_side(preprocess) -> int | None:
    for t in getattr(preprocess, "transforms", []):
        size = getattr(t, "size", None)
        if isinstance(size, int):
            return size
        if isinstance(size, (tuple, list)) and size:
            return int(min(size))
    return None


def _collate(batch):
    import torch

    ok = [(i, x) for i, x, err in batch if err is None]
    bad = [(i, err) for i, _, err in batch if err is not None]
    pixels = torch.stack([x for _, x in ok]) if ok else None
    return [i for i, _ in ok], pixels, bad


def image_loader(items: list[tuple[str, str]], preprocess, batch_size: int, num_workers: int):
    """A DataLoader over (image id, absolute path) yielding (ids, pixels, problems)."""
    from torch.utils.data import DataLoader

    # The dataset is map-style by duck typing (torch is imported lazily, so it has no Dataset base class)
    return DataLoader(ImageDataset(items, preprocess),  # type: ignore[arg-type]  # the stub wants a Dataset
                      batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate,
                      prefetch_factor=4 if num_workers else None, persistent_workers=False)


class EmbedImageStage(Stage):
    """CLIP-embed every registered image that has no row in the current image set.

    engine: None (local) or a `workbench.engine` engine whose `embed_images` yields (ids, rows, problems)
    blocks computed elsewhere; they are committed here exactly as local batches are."""

    name = "embed_image"

    def __init__(self, *, clip=None, progress: Progress | None = None, engine=None):
        self.clip, self.progress, self.engine = clip, progress, engine
        self.key = ""
        self.todo: list[tuple[str, str]] = []

    def plan(self, ws: Workspace) -> EmbedReport:
        cfg = ws.config.clip
        self.key = image_set_key(ws) if self.clip is None else _key_from_clip(self.clip, "image", cfg.image_precision)
        total = int(ws.store.scalar("SELECT count(*) FROM images"))
        rows = ws.store.query(
            "SELECT id, root, path FROM images WHERE id NOT IN "
            "(SELECT item_id FROM embedding_rows WHERE set_key=?) ORDER BY id", (self.key,))
        self.todo = [(r["id"], str(Path(r["root"]) / r["path"])) for r in rows]
        return EmbedReport("image", self.key, items=total, reused=total - len(self.todo))

    def check(self, ws: Workspace) -> None:
        if self.clip is None:
            self.clip = load_clip(ws.config.clip, base_dir=ws.root)

    def run_params(self) -> dict:
        return {"set": self.key, "todo": len(self.todo),
                **({"engine": self.engine.name} if self.engine is not None else {})}

    def provenance(self) -> dict:
        return {"model": self.clip.model_name} if self.clip is not None else {}

    def execute(self, ws: Workspace, run: StageRun) -> EmbedReport:
        t0 = time.perf_counter()
        cfg = ws.config.clip
        report = self.plan(ws)        # again, under the stage lock
        clip, key, todo = self.clip, self.key, self.todo
        store = _prepare(ws, key)
        done = 0
        if self.engine is None:
            blocks = ((ids, None if pixels is None else clip.encode_image_batch(pixels), bad)
                      for ids, pixels, bad in image_loader(todo, clip.preprocess, cfg.batch_size, cfg.num_workers))
        else:
            blocks = self.engine.embed_images(todo, clip, cfg.batch_size)
        for ids, emb, bad in blocks:
            if bad:
                report.problems.extend(bad)
                _record_problems(ws, bad)
                run.add("problems", len(bad))
            if ids:
                assert emb is not None   # a block with ids carries their rows
                if _set_row(ws, key) is None:
                    _ensure_set(ws, key, "image", emb.shape[1], None)
                    store = row_store(ws, key)
                _commit_batch(ws, key, store, ids, [None] * len(ids), [False] * len(ids), emb)
                report.computed += len(ids)
                run.add("computed", len(ids))
            done += len(ids) + len(bad)
            if self.progress:
                self.progress(done, len(todo))
        if _set_row(ws, key) is not None:
            store.compact(int(_set_row(ws, key)["n_rows"]), min_chunks=COMPACT_AFTER)
        report.seconds = time.perf_counter() - t0
        return report


def _record_problems(ws: Workspace, bad: list[tuple[str, str]]) -> None:
    now = utcnow()
    with ws.store.write() as conn:
        for image_id, reason in bad:
            row = conn.execute("SELECT root, path, source FROM images WHERE id=?", (image_id,)).fetchone()
            if row is None:
                continue
            if CHANGED in reason:
                text = f"{reason}; not embedded; {refresh_hint(ws, row['root'], row['path'])}"
            else:
                text = f"registered, but unreadable when embedding: {reason}"
            conn.execute("INSERT OR REPLACE INTO image_problems(root, path, source, reason, created_at) "
                         "VALUES (?, ?, ?, ?, ?)", (row["root"], row["path"], row["source"], text, now))


def embed_images(ws: Workspace, *, clip=None, progress: Progress | None = None, engine=None) -> EmbedReport:
    """Embed every registered image not yet in the current image set (a stage run only if any).
    engine: see EmbedImageStage (default: `stages.dispatch.current()`, local unless set)."""
    t0 = time.perf_counter()
    stage = EmbedImageStage(clip=clip, progress=progress, engine=engine if engine is not None else current())
    report = stage.plan(ws)
    if stage.todo:
        report = stage.run(ws)
    report.seconds = time.perf_counter() - t0
    return report


# -- reading -----------------------------------------------------------------------------------
def _read_set(ws: Workspace, key: str, item_ids: list[str]) -> tuple[list[str], np.ndarray]:
    row = _set_row(ws, key)
    if row is None:
        return [], np.zeros((0, 0), np.float32)
    pos = {r["item_id"]: r["row"] for r in ws.store.query(
        "SELECT item_id, row FROM embedding_rows WHERE set_key=?", (key,))}
    ids = [i for i in item_ids if i in pos]
    arr = RowStore(ws.arrays_dir / row["array_file"]).read(np.array([pos[i] for i in ids], np.int64),
                                                             int(row["n_rows"]))
    return ids, arr


def get_text_embeddings(ws: Workspace) -> tuple[list[str], np.ndarray]:
    """(node ids, L2-normalised float32 rows) for live task types embedded with the current config and text."""
    key = text_set_key(ws)
    items = current_task_texts(ws)
    current = {(n, h) for n, _, h in items}
    good = {r["item_id"] for r in ws.store.query(
        "SELECT item_id, input_hash FROM embedding_rows WHERE set_key=?", (key,))
        if (r["item_id"], r["input_hash"]) in current}
    return _read_set(ws, key, [n for n, _, _ in items if n in good])


def get_image_embeddings(ws: Workspace) -> tuple[list[str], np.ndarray]:
    """(image ids, L2-normalised float32 rows) for registered images embedded with the current config."""
    key = image_set_key(ws)
    ids = [r["id"] for r in ws.store.query("SELECT id FROM images ORDER BY id")]
    return _read_set(ws, key, ids)
