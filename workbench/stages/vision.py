"""What the VLM stages share: images as data URLs, prompt loading, sample ids."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from pathlib import Path

from workbench.core.workspace import Workspace
from workbench.llm.cache import IMAGE_REF_PREFIX, storable_messages
from workbench.llm.prompts import PromptTemplate
from workbench.stages.base import LLMStage
from workbench.stages.images.register import image_path, open_rgb
from workbench.taxonomy.model import Taxonomy

SENDABLE = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
SAFE_MODES = {"RGB", "L", "RGBA", "LA", "P"}


def image_data_url(ws: Workspace, image_id: str) -> str:
    """The image as a data URL: the file itself when a VLM can read it and it is small enough,
    otherwise 8-bit RGB re-encoded (JPEG), downscaled to `[vision] image_max_side`."""
    row = ws.store.one("SELECT format, mode, width, height FROM images WHERE id=?", (image_id,))
    path = image_path(ws, image_id)
    max_side = ws.config.vision.image_max_side
    if _sent_as_is(ws, row):
        data = Path(path).read_bytes()
        mime = SENDABLE[(row["format"] or "").upper()]
    else:
        img = open_rgb(path)
        if max_side and max(img.size) > max_side:
            img.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=ws.config.vision.jpeg_quality)
        data, mime = buf.getvalue(), "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _sent_as_is(ws: Workspace, row) -> bool:
    """Whether the file itself is sent: a format VLMs read, small enough, a plain mode (CMYK JPEGs, 16-bit PNGs
    and the like are legal files that many VLM servers mis-read: they are re-encoded)."""
    if row is None:
        return False
    max_side = ws.config.vision.image_max_side
    small = not max_side or max(row["width"], row["height"]) <= max_side
    return (row["format"] or "").upper() in SENDABLE and small and (row["mode"] or "RGB") in SAFE_MODES


_SHA256 = re.compile(r"[0-9a-f]{64}")


def image_ref(ws: Workspace, image_id: str) -> str:
    """The image as the call key sees it (`llm/cache.py`: sha256 of the bytes sent): a file sent as is has its
    content hash as its id, so a dry run keys it without reading it; a re-encoded one is encoded."""
    row = ws.store.one("SELECT format, mode, width, height FROM images WHERE id=?", (image_id,))
    if _sent_as_is(ws, row) and _SHA256.fullmatch(image_id):   # (an id made some other way is not a content hash)
        return IMAGE_REF_PREFIX + image_id
    return storable_messages([{"content": [{"type": "image_url", "image_url": {"url": image_data_url(ws, image_id)}}]}]
                             )[0]["content"][0]["image_url"]["url"]


def task_types_per_image(ws: Workspace, sql: str, *, image_ids: list[str] | None = None,
                         limit: int | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """(image_id, [(node_id, path), ...]) from `sql` (rows of image_id, node_id in the wanted order), keeping
    live task types only; all images in id order, or `image_ids` in the order given; at most `limit`."""
    idx = Taxonomy.of(ws).index()
    by_image: dict[str, list[tuple[str, str]]] = {}
    for r in ws.store.query(sql):
        if r["node_id"] in idx.nodes:
            by_image.setdefault(r["image_id"], []).append((r["node_id"], idx.paths[r["node_id"]]))
    ids = sorted(by_image) if image_ids is None else [i for i in image_ids if i in by_image]
    return [(i, by_image[i]) for i in ids[:limit]]


def load_prompt(ws: Workspace, configured: str | None, default: str) -> PromptTemplate:
    return PromptTemplate.load(configured or default, workspace_root=ws.root)


def sample_id(image_id: str, node_or_label: str, question: str) -> str:
    return hashlib.sha256(f"{image_id}\x00{node_or_label}\x00{question}".encode()).hexdigest()[:24]


class UrlCache:
    """Data URLs computed once per image per run (the same image goes to several calls)."""

    def __init__(self, ws: Workspace, size: int = 64):
        self.ws = ws
        self.size = size
        self._d: dict[str, str] = {}

    def __call__(self, image_id: str) -> str:
        url = self._d.get(image_id)
        if url is None:
            if len(self._d) >= self.size:
                self._d.pop(next(iter(self._d)))
            url = self._d[image_id] = image_data_url(self.ws, image_id)
        return url


class ImageStage(LLMStage):
    """An LLM stage over rows that carry an `image_id`: the image goes with every call as a data URL.
    `image_ids`/`limit` narrow the rows (e.g. to try a prompt on a few images)."""

    default_prompt = ""

    def __init__(self, ws: Workspace, cfg, prompt: str | None = None, *, endpoint: str | None = None,
                 image_ids: list[str] | None = None, limit: int | None = None):
        """`cfg`: the stage's config section (prompt, temperature, max_tokens, endpoint)."""
        self.prompt = load_prompt(ws, prompt or cfg.prompt, self.default_prompt)
        self.params = {"temperature": cfg.temperature, **({"max_tokens": cfg.max_tokens} if cfg.max_tokens else {})}
        self.endpoint = endpoint or cfg.endpoint
        self.image_ids, self.limit = image_ids, limit
        self.urls = UrlCache(ws)

    def images(self, row) -> list[str]:
        if self.keying_only:       # a dry run: the key's content reference, no file read where the file is sent as is
            return [image_ref(self.urls.ws, row.image_id)]
        return [self.urls(row.image_id)]
