"""Compiled per-pixel kernels (numba) for the hot loops around the generator.

Composing the output (gray + predicted chroma -> sRGB) touches every output pixel; in numpy
it is some forty passes over float32 temporaries (121 ms for a 2048x2048 block on the 2-core
dev machine, a fifth of what a block costs besides the generator). Here it is one pass,
18 ms (BENCHMARKS.md). The arithmetic is :func:`tilecolor.core.color.compose_rgb`'s integer fast
path, step for step; the numpy version stays as the fallback (``AVAILABLE`` is False where
numba is missing, or ``TILECOLOR_KERNELS=0`` is set) and as the tests' reference.

The kernels are compiled at import for their few signatures and cached on disk (numba's
``cache=True``): the embedded cluster's forkserver imports this module once (WORKER_PRELOAD)
and every worker forked from it starts with the machine code. Nothing else imports it
eagerly: a process that never composes never loads numba.
"""

from __future__ import annotations

import os

import numpy as np

if os.environ.get("TILECOLOR_KERNELS", "1") == "0":  # the numpy paths, on purpose (A/B)
    numba = None
else:
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; this keeps a broken
        numba = None     # install working (the numpy path) instead of failing at import

AVAILABLE = numba is not None

_KNEE = np.float32(6.0 / 29.0)
_KAPPA = np.float32(3.0 * (6.0 / 29.0) ** 2)

if AVAILABLE:
    _SIGNATURES = [
        f"void({t}[:, ::1], f4[:, ::1], f4[:, ::1], f4[::1], f4[::1], {t}[:, :, ::1], "
        f"f4[::1], f4[::1], {t}[::1], f4[:, ::1])"
        for t in ("u1", "u2")]

    @numba.njit(_SIGNATURES, cache=True, nogil=True, fastmath=True, boundscheck=False)
    def _compose(gray, a, b, row_scale, col_scale, out, fy_lut, y_lut, encode, coef):
        h, w = gray.shape
        top = np.float32(encode.shape[0] - 1)
        zero = np.float32(0.0)
        ka, kb = np.float32(1.0 / 500.0), np.float32(1.0 / 200.0)
        x = np.empty(w, np.float32)
        y = np.empty(w, np.float32)
        z = np.empty(w, np.float32)
        index = np.empty((3, w), np.int32)
        for i in range(h):
            g, ra, rb, s = gray[i], a[i], b[i], row_scale[i]
            for j in range(w):  # f(X/Xn), f(Z/Zn) from L* and a*, b*; then the inverse f
                fy = fy_lut[g[j]]
                fx = fy + ra[j] * (s * col_scale[j]) * ka
                fz = fy - rb[j] * (s * col_scale[j]) * kb
                tx, tz = max(fx, _KNEE), max(fz, _KNEE)
                x[j] = tx * tx * tx + _KAPPA * (min(fx, _KNEE) - _KNEE)
                z[j] = tz * tz * tz + _KAPPA * (min(fz, _KNEE) - _KNEE)
                y[j] = y_lut[g[j]]
            for ch in range(3):  # linear light scaled to the table, clipped
                c0, c1, c2 = coef[ch, 0], coef[ch, 1], coef[ch, 2]
                for j in range(w):
                    v = x[j] * c0 + y[j] * c1 + z[j] * c2
                    index[ch, j] = np.int32(min(max(v, zero), top))
            o = out[i]
            for j in range(w):  # sRGB encoding, one table lookup per channel
                o[j, 0] = encode[index[0, j]]
                o[j, 1] = encode[index[1, j]]
                o[j, 2] = encode[index[2, j]]


    @numba.njit([f"void({t}[:, ::1], f4[::1], i8[::1], i8[::1], f4[:, :, :, ::1], i8)"
                 for t in ("u1", "u2")], cache=True, nogil=True, boundscheck=False)
    def _gather(gray, table, ys, xs, out, plane):
        t = out.shape[2]
        for n in range(ys.shape[0]):
            y, x = ys[n], xs[n]
            for i in range(t):
                g, o = gray[y + i], out[n, plane, i]
                for j in range(t):
                    o[j] = table[g[x + j]]


def gather(gray: np.ndarray, table: np.ndarray, ys: np.ndarray, xs: np.ndarray,
           out: np.ndarray, plane: int = 0) -> None:
    """out[n, plane] = table[gray[ys[n]:ys[n] + t, xs[n]:xs[n] + t]]: the lightness plane
    of a batch of network inputs (N, P, t, t) straight from the gray levels (t =
    out.shape[2]; the tiles must lie inside ``gray``). The other planes are left as they
    are (the caller fills them: :class:`tilecolor.engine.tiles.NetInputs`)."""
    if not 0 <= plane < out.shape[1]:
        raise ValueError(f"plane {plane} is not one of the batch's {out.shape[1]} planes")
    _gather(np.require(gray, requirements="CW"), table, ys, xs, out, plane)


def compose(gray: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray,
            row_scale: np.ndarray, col_scale: np.ndarray, fy_lut: np.ndarray,
            y_lut: np.ndarray, encode: np.ndarray, coef: np.ndarray) -> None:
    """Fill ``out`` (h, w, 3) from gray levels and chroma planes: a* = a[i, j] *
    row_scale[i] * col_scale[j] (likewise b*). Tables as in :mod:`tilecolor.core.color`."""
    c = np.ascontiguousarray
    _compose(c(gray), c(a, np.float32), c(b, np.float32), c(row_scale, np.float32),
             c(col_scale, np.float32), out, fy_lut, y_lut, encode, coef)
