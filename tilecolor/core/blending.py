"""Blending weights for overlapping tiles. Pure functions of the tiling geometry.

A tile's 1-D window is 1 in its core and, on each side that overlaps a neighbouring tile,
rises as a raised cosine across that overlap (at most half a tile). Sides that touch the
image border get no taper. Where two tiles overlap by at most half a tile the falling ramp
of one and the rising ramp of the other sum to exactly 1; denser tilings are normalized by
the weight sum. 2-D windows are outer products of the two axes' windows, so the weight sum
over the whole image is separable too: ``sum_w(y, x) = sum_y(y) * sum_x(x)``.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from tilecolor.core.tiling import tile_origins


class Blend(StrEnum):
    """How overlapping tile predictions are merged."""

    COSINE = "cosine"  #: raised-cosine ramps across each overlap (default)
    UNIFORM = "uniform"  #: the paper's plain average


def raised_cosine(n: int) -> np.ndarray:
    """Rising ramp of ``n`` samples strictly inside (0, 1): ``0.5 - 0.5 cos(pi (i + 0.5) / n)``."""
    i = np.arange(n, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / n)


def axis_windows(length: int, tile: int, stride: int, blend: Blend | str) -> np.ndarray:
    """Weights of every tile along one axis.

    Returns
    -------
    numpy.ndarray of float32, shape (n_tiles, tile)
        Row ``i`` weights the pixels of the tile at ``tile_origins(...)[i]``; all weights
        are in (0, 1].
    """
    blend = Blend(blend)
    origins = tile_origins(length, tile, stride)
    windows = np.ones((len(origins), tile), dtype=np.float64)
    if blend is Blend.UNIFORM:
        return windows.astype(np.float32)
    for i, origin in enumerate(origins):
        if i > 0:
            ramp = min(int(origins[i - 1]) + tile - int(origin), tile // 2)
            if ramp > 0:
                windows[i, :ramp] *= raised_cosine(ramp)
        if i < len(origins) - 1:
            ramp = min(int(origin) + tile - int(origins[i + 1]), tile // 2)
            if ramp > 0:
                windows[i, tile - ramp :] *= raised_cosine(ramp)[::-1]
    return windows.astype(np.float32)


def axis_weight_sum(length: int, tile: int, stride: int, blend: Blend | str) -> np.ndarray:
    """Sum of all tile windows along one axis, shape (length,), float32, every entry > 0."""
    origins = tile_origins(length, tile, stride)
    windows = axis_windows(length, tile, stride, blend).astype(np.float64)
    total = np.zeros(max(length, tile), dtype=np.float64)
    for origin, window in zip(origins, windows, strict=True):
        total[origin : origin + tile] += window
    return total[:length].astype(np.float32)
