"""Pyramid levels, streamed: an image read in strips of whole rows, each strip written out
and halved into the next level, whose strips are halved in turn (:class:`StripPyramid`), so
memory is a few strips per level whatever the image size.

Pyramid rule (:func:`pyramid_shapes`): an image whose longer side is at most
``PYRAMID_MIN_SIDE`` (1024) px has no reduced levels; a larger one gets levels that halve
each side (rounding up) until the longer side is at most ``PYRAMID_TOP_SIDE`` (512) px.
Each level is the 2x2 mean of the one above, per channel, rounded half up; at an odd edge
the last row or column is averaged with itself (the mean of the pixels that exist).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

PYRAMID_MIN_SIDE = 1024  #: no reduced levels when the longer side is at most this
PYRAMID_TOP_SIDE = 512  #: levels halve until the longer side is at most this

Sink = Callable[[int, int, np.ndarray], None]


def pyramid_shapes(height: int, width: int) -> list[tuple[int, int]]:
    """(height, width) of every level, full resolution first.

    >>> pyramid_shapes(1000, 1024)
    [(1000, 1024)]
    >>> pyramid_shapes(1500, 2050)
    [(1500, 2050), (750, 1025), (375, 513), (188, 257)]
    """
    shapes = [(height, width)]
    if max(height, width) > PYRAMID_MIN_SIDE:
        while max(shapes[-1]) > PYRAMID_TOP_SIDE:
            h, w = shapes[-1]
            shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def downsample(pixels: np.ndarray) -> np.ndarray:
    """2x2 mean of an (h, w, c) integer array, rounded half up: (ceil(h/2), ceil(w/2), c).

    An odd last row or column is paired with itself, so edge pixels are the mean of the
    pixels that exist.
    """
    if pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3:
        from PIL import Image  # the same rounding and edges, in C: 2x faster than below

        return np.asarray(Image.fromarray(np.ascontiguousarray(pixels), "RGB").reduce(2))
    if pixels.shape[0] % 2:
        pixels = np.concatenate([pixels, pixels[-1:]], axis=0)
    if pixels.shape[1] % 2:
        pixels = np.concatenate([pixels, pixels[:, -1:]], axis=1)
    acc = np.uint16 if pixels.dtype.itemsize == 1 else np.uint32  # sum of 4 cannot overflow
    h, w, c = pixels.shape
    rows = pixels[0::2].astype(acc)  # pairs of whole rows first: contiguous, 2x faster
    rows += pixels[1::2]
    pairs = rows.reshape(h // 2, w // 2, 2 * c)  # then neighbouring pixels' channels
    total = pairs[..., :c] + pairs[..., c:]
    total += 2
    total >>= 2
    return total.astype(pixels.dtype)


class StripPyramid:
    """Turns the strips of level 0 into the strips of every level.

    Strips pushed for a level are handed to ``sink(level, y0, strip)`` and halved into the
    next level, which is pushed on in strips of ``rows`` rows (the last one shorter). Only
    one partial strip per level is buffered.

    Parameters
    ----------
    shapes : (height, width) of each level, from :func:`pyramid_shapes`.
    rows : strip height (even), the same for every level.
    sink : called with each level's strips in top-to-bottom order.
    """

    def __init__(self, shapes: list[tuple[int, int]], rows: int, sink: Sink) -> None:
        if rows < 2 or rows % 2:
            raise ValueError(f"strip rows must be even and >= 2, got rows={rows}")
        self.shapes, self.rows, self.sink = shapes, rows, sink
        self.y = [0] * len(shapes)
        self.pending: list[list[np.ndarray]] = [[] for _ in shapes]

    def push(self, level: int, strip: np.ndarray) -> None:
        """Hand the next strip of ``level`` (``rows`` rows unless it is the last) on."""
        self.sink(level, self.y[level], strip)
        self.y[level] += strip.shape[0]
        if level + 1 == len(self.shapes):
            return
        below = self.pending[level + 1]
        below.append(downsample(strip))
        if sum(s.shape[0] for s in below) >= self.rows or \
                self.y[level] >= self.shapes[level][0]:
            self.pending[level + 1] = []
            self.push(level + 1, np.concatenate(below))


def strips(pixels, rows: int) -> Iterator[np.ndarray]:
    """Row strips of an (H, W, ...) array-like (a zarr array is read strip by strip)."""
    for y in range(0, pixels.shape[0], rows):
        yield np.asarray(pixels[y : y + rows])


def tiles(row_strips: Iterable[np.ndarray], tile: int) -> Iterator[np.ndarray]:
    """Row-major TIFF tiles of strips ``tile`` rows high (tifffile pads the edge tiles)."""
    for strip in row_strips:
        for x in range(0, strip.shape[1], tile):
            yield strip[:, x : x + tile]


def pushed(rgb, pyramid: StripPyramid) -> Iterator[np.ndarray]:
    """Level 0's strips, each also pushed down the pyramid as it is read."""
    for strip in strips(rgb, pyramid.rows):
        pyramid.push(0, strip)
        yield strip


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
