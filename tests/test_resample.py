from __future__ import annotations

import numpy as np
import pytest

from tilecolor.resample import downsample_mean, source_span, upsample_bilinear


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
