"""The image registry: folders and LLaVA-style manifests → `images`, `image_problems`, `dataset_items`.

An image's id is the sha256 of its bytes, so the same file registered twice (or from two paths)
is one image. Every file is fully decoded once at registration; a file that cannot be used
(empty, truncated, not an image, a decompression bomb, ...) is recorded in `image_problems` with
its reason and the run goes on. Odd pixel formats (CMYK, 16-bit, palette with transparency, alpha)
are converted to RGB by `to_rgb`, the one conversion every later stage sees through
`load_image_rgb`.

Manifest paths are resolved against a declared root; one that escapes it (`../`, an absolute
path elsewhere, a symlink out) is refused and recorded, never read.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from workbench.errors import WorkbenchError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MANIFEST_EXTENSIONS = {".json", ".jsonl"}
# Same default as Pillow: above this many pixels an image is treated as a decompression bomb.
MAX_PIXELS = 89_478_485
TASK_KEYS = ("task_type", "task_name", "task", "tasktype", "category")


class ImageError(WorkbenchError):
    """An image cannot be read (missing, unreadable)."""


@dataclass
class Problem:
    path: str
    reason: str


@dataclass
class RegisterReport:
    added: int = 0
    already: int = 0                    # same content registered before (this run or earlier)
    problems: list[Problem] = field(default_factory=list)
    dataset_items: int = 0
    skipped_items: int = 0              # manifest entries without an image
    sources: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = (f"{self.added} image(s) added, {self.already} file(s) whose content was already registered, "
             f"{len(self.problems)} problem(s)")
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
            img = Image.open(io.BytesIO(data))
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


def _inspect(abs_path: Path) -> tuple[dict | None, str | None]:
    """Read, hash and decode one file: (record, None) or (None, reason)."""
    try:
        data = abs_path.read_bytes()
    except FileNotFoundError:
        return None, "file not found"
    except IsADirectoryError:
        return None, "is a folder, not a file"
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    img, reason = decode(data)
    if img is None:
        return None, reason
    try:
        to_rgb(img)  # prove the conversion works now, not in a later stage
    except Exception as exc:  # noqa: BLE001 - any Pillow failure is this file's problem
        return None, f"cannot convert {img.mode} to RGB: {exc}"
    return {"id": hashlib.sha256(data).hexdigest(), "width": img.size[0], "height": img.size[1],
            "format": (img.format or abs_path.suffix.lstrip(".")).upper(), "mode": img.mode,
            "bytes": len(data)}, None


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


def _within(root: Path, rel: str) -> tuple[Path | None, str | None]:
    """The resolved file for a manifest path, or why it is refused."""
    if not rel or not isinstance(rel, str):
        return None, "empty image path"
    candidate = Path(rel)
    full = (candidate if candidate.is_absolute() else root / candidate)
    resolved = Path(os.path.realpath(full))
    if not resolved.is_relative_to(root):
        return None, (f"image path {rel!r} escapes the declared root {root}; refused (put the images under "
                      "the root, or pass --root a folder that contains them)")
    return resolved, None


def _read_manifest(path: Path) -> list[tuple[int, dict]]:
    """(line or index, entry) for a LLaVA JSON array or a JSONL file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
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
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); nothing was registered") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise WorkbenchError(f"{path}: expected a LLaVA JSON array of {{id, image, conversations}} objects; "
                             "nothing was registered")
    return list(enumerate(data, 1))


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
def register_images(ws, paths: Iterable[str | Path], *, root: str | Path | None = None,
                    source: str | None = None, workers: int | None = None) -> RegisterReport:
    """Register image folders (recursive), single image files and LLaVA JSON/JSONL manifests.

    Folder and file paths are stored relative to `root` (default: the folder itself / the file's
    folder); manifest paths are resolved against `root` (default: the manifest's folder).
    """
    from workbench.clock import utcnow

    if isinstance(paths, (str, Path)):
        paths = [paths]
    report = RegisterReport()
    entries: list[_Entry] = []
    items: list[tuple[str, str, _Entry | None, dict]] = []   # (source, item_id, entry, fields)
    root_path = Path(os.path.realpath(root)) if root is not None else None
    if root_path is not None and not root_path.is_dir():
        raise WorkbenchError(f"--root {root}: no such folder")
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise WorkbenchError(f"{p}: no such file or folder; nothing was registered")
        if p.is_dir():
            base = root_path or Path(os.path.realpath(p))
            src = source or p.resolve().name or "images"
            for f in _walk_folder(p):
                full = Path(os.path.realpath(f))
                if not full.is_relative_to(base):
                    entries.append(_Entry(base, str(f), src, f"{f} is not under the root {base}; refused"))
                    continue
                entries.append(_Entry(base, full.relative_to(base).as_posix(), src))
        elif p.suffix.lower() in MANIFEST_EXTENSIONS:
            base = root_path or Path(os.path.realpath(p.parent))
            src = source or p.stem
            seen_ids: dict[str, int] = {}
            for n, obj in _read_manifest(p):
                imgs = obj.get("image", obj.get("images"))
                if imgs is None:
                    report.skipped_items += 1
                    continue
                imgs = imgs if isinstance(imgs, list) else [imgs]
                item_id = str(obj.get("id", n))
                if item_id in seen_ids:  # ids repeat in some released datasets
                    seen_ids[item_id] += 1
                    item_id = f"{item_id}#{seen_ids[item_id]}"
                else:
                    seen_ids[item_id] = 0
                q, a = _first_turns(obj.get("conversations"))
                task = next((str(obj[k]) for k in TASK_KEYS if obj.get(k)), None)
                fields = {"task_name": task, "question": q, "answer": a,
                          "conversations": json.dumps(obj.get("conversations"), ensure_ascii=False)}
                first_entry = None
                for rel in imgs:
                    resolved, why = _within(base, rel) if isinstance(rel, str) else (None, "image is not a string")
                    if why:
                        e = _Entry(base, str(rel), src, f"{p.name}:{n}: {why}")
                    else:
                        e = _Entry(base, resolved.relative_to(base).as_posix(), src)
                    entries.append(e)
                    first_entry = first_entry or e
                items.append((src, item_id, first_entry, fields))
        elif p.suffix.lower() in IMAGE_EXTENSIONS or p.is_file():
            full = Path(os.path.realpath(p))
            base = root_path or full.parent
            src = source or full.parent.name or "images"
            if not full.is_relative_to(base):
                raise WorkbenchError(f"{p}: not under --root {base}")
            entries.append(_Entry(base, full.relative_to(base).as_posix(), src))
        if src not in report.sources:
            report.sources.append(src)

    # Decode in threads: Pillow releases the GIL while decoding and hashlib while hashing.
    todo = [e for e in entries if e.refused is None]
    n_workers = workers or min(8, (os.cpu_count() or 2))
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        results = list(pool.map(lambda e: _inspect(e.root / e.rel), todo, chunksize=16))
    by_entry = {id(e): r for e, r in zip(todo, results)}

    now = utcnow()
    image_of: dict[int, str] = {}
    with ws.store.write() as conn:
        for e in entries:
            key = (str(e.root), e.rel)
            if e.refused is not None:
                reason = e.refused
                rec = None
            else:
                rec, reason = by_entry[id(e)]
            if rec is None:
                report.problems.append(Problem(str(e.root / e.rel) if e.refused is None else e.rel, reason))
                conn.execute("INSERT OR REPLACE INTO image_problems(root, path, source, reason, created_at) "
                             "VALUES (?, ?, ?, ?, ?)", (*key, e.source, reason, now))
                continue
            conn.execute("DELETE FROM image_problems WHERE root=? AND path=?", key)
            cur = conn.execute(
                "INSERT OR IGNORE INTO images(id, path, root, source, width, height, format, mode, bytes, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rec["id"], e.rel, str(e.root), e.source, rec["width"], rec["height"], rec["format"],
                 rec["mode"], rec["bytes"], now))
            if cur.rowcount:
                report.added += 1
            else:
                report.already += 1
            image_of[id(e)] = rec["id"]
        for src, item_id, entry, fields in items:
            image_id = image_of.get(id(entry)) if entry is not None else None
            conn.execute(
                "INSERT OR REPLACE INTO dataset_items(source, item_id, image_id, task_name, question, answer, "
                "conversations) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (src, item_id, image_id, fields["task_name"], fields["question"], fields["answer"],
                 fields["conversations"]))
            report.dataset_items += 1
    return report


# -- reading -----------------------------------------------------------------------------------
def image_path(ws, image_id: str) -> Path:
    """The absolute path of a registered image."""
    row = ws.store.one("SELECT root, path FROM images WHERE id=?", (image_id,))
    if row is None:
        raise ImageError(f"no image with id {image_id!r}; `workbench images report WORKSPACE` lists images")
    return Path(row["root"]) / row["path"]


def load_image_rgb(ws, image_id: str):
    """A registered image as 8-bit RGB (EXIF orientation applied, transparency on white)."""
    return open_rgb(image_path(ws, image_id))


def open_rgb(path: Path, *, min_side: int | None = None):
    """A file as 8-bit RGB; min_side lets a large JPEG decode at a reduced scale (see `decode`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read the image ({exc.strerror or exc}); was it moved? Register it "
                         "again with `workbench images add`") from None
    img, reason = decode(data, max_pixels=MAX_PIXELS, min_side=min_side)
    if img is None:
        raise ImageError(f"{path}: {reason}")
    return to_rgb(img)


def image_count(ws) -> int:
    return int(ws.store.scalar("SELECT count(*) FROM images"))


def images_report(ws) -> dict:
    """Counts per source and every recorded problem (what `workbench images report` prints)."""
    per_source = [dict(r) for r in ws.store.query(
        "SELECT source, count(*) AS images, sum(bytes) AS bytes FROM images GROUP BY source ORDER BY source")]
    problems = [dict(r) for r in ws.store.query(
        "SELECT source, root, path, reason FROM image_problems ORDER BY source, path")]
    datasets = [dict(r) for r in ws.store.query(
        "SELECT source, count(*) AS items, count(image_id) AS with_image, count(task_name) AS with_task "
        "FROM dataset_items GROUP BY source ORDER BY source")]
    return {"images": image_count(ws), "per_source": per_source, "problems": problems, "datasets": datasets}
