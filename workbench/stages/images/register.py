"""The image registry: folders and LLaVA-style manifests → `images`, `image_problems`, `dataset_items`.

An image's id is the sha256 of its bytes, so the same file registered twice (or from two paths)
is one image. Every file is fully decoded once at registration; a file that cannot be used
(empty, truncated, not an image, a decompression bomb, ...) is recorded in `image_problems` with
its reason and the run goes on. Odd pixel formats (CMYK, 16-bit, palette with transparency, alpha)
are converted to RGB by `to_rgb`, the one conversion every later stage sees through
`load_image_rgb`.

Manifest paths are resolved against a declared root; one that escapes it (`../`, an absolute
path elsewhere, a symlink out) or holds a NUL byte is refused and recorded, never read. Only regular
files are read: a FIFO, socket or device is recorded as "not a regular file" without being opened.
An image more than `MAX_ASPECT_RATIO` times longer than wide (or wider than long) is recorded as a
problem: CLIP would see only a sliver of it, and its preprocessing would blow up.

Each image records its size and mtime (ns). A registered path whose content no longer hashes to its
id has *changed since registration*: `register_images` reports it (and keeps the old row) unless
`refresh=True`, which registers the new content under its own id and retires the old id (its row
moves to another registered copy of the old content if this run saw one, else it is deleted with what
was derived from it). `images_report` finds changed and missing files by size/mtime (confirmed by
hashing), and every reader that knows the id (`load_image_rgb`, embedding) checks the hash.

Manifests: a LLaVA JSON array of {id, image, conversations} or JSONL; each entry also lands in `dataset_items`
(its first question and answer, a task name from `task_type`/`task`/..., the conversation as given). Every input
is read before anything is written: a bad manifest line is a WorkbenchError naming file:line.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sqlite3
import stat as stat_mod
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MANIFEST_EXTENSIONS = {".json", ".jsonl"}
# Same default as Pillow: above this many pixels an image is treated as a decompression bomb.
MAX_PIXELS = 89_478_485
# Longer side / shorter side above this is a registration problem; embedding centre-crops to it.
# (The model resizes the shorter side to its input size: a 1x40000 PNG would become 224 x 8,960,000.)
MAX_ASPECT_RATIO = 20
TASK_KEYS = ("task_type", "task_name", "task", "tasktype", "category")


class ImageError(WorkbenchError):
    """An image cannot be read (missing, unreadable)."""


class ImageChanged(ImageError):
    """A registered file's content no longer hashes to its id."""


CHANGED = "changed since registration"


@dataclass
class Problem:
    path: str
    reason: str


@dataclass
class RegisterReport:
    added: int = 0
    already: int = 0                    # same content registered before (this run or earlier)
    problems: list[Problem] = field(default_factory=list)
    changed: int = 0                    # registered paths whose content changed (not re-registered: refresh=False)
    refreshed: int = 0                  # changed paths re-registered under their new content's id (refresh=True)
    retired: list[str] = field(default_factory=list)     # old ids removed by refresh
    dropped: dict[str, int] = field(default_factory=dict)   # rows derived from retired ids (matches, samples, ...)
    dataset_items: int = 0
    skipped_items: int = 0              # manifest entries without an image
    sources: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = (f"{self.added} image(s) added, {self.already} file(s) whose content was already registered, "
             f"{len(self.problems)} problem(s)")
        if self.changed:
            s += (f", {self.changed} file(s) {CHANGED} (kept as they were registered; run the same "
                  "`workbench images add` with --refresh to register their new content)")
        if self.refreshed:
            s += f", {self.refreshed} changed file(s) re-registered under new ids"
            if self.retired:
                dropped = ", ".join(f"{v} {k}" for k, v in self.dropped.items() if v)
                s += (f" ({len(self.retired)} old id(s) removed" + (f" with {dropped} made from the old content"
                                                                     if dropped else "") + ")")
        if self.dataset_items or self.skipped_items:
            s += f", {self.dataset_items} dataset item(s) kept"
            if self.skipped_items:
                s += f" ({self.skipped_items} entries without an image skipped)"
        return s


# -- pixels -----------------------------------------------------------------------------------
def to_rgb(img):
    """Any Pillow image → 8-bit RGB, keeping what a viewer would show.

    Transparency is flattened on white (palette transparency included); 16/32-bit greyscale is
    scaled to 8 bits instead of clipped (Pillow's own convert clips 16-bit to white); CMYK and
    others go through Pillow's converters.
    """
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            top = 65535.0
        else:
            top = 255.0 if arr.max(initial=0) <= 255 else (65535.0 if arr.max() <= 65535 else float(arr.max()))
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif mode == "P":
        return img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode(data: bytes, *, max_pixels: int = MAX_PIXELS, min_side: int | None = None):
    """Bytes → (fully decoded Pillow image, reason None) or (None, reason).

    min_side: the caller only needs the shorter side this large; a JPEG is then decoded at a reduced
    DCT scale (Pillow's draft mode, 2-8x less decoding work) that still leaves at least min_side.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        return None, "empty file (0 bytes)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))   # exif_transpose below gives a plain Image
            w, h = img.size
            if w * h > max_pixels:
                return None, (f"decompression bomb: {w}x{h} = {w * h:,} pixels is over the limit of "
                              f"{max_pixels:,}; skipped")
            if min_side and img.format == "JPEG" and min(w, h) >= 2 * min_side:
                scale = min_side / min(w, h)
                img.draft(None, (math.ceil(w * scale), math.ceil(h * scale)))
            img.load()  # full decode: catches truncated files
            fmt = img.format
            img = ImageOps.exif_transpose(img)
            img.format = fmt
    except UnidentifiedImageError:
        return None, "not an image (the content is no known image format)"
    except Image.DecompressionBombError as exc:
        return None, f"decompression bomb: {exc}"
    except Image.DecompressionBombWarning as exc:
        return None, f"decompression bomb: {exc}"
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower():
            return None, f"truncated or corrupt file: {msg}"
        return None, f"cannot decode: {msg}"
    return img, None


def _file_kind(mode: int) -> str:
    for test, name in ((stat_mod.S_ISFIFO, "a FIFO (named pipe)"), (stat_mod.S_ISSOCK, "a socket"),
                       (stat_mod.S_ISCHR, "a character device"), (stat_mod.S_ISBLK, "a block device"),
                       (stat_mod.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a plain file"


def read_regular(path: Path) -> tuple[bytes | None, os.stat_result | None, str | None]:
    """(bytes, stat of what was read, None) or (None, None, reason). Anything but a regular file (after
    symlinks) is refused without being opened: opening a FIFO blocks, opening a device may act."""
    path = Path(path)
    if "\x00" in str(path):
        return None, None, "the path contains a NUL byte"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None, None, "file not found"
    except OSError as exc:
        return None, None, f"cannot read: {exc.strerror or exc}"
    if stat_mod.S_ISDIR(st.st_mode):
        return None, None, "is a folder, not a file"
    if not stat_mod.S_ISREG(st.st_mode):
        return None, None, f"not a regular file ({_file_kind(st.st_mode)}); skipped without opening it"
    try:
        # O_NONBLOCK: should the path be swapped for a FIFO after the stat, the open does not block.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return None, None, "file not found"
    except OSError as exc:
        return None, None, f"cannot read: {exc.strerror or exc}"
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            os.close(fd)
            return None, None, f"not a regular file ({_file_kind(st.st_mode)}); skipped"
        with os.fdopen(fd, "rb") as f:
            data = f.read()
    except OSError as exc:
        return None, None, f"cannot read: {exc.strerror or exc}"
    return data, st, None


def _ratio(w: int, h: int) -> str:
    r = max(w, h) / max(1, min(w, h))
    return (f"{r:.1f}".rstrip("0").rstrip(".")) + ":1"


def _inspect(abs_path: Path) -> tuple[dict | None, str | None]:
    """Read, hash and decode one file: (record, None) or (None, reason)."""
    data, st, reason = read_regular(abs_path)
    if data is None:
        return None, reason
    assert st is not None  # read_regular returns the stat with the bytes
    img, reason = decode(data)
    if img is None:
        return None, reason
    w, h = img.size
    if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        return None, (f"extreme aspect ratio: {w}x{h} ({_ratio(w, h)}) is over the limit of {MAX_ASPECT_RATIO}:1; "
                      "CLIP would see only a small middle part of it; skipped")
    try:
        to_rgb(img)  # prove the conversion works now, not in a later stage
    except Exception as exc:
        return None, f"cannot convert {img.mode} to RGB: {exc}"
    return {"id": hashlib.sha256(data).hexdigest(), "width": w, "height": h,
            "format": (img.format or abs_path.suffix.lstrip(".")).upper(), "mode": img.mode,
            "bytes": len(data), "mtime_ns": st.st_mtime_ns}, None


# -- discovering inputs ------------------------------------------------------------------------
@dataclass
class _Entry:
    root: Path          # absolute, resolved
    rel: str            # path relative to root (POSIX)
    source: str
    refused: str | None = None      # why this entry must not be read


def _walk_folder(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                yield Path(dirpath) / name


def _printable(rel) -> str:
    """A manifest path safe to store and print (a NUL byte written as \\x00)."""
    return str(rel).replace("\x00", "\\x00")


def _within(root: Path, rel: str) -> tuple[Path | None, str | None]:
    """The resolved file for a manifest path, or why it is refused."""
    if not rel or not isinstance(rel, str):
        return None, "empty image path"
    if "\x00" in rel:
        return None, f"image path {rel!r} contains a NUL byte; refused"
    candidate = Path(rel)
    full = (candidate if candidate.is_absolute() else root / candidate)
    resolved = Path(os.path.realpath(full))
    if not resolved.is_relative_to(root):
        return None, (f"image path {rel!r} escapes the declared root {root}; refused (put the images under "
                      "the root, or pass --root a folder that contains them)")
    return resolved, None


def _read_manifest(path: Path) -> list[tuple[int, dict]]:
    """(line or index, entry) for a LLaVA JSON array or a JSONL file."""
    data, _, why = read_regular(path)
    if data is None:
        raise WorkbenchError(f"{path}: cannot read the manifest ({why}); nothing was registered")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkbenchError(f"{path}: cannot read the manifest ({exc})") from None
    entries: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise WorkbenchError(f"{path}:{n}: invalid JSON ({exc.msg}); fix that line. Nothing was "
                                     "registered") from None
            if not isinstance(obj, dict):
                raise WorkbenchError(f"{path}:{n}: expected a JSON object per line; nothing was registered")
            entries.append((n, obj))
        return entries
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); nothing was registered") from None
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list) or not all(isinstance(x, dict) for x in doc):
        raise WorkbenchError(f"{path}: expected a LLaVA JSON array of {{id, image, conversations}} objects; "
                             "nothing was registered")
    return list(enumerate(doc, 1))


def _first_turns(conversations) -> tuple[str | None, str | None]:
    q = a = None
    if isinstance(conversations, list):
        for turn in conversations:
            if not isinstance(turn, dict):
                continue
            who = str(turn.get("from", turn.get("role", ""))).lower()
            text = turn.get("value", turn.get("content"))
            if not isinstance(text, str):
                continue
            if q is None and who in ("human", "user"):
                q = text.replace("<image>", "").strip()
            elif q is not None and a is None and who in ("gpt", "assistant"):
                a = text.strip()
    return q, a


# -- registering -------------------------------------------------------------------------------
@dataclass
class _Item:
    """A manifest entry kept as a dataset item (its first image stands for it)."""

    source: str
    item_id: str
    entry: _Entry | None
    fields: dict


def register_images(ws: Workspace, paths: Iterable[str | Path], *, root: str | Path | None = None,
                    source: str | None = None, workers: int | None = None, refresh: bool = False) -> RegisterReport:
    """Register image folders (recursive), single image files and LLaVA JSON/JSONL manifests.

    Folder and file paths are stored relative to `root` (default: the folder itself / the file's
    folder); manifest paths are resolved against `root` (default: the manifest's folder).
    refresh: a registered path whose content changed is registered under its new content's id and the old
    id is retired (see the module docstring); without it such a path is reported and left as it was.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    report = RegisterReport()
    if root is not None and "\x00" in str(root):
        raise WorkbenchError(f"--root {_printable(root)!r}: the path contains a NUL byte")
    root_path = Path(os.path.realpath(root)) if root is not None else None
    if root_path is not None and not root_path.is_dir():
        raise WorkbenchError(f"--root {root}: no such folder")
    entries: list[_Entry] = []
    items: list[_Item] = []
    for raw in paths:     # every input is read (and a bad one refused) before anything is written
        src, found, found_items = _collect(raw, root_path, source, report)
        entries += found
        items += found_items
        if src not in report.sources:
            report.sources.append(src)
    inspected = _inspect_all(entries, workers)
    now = utcnow()
    with ws.store.write() as conn:
        writer = _Writer(conn, report, source, refresh, now)
        for e, (rec, reason) in zip(entries, inspected):
            writer.entry(e, rec, reason)
        if writer.retire:
            _retire(conn, writer.retire, writer.where_seen, report)
        for item in items:
            image_id = writer.image_of.get(id(item.entry)) if item.entry is not None else None
            conn.execute(
                "INSERT OR REPLACE INTO dataset_items(source, item_id, image_id, task_name, question, answer, "
                "conversations) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (item.source, item.item_id, image_id, item.fields["task_name"], item.fields["question"],
                 item.fields["answer"], item.fields["conversations"]))
            report.dataset_items += 1
    return report


def _collect(raw: str | Path, root_path: Path | None, source: str | None,
             report: RegisterReport) -> tuple[str, list[_Entry], list[_Item]]:
    """(source name, files to read, dataset items) of one input: a folder, a manifest or one file."""
    p = Path(raw)
    if "\x00" in str(raw):
        raise WorkbenchError(f"{_printable(raw)!r}: the path contains a NUL byte; nothing was registered")
    if not p.exists():
        raise WorkbenchError(f"{p}: no such file or folder; nothing was registered")
    if p.is_dir():
        base = root_path or Path(os.path.realpath(p))
        src = source or p.resolve().name or "images"
        entries = []
        for f in _walk_folder(p):
            full = Path(os.path.realpath(f))
            if not full.is_relative_to(base):      # a symlink out of the root
                entries.append(_Entry(base, str(f), src, f"{f} is not under the root {base}; refused"))
                continue
            entries.append(_Entry(base, full.relative_to(base).as_posix(), src))
        return src, entries, []
    if p.suffix.lower() in MANIFEST_EXTENSIONS:
        src = source or p.stem
        return (src, *_manifest_entries(p, root_path or Path(os.path.realpath(p.parent)), src, report))
    # an image file, or anything else that is not a folder: read (or refused) as one file
    full = Path(os.path.realpath(p))
    base = root_path or full.parent
    src = source or full.parent.name or "images"
    if not full.is_relative_to(base):
        raise WorkbenchError(f"{p}: not under --root {base}")
    return src, [_Entry(base, full.relative_to(base).as_posix(), src)], []


def _manifest_entries(path: Path, base: Path, src: str,
                      report: RegisterReport) -> tuple[list[_Entry], list[_Item]]:
    """The image files a manifest names (each resolved against `base`, or refused) and its dataset items."""
    entries: list[_Entry] = []
    items: list[_Item] = []
    seen_ids: dict[str, int] = {}
    manifest = _read_manifest(path)
    if not any("image" in obj or "images" in obj for _, obj in manifest):   # e.g. {"data": [...]}: not a manifest
        keys = ", ".join(sorted(manifest[0][1])[:8]) if manifest else ""
        raise WorkbenchError(f"{path}: no entry names an image ({len(manifest)} entr(ies)"
                             + (f"; the first has the keys {keys or 'none'}" if manifest else "")
                             + "); expected a LLaVA JSON array (or JSONL) of {id, image, conversations} objects. "
                             "Nothing was registered")
    for n, obj in manifest:
        imgs = obj.get("image", obj.get("images"))
        if imgs is None:
            report.skipped_items += 1
            continue
        item_id = str(obj.get("id", n))
        if item_id in seen_ids:  # ids repeat in some released datasets
            seen_ids[item_id] += 1
            item_id = f"{item_id}#{seen_ids[item_id]}"
        else:
            seen_ids[item_id] = 0
        first_entry = None
        for rel in imgs if isinstance(imgs, list) else [imgs]:
            resolved, why = _within(base, rel) if isinstance(rel, str) else (None, "image is not a string")
            if why:
                e = _Entry(base, _printable(rel), src, f"{path.name}:{n}: {why}")
            else:
                assert resolved is not None  # _within gives a path whenever it gives no reason
                e = _Entry(base, resolved.relative_to(base).as_posix(), src)
            entries.append(e)
            first_entry = first_entry or e
        items.append(_Item(src, item_id, first_entry, _item_fields(obj)))
    return entries, items


def _item_fields(obj: dict) -> dict:
    q, a = _first_turns(obj.get("conversations"))
    task = next((str(obj[k]) for k in TASK_KEYS if obj.get(k)), None)
    return {"task_name": task, "question": q, "answer": a,
            "conversations": json.dumps(obj.get("conversations"), ensure_ascii=False)}


def _inspect_all(entries: list[_Entry], workers: int | None) -> list[tuple[dict | None, str | None]]:
    """(record, None) or (None, reason) per entry; a refused entry is not read."""
    todo = [e for e in entries if e.refused is None]
    # Threads: Pillow releases the GIL while decoding and hashlib while hashing.
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2))) as pool:
        results = iter(list(pool.map(lambda e: _inspect(e.root / e.rel), todo, chunksize=16)))
    return [(None, e.refused) if e.refused is not None else next(results) for e in entries]


@dataclass
class _Writer:
    """Writes one run's files into `images` / `image_problems`, remembering what the run saw."""

    conn: sqlite3.Connection
    report: RegisterReport
    source: str | None              # the caller's source name (None: each input's own)
    refresh: bool
    now: str
    image_of: dict[int, str] = field(default_factory=dict)                    # id(entry) -> image id
    where_seen: dict[str, set[tuple[str, str]]] = field(default_factory=dict)   # id -> (root, path) holding it
    retire: dict[str, str] = field(default_factory=dict)                      # old id -> its path's new id

    def entry(self, e: _Entry, rec: dict | None, reason: str | None) -> None:
        key = (str(e.root), e.rel)
        if rec is None:
            assert reason is not None  # no record always comes with a reason (refused entry or _inspect's why)
            self._problem(str(e.root / e.rel) if e.refused is None else e.rel, key, e.source, reason)
            return
        self.where_seen.setdefault(rec["id"], set()).add(key)
        registered = self.conn.execute("SELECT id, source FROM images WHERE root=? AND path=?", key).fetchall()
        src = e.source
        if registered and rec["id"] not in {r["id"] for r in registered}:
            old = registered[0]
            if not self.refresh:
                self._changed(e, key, old, rec)
                return
            self.report.refreshed += 1
            src = self.source if self.source is not None else old["source"]
        if self.refresh:
            # every other id this path was registered under is stale (older versions left duplicates)
            for r in registered:
                if r["id"] != rec["id"]:
                    self.retire.setdefault(r["id"], rec["id"])
        self._register(e, key, rec, src)

    def _problem(self, where: str, key: tuple[str, str], source: str, reason: str) -> None:
        self.report.problems.append(Problem(where, reason))
        self.conn.execute("INSERT OR REPLACE INTO image_problems(root, path, source, reason, created_at) "
                          "VALUES (?, ?, ?, ?, ?)", (*key, source, reason, self.now))

    def _changed(self, e: _Entry, key: tuple[str, str], old, rec: dict) -> None:
        """A registered path with other content now, without refresh: reported; the old id stays."""
        reason = (f"{CHANGED}: the file is no longer the content registered as image {old['id'][:12]} "
                  f"(it is {rec['id'][:12]} now); the old id and its embeddings are kept until you "
                  "re-register it: run the same `workbench images add` with --refresh")
        self.report.changed += 1
        self._problem(str(e.root / e.rel), key, old["source"], reason)
        self.image_of[id(e)] = old["id"]

    def _register(self, e: _Entry, key: tuple[str, str], rec: dict, src: str) -> None:
        self.conn.execute("DELETE FROM image_problems WHERE root=? AND path=?", key)
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO images(id, path, root, source, width, height, format, mode, bytes, "
            "mtime_ns, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rec["id"], e.rel, str(e.root), src, rec["width"], rec["height"], rec["format"],
             rec["mode"], rec["bytes"], rec["mtime_ns"], self.now))
        if cur.rowcount:
            self.report.added += 1
        else:
            self.report.already += 1
            # the same file again (perhaps touched): keep its size and mtime current
            self.conn.execute("UPDATE images SET bytes=?, mtime_ns=? WHERE id=? AND root=? AND path=?",
                              (rec["bytes"], rec["mtime_ns"], rec["id"], *key))
        self.image_of[id(e)] = rec["id"]


DERIVED_TABLES = ("matches", "filter_decisions", "samples")   # rows made from an image's content


def _retire(conn, retire: dict[str, str], where_seen: dict[str, set], report: RegisterReport) -> None:
    """Old ids of refreshed paths: move the row to another file of the old content seen in this run, else
    delete it (its matches, filter decisions and samples were made from content that is gone; they go with
    it). Dataset items that named the old id now name the new content of their file."""
    for old_id, new_id in retire.items():
        row = conn.execute("SELECT root, path FROM images WHERE id=?", (old_id,)).fetchone()
        if row is None:
            continue
        elsewhere = sorted(k for k in where_seen.get(old_id, ()) if k != (row["root"], row["path"]))
        if elsewhere:
            conn.execute("UPDATE images SET root=?, path=? WHERE id=?", (*elsewhere[0], old_id))
            continue
        conn.execute("UPDATE dataset_items SET image_id=? WHERE image_id=?", (new_id, old_id))
        for table in DERIVED_TABLES:
            try:
                n = conn.execute(f"SELECT count(*) FROM {table} WHERE image_id=?", (old_id,)).fetchone()[0]
            except sqlite3.OperationalError:          # a component that is not installed
                continue
            report.dropped[table] = report.dropped.get(table, 0) + int(n)
        conn.execute("DELETE FROM images WHERE id=?", (old_id,))
        report.retired.append(old_id)


# -- reading -----------------------------------------------------------------------------------
def image_path(ws: Workspace, image_id: str) -> Path:
    """The absolute path of a registered image."""
    row = ws.store.one("SELECT root, path FROM images WHERE id=?", (image_id,))
    if row is None:
        raise ImageError(f"no image with id {image_id!r}; `workbench images report WORKSPACE` lists images")
    return Path(row["root"]) / row["path"]


def load_image_rgb(ws: Workspace, image_id: str):
    """A registered image as 8-bit RGB (EXIF orientation applied, transparency on white). Raises
    `ImageChanged` if the file no longer holds the content registered under `image_id`."""
    try:
        return open_rgb(image_path(ws, image_id), expect_id=image_id)
    except ImageChanged as exc:
        row = ws.store.one("SELECT root, path FROM images WHERE id=?", (image_id,))
        raise ImageChanged(f"{exc}; {refresh_hint(ws, row['root'], row['path'])}") from None


def refresh_hint(ws: Workspace, root: str, path: str) -> str:
    """What to run to register a changed file's new content."""
    return (f"re-register it with `workbench images add {ws.root} {Path(root) / path} --root {root} --refresh` "
            "(or the same `images add` as before with --refresh)")


def open_rgb(path: Path, *, min_side: int | None = None, expect_id: str | None = None):
    """A file as 8-bit RGB; min_side lets a large JPEG decode at a reduced scale (see `decode`).
    expect_id: the content's registered id; a file whose bytes hash otherwise raises `ImageChanged`."""
    data, _, why = read_regular(Path(path))
    if data is None:
        assert why is not None  # read_regular gives a reason whenever it gives no bytes
        if why in ("file not found",) or why.startswith("cannot read"):
            raise ImageError(f"{path}: cannot read the image ({why}); was it moved? Register it again with "
                             "`workbench images add`")
        raise ImageError(f"{path}: {why}")
    if expect_id is not None and hashlib.sha256(data).hexdigest() != expect_id:
        raise ImageChanged(f"{path}: {CHANGED}: its content is no longer image {expect_id[:12]}")
    img, reason = decode(data, max_pixels=MAX_PIXELS, min_side=min_side)
    if img is None:
        raise ImageError(f"{path}: {reason}")
    return to_rgb(img)


def image_count(ws: Workspace) -> int:
    return int(ws.store.scalar("SELECT count(*) FROM images"))


def check_registered(ws: Workspace) -> tuple[list[dict], list[dict]]:
    """(changed, missing): registered files whose content is no longer their id, and files that are gone.

    One stat per image: a different size is a change; a different mtime (same size) is confirmed by hashing
    the file, and a mere touch updates the recorded mtime. Rows registered before mtimes were recorded are
    checked by size only (readers that know the id hash the bytes anyway).
    """
    changed, missing, touched = [], [], []
    for r in ws.store.query("SELECT id, source, root, path, bytes, mtime_ns FROM images ORDER BY source, path"):
        path = Path(r["root"]) / r["path"]
        row = {"id": r["id"], "source": r["source"], "root": r["root"], "path": r["path"]}
        try:
            st = os.stat(path)
        except FileNotFoundError:
            missing.append({**row, "reason": "missing: the file is gone since registration"})
            continue
        except (OSError, ValueError) as exc:
            missing.append({**row, "reason": f"cannot stat the file: {getattr(exc, 'strerror', None) or exc}"})
            continue
        if not stat_mod.S_ISREG(st.st_mode):
            changed.append({**row, "reason": f"{CHANGED}: now {_file_kind(st.st_mode)}, not a regular file"})
            continue
        if r["bytes"] is not None and st.st_size != r["bytes"]:
            changed.append({**row, "reason": f"{CHANGED}: {r['bytes']:,} bytes then, {st.st_size:,} now; "
                                             + refresh_hint(ws, r["root"], r["path"])})
            continue
        if r["mtime_ns"] is None or st.st_mtime_ns == r["mtime_ns"]:
            continue
        data, st2, _ = read_regular(path)
        if data is None:
            continue
        assert st2 is not None  # read_regular returns the stat with the bytes
        if hashlib.sha256(data).hexdigest() == r["id"]:
            touched.append((st2.st_mtime_ns, r["id"]))
        else:
            changed.append({**row, "reason": f"{CHANGED}: same size, other content; "
                                             + refresh_hint(ws, r["root"], r["path"])})
    if touched:
        with ws.store.write() as conn:
            conn.executemany("UPDATE images SET mtime_ns=? WHERE id=?", touched)
    return changed, missing


def images_report(ws: Workspace, *, check_files: bool = True) -> dict:
    """Counts per source, every recorded problem, and (check_files) registered files changed or missing
    since registration (what `workbench images report` prints)."""
    per_source = [dict(r) for r in ws.store.query(
        "SELECT source, count(*) AS images, sum(bytes) AS bytes FROM images GROUP BY source ORDER BY source")]
    problems = [dict(r) for r in ws.store.query(
        "SELECT source, root, path, reason FROM image_problems ORDER BY source, path")]
    datasets = [dict(r) for r in ws.store.query(
        "SELECT source, count(*) AS items, count(image_id) AS with_image, count(task_name) AS with_task "
        "FROM dataset_items GROUP BY source ORDER BY source")]
    changed, missing = check_registered(ws) if check_files else ([], [])
    return {"images": image_count(ws), "per_source": per_source, "problems": problems, "datasets": datasets,
            "changed": changed, "missing": missing}
