"""sRGB <-> CIE Lab (D65) in float32, and the network's normalization of L and ab.

A grayscale pixel value ``g`` means the sRGB gray (g, g, g). Its lightness L* is what the
generator sees; the output keeps that L* and adds the predicted a*, b*. With a*=b*=0 the
output is the input gray again (up to rounding), so the luminance detail never depends on
the network or on tiling.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# sRGB primaries, D65. The white point is taken as the matrix row sums so that gray maps to
# a* = b* = 0 exactly and back.
_RGB2XYZ = np.array(
    [[0.412453, 0.357580, 0.180423],
     [0.212671, 0.715160, 0.072169],
     [0.019334, 0.119193, 0.950227]], dtype=np.float64)
_XYZ2RGB = np.linalg.inv(_RGB2XYZ)
_WHITE = _RGB2XYZ.sum(axis=1)
_EPS = (6.0 / 29.0) ** 3
_KAPPA = 3.0 * (6.0 / 29.0) ** 2

L_SCALE = 50.0  #: network input = L / 50 - 1, in [-1, 1]
AB_SCALE = 110.0  #: ab = network output * 110


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear light."""
    v = np.asarray(v, dtype=np.float32)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear light to sRGB encoding; input clipped to [0, 1]."""
    c = np.clip(np.asarray(c, dtype=np.float32), 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055).astype(np.float32)


def _f(t: np.ndarray) -> np.ndarray:
    return np.where(t > _EPS, np.cbrt(np.maximum(t, _EPS)), t / _KAPPA + 4.0 / 29.0)


def _finv(f: np.ndarray) -> np.ndarray:
    return np.where(f > 6.0 / 29.0, f**3, _KAPPA * (f - 4.0 / 29.0))


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1], shape (..., 3) -> Lab, shape (..., 3), float32 (L in [0, 100])."""
    lin = srgb_to_linear(rgb)
    xyz = lin @ _RGB2XYZ.T.astype(np.float32) / _WHITE.astype(np.float32)
    f = _f(xyz)
    lab = np.stack([116.0 * f[..., 1] - 16.0,
                    500.0 * (f[..., 0] - f[..., 1]),
                    200.0 * (f[..., 1] - f[..., 2])], axis=-1)
    return lab.astype(np.float32)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Lab, shape (..., 3) -> sRGB in [0, 1], shape (..., 3), float32, clipped to the gamut."""
    lab = np.asarray(lab, dtype=np.float32)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = _finv(f) * _WHITE.astype(np.float32)
    lin = xyz @ _XYZ2RGB.T.astype(np.float32)
    return linear_to_srgb(lin)


def lightness_from_luminance(y: np.ndarray) -> np.ndarray:
    """Relative luminance Y in [0, 1] -> L* in [0, 100], float32."""
    return (116.0 * _f(np.asarray(y, dtype=np.float64)) - 16.0).astype(np.float32)


@lru_cache(maxsize=4)
def _lightness_lut(maxval: int) -> np.ndarray:
    levels = np.arange(maxval + 1, dtype=np.float64) / maxval
    return lightness_from_luminance(srgb_to_linear(levels))


def gray_to_lightness(gray: np.ndarray) -> np.ndarray:
    """Gray pixel values (uint8, uint16, or float in [0, 1]) -> L* in [0, 100], float32."""
    gray = np.asarray(gray)
    if gray.dtype == np.uint8 or gray.dtype == np.uint16:
        return _lightness_lut(int(np.iinfo(gray.dtype).max))[gray]
    return lightness_from_luminance(srgb_to_linear(gray))


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """Color pixels (..., 3) to the gray value with the same L*, in the input's dtype.

    Integer inputs are scaled by their dtype's maximum; floats are taken in [0, 1].
    """
    rgb = np.asarray(rgb)
    maxval = float(np.iinfo(rgb.dtype).max) if rgb.dtype.kind in "ui" else 1.0
    lin = srgb_to_linear(rgb[..., :3].astype(np.float32) / maxval)
    y = lin @ _RGB2XYZ[1].astype(np.float32)
    gray = linear_to_srgb(y)
    if rgb.dtype.kind in "ui":
        return np.rint(gray * maxval).astype(rgb.dtype)
    return gray.astype(rgb.dtype)


def compose_rgb(gray: np.ndarray, ab: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Original gray plus predicted chroma -> RGB.

    Parameters
    ----------
    gray : array (H, W), uint8/uint16 or float in [0, 1]
        The input's own pixels; their L* is kept.
    ab : array (H, W, 2), float
        a*, b* in Lab units (roughly [-110, 110]).
    dtype : numpy dtype
        uint8 or uint16 output, scaled to the dtype's full range; float gives [0, 1].
    """
    gray = np.asarray(gray)
    dtype = np.dtype(dtype)
    if gray.dtype not in (np.uint8, np.uint16) or dtype.kind not in "ui":
        lab = np.concatenate([gray_to_lightness(gray)[..., None], ab.astype(np.float32)], -1)
        rgb = lab_to_rgb(lab)
        return (np.rint(rgb * np.iinfo(dtype).max).astype(dtype) if dtype.kind in "ui"
                else rgb.astype(dtype))
    # Fast path for the engine (a hot loop over every output pixel): per-gray-level tables
    # for f(Y) and Y, per-channel multiply-adds instead of (H, W, 3) matrix products, the
    # sRGB encoding as a table lookup instead of a per-pixel power, and the whole chain run
    # over strips of ~128k pixels so its temporaries stay in cache (0.26 s -> 0.12 s for a
    # 2048x2048 block, with np.take instead of fancy indexing; then 6 % less, median of 15
    # paired calls on a photo, with _finv32's select replaced by arithmetic).
    ab = np.asarray(ab, dtype=np.float32)
    if gray.ndim == 2 and gray.dtype == dtype and compiled_kernels() is not None:
        return compose_planes(gray, ab[..., 0], ab[..., 1], dtype)
    return _compose_numpy(gray, ab, dtype)


def _compose_numpy(gray: np.ndarray, ab: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """compose_rgb's integer path in numpy (where numba is missing; the kernel's reference)."""
    out = np.empty((*gray.shape, 3), dtype=dtype)
    width = int(np.prod(gray.shape[1:], dtype=np.int64)) or 1
    rows = max(1, (1 << 17) // width)
    for i in range(0, gray.shape[0], rows):
        _compose_strip(gray[i : i + rows], ab[i : i + rows], out[i : i + rows])
    return out


def compose_planes(gray: np.ndarray, a: np.ndarray, b: np.ndarray, dtype: np.dtype,
                   row_scale: np.ndarray | None = None,
                   col_scale: np.ndarray | None = None) -> np.ndarray:
    """:func:`compose_rgb` for a 2-D integer gray whose dtype is the output's, with the
    chroma as two planes, a* = a[i, j] * row_scale[i] * col_scale[j] (likewise b*): the
    engine's blended sums and their weights, without a scaled (H, W, 2) copy. One compiled
    pass (:mod:`tilecolor.core.kernels`) where numba is there, else the numpy path."""
    dtype = np.dtype(dtype)
    h, w = gray.shape
    row_scale = np.ones(h, np.float32) if row_scale is None else row_scale
    col_scale = np.ones(w, np.float32) if col_scale is None else col_scale
    kernels = compiled_kernels()
    if kernels is None or gray.dtype != dtype:
        ab = np.stack([a, b], axis=-1).astype(np.float32)
        ab *= (np.asarray(row_scale, np.float32)[:, None]
               * np.asarray(col_scale, np.float32)[None, :])[..., None]
        return compose_rgb(gray, ab, dtype)
    out = np.empty((h, w, 3), dtype=dtype)
    fy_lut, y_lut = _gray_tables(int(np.iinfo(gray.dtype).max))
    kernels.compose(gray, a, b, out, row_scale, col_scale, fy_lut, y_lut,
                    _encode_table(dtype), _rgb_coefficients(dtype))
    return out


def compiled_kernels():
    """tilecolor.core.kernels when numba is there, else None."""
    from tilecolor.core import kernels

    return kernels if kernels.AVAILABLE else None


def _compose_strip(gray: np.ndarray, ab: np.ndarray, out: np.ndarray) -> None:
    fy_lut, y_lut = _gray_tables(int(np.iinfo(gray.dtype).max))
    encode, coef = _encode_table(out.dtype), _rgb_coefficients(out.dtype)
    fy = np.take(fy_lut, gray)
    xyz = (_finv32(fy + ab[..., 0] * np.float32(1 / 500)), np.take(y_lut, gray),
           _finv32(fy - ab[..., 1] * np.float32(1 / 200)))
    lin = np.empty_like(fy)
    top = np.float32(len(encode) - 1)
    for ch in range(3):  # linear light scaled to the table, clipped, then encoded
        np.multiply(xyz[0], coef[ch, 0], out=lin)
        lin += xyz[1] * coef[ch, 1]
        lin += xyz[2] * coef[ch, 2]
        np.clip(lin, 0.0, top, out=lin)
        out[..., ch] = np.take(encode, lin.astype(np.intp))


def _finv32(f: np.ndarray) -> np.ndarray:
    """Inverse of the Lab companding function on a float32 array, overwriting ``f`` (a
    temporary). Its linear segment is the cube's tangent at 6/29, so the function is
    max(f, 6/29)**3 + kappa * (min(f, 6/29) - 6/29): seven cheap passes of arithmetic, not
    a select (np.where took as long as all the rest of it)."""
    knee = np.float32(6.0 / 29.0)
    top = np.maximum(f, knee)
    cube = top * top
    cube *= top
    np.minimum(f, knee, out=f)
    f -= knee
    f *= np.float32(_KAPPA)
    cube += f
    return cube


@lru_cache(maxsize=4)
def _rgb_coefficients(dtype: np.dtype) -> np.ndarray:
    """(3, 3) float32: linear R, G, B from (X/Xn, Y, Z/Zn), times the encode table's scale
    (so one clip to the table's range replaces a clip to [0, 1] and a multiply)."""
    return (_XYZ2RGB * _WHITE[None, :] * (len(_encode_table(dtype)) - 1)).astype(np.float32)


@lru_cache(maxsize=4)
def _gray_tables(maxval: int) -> tuple[np.ndarray, np.ndarray]:
    """f(Y) = (L* + 16) / 116 and Y itself, per gray level."""
    y = srgb_to_linear(np.arange(maxval + 1, dtype=np.float64) / maxval).astype(np.float64)
    return _f(y).astype(np.float32), y.astype(np.float32)


@lru_cache(maxsize=4)
def _encode_table(dtype: np.dtype) -> np.ndarray:
    """Linear light in [0, 1], scaled to the table's length - 1 -> sRGB code values,
    sampled finely enough that the table step is below a quarter of an output level even
    where the curve is steepest."""
    maxval = np.iinfo(dtype).max
    n = 1 << (16 if maxval <= 255 else 22)
    lin = (np.arange(n, dtype=np.float64) + 0.5) / (n - 1)
    enc = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.minimum(lin, 1) ** (1 / 2.4) - 0.055)
    return np.rint(np.clip(enc, 0, 1) * maxval).astype(dtype)


def lightness_to_input(lightness: np.ndarray) -> np.ndarray:
    """L* in [0, 100] -> network input in [-1, 1]."""
    return (np.asarray(lightness, dtype=np.float32) / L_SCALE - 1.0).astype(np.float32)


@lru_cache(maxsize=4)
def _input_lut(maxval: int) -> np.ndarray:
    return lightness_to_input(_lightness_lut(maxval))


def input_table(dtype: np.dtype) -> np.ndarray:
    """Network input per gray level of an integer dtype (what :func:`gray_to_input` looks
    up), for kernels that convert while they gather tiles."""
    return _input_lut(int(np.iinfo(dtype).max))


def gray_to_input(gray: np.ndarray) -> np.ndarray:
    """Gray pixel values -> network input, the same values as
    ``lightness_to_input(gray_to_lightness(gray))``; for uint8/uint16 one table lookup
    instead of three passes over float32 copies of the block."""
    gray = np.asarray(gray)
    if gray.dtype == np.uint8 or gray.dtype == np.uint16:
        return np.take(_input_lut(int(np.iinfo(gray.dtype).max)), gray)
    return lightness_to_input(gray_to_lightness(gray))
