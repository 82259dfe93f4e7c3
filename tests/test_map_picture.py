"""map_picture: the embedding map drawn on the server as a PNG of every point."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from workbench.apps.dashboard import map_picture as mp


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_extremes_land_inside_the_padding_and_y_points_up():
    cols, rows = mp.to_pixels(np.array([0.0, 10.0, 5.0]), np.array([0.0, 10.0, 5.0]), 101, 51)
    assert cols.tolist() == [mp.PAD, 100 - mp.PAD, 50]
    assert rows.tolist() == [50 - mp.PAD, mp.PAD, 25]          # the largest y at the top, as in the scatter
    c, r = mp.to_pixels(np.array([3.0, 3.0]), np.array([1.0, 1.0]), 101, 51)   # no extent: the centre
    assert c.tolist() == [50, 50] and r.tolist() == [25, 25]


def test_every_point_is_drawn_in_its_colour_and_later_layers_cover_earlier_ones():
    x = np.array([0.0, 1.0, 0.0, 1.0])
    y = np.array([0.0, 0.0, 1.0, 1.0])
    red, blue, green = (255, 0, 0), (0, 0, 255), (0, 160, 0)
    layers = [mp.Layer(np.array([0, 1, 2]), np.array([red, blue, red], np.uint8), 3),
              mp.Layer(np.array([2, 3]), np.array([green, green], np.uint8), 3, rim=1)]
    img = _decode(mp.draw(x, y, layers, width=60, height=40))
    assert img.shape == (40, 60, 3)
    cols, rows = mp.to_pixels(x, y, 60, 40)
    at = [tuple(img[r, c]) for c, r in zip(cols, rows)]
    assert at == [red, blue, green, green]               # point 2 was red, the second layer drew over it
    assert tuple(img[rows[3], cols[3] + 2]) == mp.RIM     # the rim around a task-type mark
    assert tuple(img[20, 30]) == (255, 255, 255)          # nothing drawn between the points


def test_rings_are_hollow_and_fade_the_map_under_them():
    x, y = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    grey = (100, 100, 100)
    layers = [mp.Layer(np.array([0, 1]), np.array([grey, grey], np.uint8), 3),
              mp.Layer(np.array([1]), np.array([(200, 0, 0)], np.uint8), 9, rim=2, hollow=True)]
    img = _decode(mp.draw(x, y, layers, dim=0.5, width=60, height=40))
    cols, rows = mp.to_pixels(x, y, 60, 40)
    assert tuple(img[rows[0], cols[0]]) == (177, 177, 177)            # faded halfway to white
    assert tuple(img[rows[1], cols[1]]) == (177, 177, 177)            # the ring leaves its centre alone
    assert tuple(img[rows[1] - 4, cols[1]]) == (200, 0, 0)            # ...and draws its edge


def test_extent_lays_the_picture_so_every_stamp_sits_on_its_point():
    """Laid out over `extent` (its edges in data units), each point's pixel centre is the point itself, to within the
    half pixel `to_pixels` rounds to."""
    x, y = np.array([-3.0, 5.0, 1.0]), np.array([2.0, 10.0, 4.0])
    w, h = 101, 51
    left, right, bottom, top = mp.extent(x, y, w, h)
    cols, rows = mp.to_pixels(x, y, w, h)
    at_x = left + (cols + 0.5) * (right - left) / w       # a pixel's centre, back in data units
    at_y = top - (rows + 0.5) * (top - bottom) / h
    px, py = (right - left) / w, (top - bottom) / h   # one pixel in data units
    assert np.abs(at_x - x).max() <= px / 2 + 1e-9 and np.abs(at_y - y).max() <= py / 2 + 1e-9
