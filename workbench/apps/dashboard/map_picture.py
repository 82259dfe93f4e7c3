"""The embedding map drawn on the server as one PNG: every point, no sampling, in the browser in the time an image
takes. A WebGL scatter of a large map costs seconds of browser time on a machine without a GPU (measured at paper
scale, 119k points: 3.2 s for the page with a 20k-point sample against 1.3 s with this picture), so a large map
opens as a picture and the interactive scatter (hover, zoom, lasso) is one click away.

Points are square stamps: images small, task types larger with a dark rim, drawn over the images; a later group in
the draw order covers an earlier one where they overlap, so images are drawn in a fixed shuffled order (no colour
group hides another by coming last).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 1400, 760
PAD = 6   # px kept free at the edges, so the largest stamp never leaves the canvas
RIM = (34, 34, 34)


@dataclass(frozen=True)
class Layer:
    """Points drawn alike: rows into x/y, one colour per row (uint8 RGB), a square stamp of `size` px, and an
    optional rim of `rim` px in RIM colour around it (`hollow`: the rim only, in the row's colour: rings)."""
    rows: np.ndarray
    rgb: np.ndarray
    size: int
    rim: int = 0
    hollow: bool = False


def hex_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def to_pixels(x: np.ndarray, y: np.ndarray, width: int = WIDTH, height: int = HEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """Column and row of every point, the map's extent fitted to the canvas (y up, as in the scatter)."""
    def scale(v, n, flip):
        lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
        t = (v - lo) / (hi - lo) if hi > lo else np.full(len(v), 0.5)
        t = 1 - t if flip else t
        return np.rint(PAD + t * (n - 1 - 2 * PAD)).astype(np.int32)
    if not len(x):
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    return scale(np.asarray(x, float), width, False), scale(np.asarray(y, float), height, True)


def extent(x: np.ndarray, y: np.ndarray, width: int = WIDTH, height: int = HEIGHT) -> tuple[float, float, float, float]:
    """(left, right, bottom, top) of the picture's edges in data units: where to lay it under a scatter of the same
    points so every stamp sits on its point (the inverse of `to_pixels`, at the outer edges of the edge pixels)."""
    def edges(v, n):
        lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        unit = (hi - lo) / (n - 1 - 2 * PAD)   # data units per pixel
        return lo - (PAD + 0.5) * unit, hi + (PAD + 0.5) * unit
    if not len(x):
        return 0.0, 1.0, 0.0, 1.0
    (left, right), (bottom, top) = edges(np.asarray(x, float), width), edges(np.asarray(y, float), height)
    return left, right, bottom, top


def _stamp(img: np.ndarray, cols: np.ndarray, rows: np.ndarray, rgb: np.ndarray, size: int) -> None:
    """A size×size square centred on each point (numpy fancy indexing: no Python loop over points)."""
    lo = -(size // 2)
    for dy in range(lo, lo + size):
        for dx in range(lo, lo + size):
            img[rows + dy, cols + dx] = rgb


def _ring(img: np.ndarray, cols: np.ndarray, rows: np.ndarray, rgb: np.ndarray, size: int, width: int) -> None:
    lo = -(size // 2)
    for dy in range(lo, lo + size):
        for dx in range(lo, lo + size):
            if min(dy - lo, dx - lo, lo + size - 1 - dy, lo + size - 1 - dx) < width:
                img[rows + dy, cols + dx] = rgb


def draw(x: np.ndarray, y: np.ndarray, layers: list[Layer], dim: float = 0.0,
         width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """PNG bytes of the layers drawn in order over a white canvas. `dim` (0–1) fades what is drawn so far toward
    white before each hollow layer, so rings read over a dense map."""
    img = np.full((height, width, 3), 255, np.uint8)
    cols, rows = to_pixels(x, y, width, height)
    for layer in layers:
        if not len(layer.rows):
            continue
        c, r = cols[layer.rows], rows[layer.rows]
        rgb = np.asarray(layer.rgb, np.uint8).reshape(-1, 3)
        if layer.hollow:
            if dim:
                img[:] = (img * (1 - dim) + 255 * dim).astype(np.uint8)
                dim = 0.0
            _ring(img, c, r, rgb, layer.size, max(1, layer.rim))
            continue
        if layer.rim:
            _stamp(img, c, r, np.asarray(RIM, np.uint8), layer.size + 2 * layer.rim)
        _stamp(img, c, r, rgb, layer.size)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)   # speed over size: ~200 kB either way
    return buf.getvalue()
