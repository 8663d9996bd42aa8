"""Resampling for ``--render-scale``: chroma is predicted at 1/k of the resolution and
upsampled under the full-resolution L. Pure functions of arrays and integers.

Pixel centres are aligned: full-resolution pixel ``p`` sits at ``(p + 0.5) / k - 0.5`` in
the reduced grid, so a block of k x k full pixels maps onto one reduced pixel.
"""

from __future__ import annotations

import math

import numpy as np


def reduced_length(length: int, k: int) -> int:
    return math.ceil(length / k)


def downsample_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over each k x k cell of a (h, w) array; a partial cell at the far edges averages
    the pixels it has. Returns float32, shape (ceil(h/k), ceil(w/k))."""
    x = np.asarray(x, dtype=np.float32)
    if k == 1:
        return x
    h, w = x.shape
    rows = np.add.reduceat(x, np.arange(0, h, k), axis=0)
    sums = np.add.reduceat(rows, np.arange(0, w, k), axis=1)
    ny = np.minimum(k, h - np.arange(0, h, k))
    nx = np.minimum(k, w - np.arange(0, w, k))
    return (sums / np.outer(ny, nx)).astype(np.float32)


def source_span(start: int, stop: int, k: int, src_len: int) -> tuple[int, int]:
    """The reduced pixels ``[lo, hi)`` that bilinear upsampling of full pixels
    ``[start, stop)`` reads."""
    lo = max(0, math.floor((start + 0.5) / k - 0.5))
    hi = min(src_len, math.floor((stop - 0.5) / k - 0.5) + 2)
    return lo, hi


def _axis(start: int, stop: int, k: int, src_len: int, src_lo: int):
    s = np.clip((np.arange(start, stop, dtype=np.float64) + 0.5) / k - 0.5, 0, src_len - 1)
    i0 = np.floor(s).astype(np.int64)
    i1 = np.minimum(i0 + 1, src_len - 1)
    return i0 - src_lo, i1 - src_lo, (s - i0).astype(np.float32)


def upsample_bilinear(src: np.ndarray, src_origin: tuple[int, int], k: int,
                      rows: tuple[int, int], cols: tuple[int, int],
                      src_shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of part of a reduced image.

    Parameters
    ----------
    src : array (h', w', C)
        Reduced pixels ``src_origin[0]:, src_origin[1]:`` of a reduced image of shape
        ``src_shape``; must cover ``source_span`` of ``rows`` and ``cols``.
    rows, cols : (start, stop)
        The full-resolution pixels wanted.

    Returns
    -------
    array (rows, cols, C), float32
    """
    y0, y1, wy = _axis(*rows, k, src_shape[0], src_origin[0])
    x0, x1, wx = _axis(*cols, k, src_shape[1], src_origin[1])
    wy, wx = wy[:, None, None], wx[None, :, None]
    top = src[y0][:, x0] * (1 - wx) + src[y0][:, x1] * wx
    bottom = src[y1][:, x0] * (1 - wx) + src[y1][:, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)
