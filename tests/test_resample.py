from __future__ import annotations

import numpy as np
import pytest

from tilecolor.core.resample import downsample_mean, source_span, upsample_bilinear


def test_downsample_mean_partial_cells():
    x = np.arange(35, dtype=np.float32).reshape(5, 7)
    d = downsample_mean(x, 2)
    assert d.shape == (3, 4)
    assert d[0, 0] == x[:2, :2].mean() and d[2, 3] == x[4:, 6:].mean()
    assert d[1, 3] == x[2:4, 6:].mean()


@pytest.mark.parametrize("k", [2, 3, 4])
def test_upsample_of_constant_and_linear_fields(k):
    h, w = 9, 11
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.stack([3 + 0 * yy, 0.5 * yy + 0.25 * xx], -1)  # constant and linear
    up = upsample_bilinear(field, (0, 0), k, (0, h * k), (0, w * k), (h, w))
    np.testing.assert_allclose(up[..., 0], 3)
    # inside the clamped border, linear fields are reproduced exactly at pixel centres
    fy, fx = np.mgrid[0 : h * k, 0 : w * k].astype(np.float64)
    sy, sx = (fy + 0.5) / k - 0.5, (fx + 0.5) / k - 0.5
    inside = (sy >= 0) & (sy <= h - 1) & (sx >= 0) & (sx <= w - 1)
    np.testing.assert_allclose(up[..., 1][inside], (0.5 * sy + 0.25 * sx)[inside], atol=1e-5)


@pytest.mark.parametrize("k", [2, 3])
def test_upsampling_a_part_equals_the_part_of_the_whole(k):
    rng = np.random.default_rng(0)
    src = rng.random((20, 17, 2)).astype(np.float32)
    whole = upsample_bilinear(src, (0, 0), k, (0, 20 * k - 1), (0, 17 * k - 2), (20, 17))
    for rows, cols in [((5, 23), (0, 9)), ((0, 7), (30, 17 * k - 2)), ((37, 20 * k - 1), (11, 12))]:
        ylo, yhi = source_span(*rows, k, 20)
        xlo, xhi = source_span(*cols, k, 17)
        part = upsample_bilinear(src[ylo:yhi, xlo:xhi], (ylo, xlo), k, rows, cols, (20, 17))
        np.testing.assert_array_equal(part, whole[rows[0] : rows[1], cols[0] : cols[1]])


@pytest.mark.parametrize("k", [(2.5, 3.25), (1000 / 37, 700 / 29), (0.75, 1.0), 4.0])
def test_float_scales_part_equals_whole_planes_first(k):
    """Hint fields map onto image pixels at any scale (a reference of arbitrary size):
    upsampling each footprint is bit for bit the part of upsampling the whole field."""
    from tilecolor.core.resample import upsample_planes

    rng = np.random.default_rng(1)
    src = rng.random((2, 37, 29)).astype(np.float32)
    ky, kx = k if isinstance(k, tuple) else (k, k)
    h, w = int(37 * ky), int(29 * kx)
    whole = upsample_planes(src, (0, 0), k, (0, h), (0, w), (37, 29))
    assert whole.shape == (2, h, w)
    last = upsample_bilinear(np.moveaxis(src, 0, -1), (0, 0), k, (0, h), (0, w), (37, 29))
    np.testing.assert_array_equal(np.moveaxis(last, -1, 0), whole)
    for rows, cols in [((0, h // 3), (0, w)), ((h // 3, h), (w // 5, w // 2)),
                       ((h - 1, h), (w - 7, w)), ((5, 6), (0, 1))]:
        (ylo, yhi), (xlo, xhi) = source_span(*rows, ky, 37), source_span(*cols, kx, 29)
        part = upsample_planes(src[:, ylo:yhi, xlo:xhi], (ylo, xlo), k, rows, cols, (37, 29))
        np.testing.assert_array_equal(part, whole[:, rows[0] : rows[1], cols[0] : cols[1]])


def test_float_scale_aligns_pixel_centres():
    """A reference of 10 px under a 25 px image: image pixel p samples the reference at
    (p + 0.5) * 10/25 - 0.5; a linear field is reproduced there (inside the border)."""
    src = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 3, 1), np.float32)
    up = upsample_bilinear(src, (0, 0), (2.5, 1.0), (0, 25), (0, 3), (10, 3))[:, 0, 0]
    s = (np.arange(25) + 0.5) / 2.5 - 0.5
    np.testing.assert_allclose(up, np.clip(s, 0, 9), atol=1e-6)


@pytest.mark.parametrize("h,w,g,m", [(37, 53, 4, 2), (64, 64, 8, 4), (5, 300, 2, 8),
                                     (100, 33, 16, 1)])
def test_means_of_means_equal_one_step_means(h, w, g, m):
    from tilecolor.core.resample import downsample_means

    x = np.random.default_rng(h).random((h, w)).astype(np.float32) * 100
    got = downsample_means(downsample_mean(x, g), m, g, (h, w))
    np.testing.assert_allclose(got, downsample_mean(x, m * g), rtol=1e-5)
