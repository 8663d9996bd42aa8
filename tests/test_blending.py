from __future__ import annotations

import numpy as np
import pytest

from tilecolor.core.blending import Blend, axis_weight_sum, axis_windows, raised_cosine
from tilecolor.core.tiling import tile_origins


@pytest.mark.parametrize("blend", list(Blend))
@pytest.mark.parametrize("length,tile,stride", [(300, 64, 48), (300, 64, 32), (300, 64, 8),
                                                (65, 64, 64), (40, 64, 16), (257, 32, 31)])
def test_windows_positive_and_sum_positive(blend, length, tile, stride):
    w = axis_windows(length, tile, stride, blend)
    assert w.shape == (len(tile_origins(length, tile, stride)), tile)
    assert np.all(w > 0) and np.all(w <= 1)
    assert np.all(axis_weight_sum(length, tile, stride, blend) > 0)


def test_no_taper_at_image_border():
    w = axis_windows(300, 64, 32, Blend.COSINE)
    assert np.all(w[0, :32] == 1)  # the first tile's left edge touches the border
    assert np.all(w[-1, -32:] == 1)  # the last tile's right edge touches the border
    assert w[1, 0] < 0.01 and w[0, -1] < 0.01  # inner edges taper towards zero


@pytest.mark.parametrize("length,tile,stride", [(288, 64, 32), (304, 64, 48), (1024, 256, 192),
                                                (1024, 256, 128), (766, 256, 255)])
def test_cosine_is_a_partition_of_unity_when_overlaps_are_at_most_half(length, tile, stride):
    assert (length - tile) % stride == 0  # no flush tile: every pixel under <= 2 tiles
    np.testing.assert_allclose(axis_weight_sum(length, tile, stride, "cosine"), 1.0, atol=1e-6)


@pytest.mark.parametrize("length,tile,stride", [(300, 64, 32), (300, 64, 48), (1000, 256, 192)])
def test_partition_of_unity_holds_before_the_flush_tile(length, tile, stride):
    # the flush last tile can overlap three tiles; there the weight sum normalizes instead
    o = tile_origins(length, tile, stride)
    total = axis_weight_sum(length, tile, stride, "cosine")
    np.testing.assert_allclose(total[: o[-2]], 1.0, atol=1e-6)


def test_uniform_sum_counts_covering_tiles():
    total = axis_weight_sum(100, 16, 8, "uniform")
    counts = np.zeros(100)
    for o in tile_origins(100, 16, 8):
        counts[o : o + 16] += 1
    np.testing.assert_array_equal(total, counts)


def test_dense_cosine_sum_is_smooth():
    # stride 32 with 256 tiles: Hann windows at 1/8 spacing sum to a near-constant field
    total = axis_weight_sum(2048, 256, 32, "cosine")
    core = total[256:-256]
    assert core.std() / core.mean() < 1e-3


def test_raised_cosine_is_symmetric_pair():
    r = raised_cosine(10)
    np.testing.assert_allclose(r + r[::-1], 1.0)
    assert np.all(np.diff(r) > 0)


def test_unknown_blend_is_rejected():
    with pytest.raises(ValueError, match="gaussian"):
        axis_windows(10, 4, 2, "gaussian")
