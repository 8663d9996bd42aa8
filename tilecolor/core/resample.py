"""Resampling between an image and a coarser grid: ``--render-scale`` (chroma predicted
at 1/k of the resolution and upsampled under the full-resolution L), the context copy and
the hint fields. Pure functions of arrays and numbers.

Pixel centres are aligned: full-resolution pixel ``p`` sits at ``(p + 0.5) / k - 0.5`` in
the coarse grid, so for an integer k a block of k x k full pixels maps onto one coarse
pixel. ``k`` may be any positive float, per axis (a reference image of arbitrary size).
Every output pixel is a function of its own coordinate alone, so upsampling a part of the
grid gives exactly (bit for bit) that part of upsampling the whole.
"""

from __future__ import annotations

import math

import numpy as np

Scale = float | tuple[float, float]  #: k, or (k_rows, k_cols)


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


def downsample_means(means: np.ndarray, m: int, g: int, shape: tuple[int, int]
                     ) -> np.ndarray:
    """Area means over (m*g)-cells from the means over g-cells (``downsample_mean(x, g)``)
    of an (H, W) = ``shape`` image: each g-cell weighted by its pixel count (cells at the
    far edges are partial), so the result is ``downsample_mean(x, m * g)`` up to float
    rounding. Returns float32, shape (ceil(H/(m*g)), ceil(W/(m*g)))."""
    if m == 1:
        return np.asarray(means, dtype=np.float32)
    h, w = shape
    ny = np.minimum(g, h - np.arange(0, h, g)).astype(np.float64)
    nx = np.minimum(g, w - np.arange(0, w, g)).astype(np.float64)
    if means.shape != (len(ny), len(nx)):
        raise ValueError(f"means of shape {means.shape} are not the {g}-cells of {shape}")
    sums = np.asarray(means, np.float64) * ny[:, None] * nx[None, :]
    ry, rx = np.arange(0, len(ny), m), np.arange(0, len(nx), m)
    sums = np.add.reduceat(np.add.reduceat(sums, ry, axis=0), rx, axis=1)
    counts = np.outer(np.add.reduceat(ny, ry), np.add.reduceat(nx, rx))
    return (sums / counts).astype(np.float32)


def _pair(k: Scale) -> tuple[float, float]:
    ky, kx = k if isinstance(k, tuple) else (k, k)
    if not (ky > 0 and kx > 0):
        raise ValueError(f"scale must be positive, got k={k!r}")
    return ky, kx


def source_span(start: int, stop: int, k: float, src_len: int) -> tuple[int, int]:
    """The coarse pixels ``[lo, hi)`` that bilinear upsampling of full pixels
    ``[start, stop)`` reads (``k``: full pixels per coarse pixel along this axis)."""
    lo = max(0, math.floor((start + 0.5) / k - 0.5))
    # the last pixel reads i0 and i0 + 1, with i0 its coordinate clipped to [0, src_len)
    hi = min(src_len, max(0, math.floor((stop - 0.5) / k - 0.5)) + 2)
    return lo, hi


def _axis(start: int, stop: int, k: float, src_len: int, src_lo: int):
    s = np.clip((np.arange(start, stop, dtype=np.float64) + 0.5) / k - 0.5, 0, src_len - 1)
    i0 = np.floor(s).astype(np.int64)
    i1 = np.minimum(i0 + 1, src_len - 1)
    return i0 - src_lo, i1 - src_lo, (s - i0).astype(np.float32)


def upsample_bilinear(src: np.ndarray, src_origin: tuple[int, int], k: Scale,
                      rows: tuple[int, int], cols: tuple[int, int],
                      src_shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of part of a coarse image, channels last.

    Parameters
    ----------
    src : array (h', w', C)
        Coarse pixels ``src_origin[0]:, src_origin[1]:`` of a coarse image of shape
        ``src_shape``; must cover ``source_span`` of ``rows`` and ``cols``.
    k : float or (float, float)
        Full pixels per coarse pixel (rows, columns); positive, not necessarily integer.
    rows, cols : (start, stop)
        The full-resolution pixels wanted.

    Returns
    -------
    array (rows, cols, C), float32
    """
    ky, kx = _pair(k)
    y0, y1, wy = _axis(*rows, ky, src_shape[0], src_origin[0])
    x0, x1, wx = _axis(*cols, kx, src_shape[1], src_origin[1])
    wy, wx = wy[:, None, None], wx[None, :, None]
    top = src[y0][:, x0] * (1 - wx) + src[y0][:, x1] * wx
    bottom = src[y1][:, x0] * (1 - wx) + src[y1][:, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def upsample_planes(src: np.ndarray, src_origin: tuple[int, int], k: Scale,
                    rows: tuple[int, int], cols: tuple[int, int],
                    src_shape: tuple[int, int]) -> np.ndarray:
    """:func:`upsample_bilinear` for planes first: ``src`` (C, h', w') -> (C, rows, cols)
    float32, the same arithmetic per pixel (hint fields are stored planes first)."""
    ky, kx = _pair(k)
    y0, y1, wy = _axis(*rows, ky, src_shape[0], src_origin[0])
    x0, x1, wx = _axis(*cols, kx, src_shape[1], src_origin[1])
    wy, wx = wy[None, :, None], wx[None, None, :]
    top_rows, bottom_rows = src[:, y0], src[:, y1]
    top = top_rows[:, :, x0] * (1 - wx) + top_rows[:, :, x1] * wx
    bottom = bottom_rows[:, :, x0] * (1 - wx) + bottom_rows[:, :, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)
