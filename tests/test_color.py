from __future__ import annotations

import numpy as np
import pytest

from tilecolor.core.color import (
    compose_rgb,
    gray_to_input,
    gray_to_lightness,
    lab_to_rgb,
    lightness_to_input,
    rgb_to_gray,
    rgb_to_lab,
)

skcolor = pytest.importorskip("skimage.color")


def test_rgb_to_lab_matches_scikit_image():
    rgb = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    # skimage's D65 white differs from the sRGB matrix row sums in the 5th digit
    np.testing.assert_allclose(rgb_to_lab(rgb), skcolor.rgb2lab(rgb), atol=0.01)


def test_lab_round_trip():
    rgb = np.random.default_rng(1).random((32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_gray_with_zero_chroma_comes_back_exactly(dtype):
    gray = np.arange(np.iinfo(dtype).max + 1, dtype=dtype).reshape(1, -1)
    rgb = compose_rgb(gray, np.zeros((*gray.shape, 2)), dtype)
    assert rgb.dtype == dtype
    for ch in range(3):
        np.testing.assert_array_equal(rgb[..., ch], gray)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_fast_path_matches_the_float_reference_within_one_level(dtype):
    """compose_rgb's table-driven integer path against Lab -> sRGB in float (the path a
    float gray takes), over every gray level, dark ones (the companding's linear segment)
    and chroma far out of gamut (clipped) included."""
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(7)
    gray = np.repeat(np.linspace(0, top, 4096).round().astype(dtype)[None], 64, axis=0)
    ab = (rng.standard_normal((*gray.shape, 2)) * 60).astype(np.float32)
    fast = compose_rgb(gray, ab, dtype)
    reference = compose_rgb(gray.astype(np.float64) / top, ab, np.float64)
    diff = np.abs(fast.astype(np.int64) - np.rint(reference * top).astype(np.int64))
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.01


def test_lightness_of_gray_matches_lab_of_gray_rgb():
    gray = np.arange(256, dtype=np.uint8)
    rgb = np.repeat((gray / 255.0).astype(np.float32)[:, None], 3, axis=1)
    np.testing.assert_allclose(gray_to_lightness(gray), rgb_to_lab(rgb)[:, 0], atol=1e-3)
    lab = rgb_to_lab(rgb)
    np.testing.assert_allclose(lab[:, 1:], 0, atol=1e-3)


def test_network_input_range():
    x = lightness_to_input(gray_to_lightness(np.array([0, 255], np.uint8)))
    np.testing.assert_allclose(x, [-1, 1], atol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_gray_to_input_is_the_two_step_conversion(dtype):
    """The engine's one-lookup conversion gives exactly the values of the two steps."""
    top = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    gray = (np.random.default_rng(3).random((37, 41)) * top).astype(dtype)
    if dtype != np.float32:
        gray.flat[:2] = [0, top]  # both ends of the table
    want = lightness_to_input(gray_to_lightness(gray))
    got = gray_to_input(gray)
    assert got.dtype == np.float32 and got.shape == gray.shape
    np.testing.assert_array_equal(got, want)


def test_rgb_to_gray_keeps_lightness():
    rgb = np.random.default_rng(2).integers(0, 65536, (50, 50, 3), dtype=np.uint16)
    gray = rgb_to_gray(rgb)
    assert gray.dtype == np.uint16
    np.testing.assert_allclose(gray_to_lightness(gray), rgb_to_lab(rgb / 65535.0)[..., 0],
                               atol=0.01)


def test_compose_keeps_lightness_of_in_gamut_colors():
    rgb = np.random.default_rng(3).random((40, 40, 3)).astype(np.float32) * 0.8 + 0.1
    lab = rgb_to_lab(rgb)
    gray = rgb_to_gray((rgb * 65535).astype(np.uint16))
    out = compose_rgb(gray, lab[..., 1:], np.float32)
    np.testing.assert_allclose(out, rgb, atol=2e-3)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_compiled_compose_matches_the_numpy_path(dtype):
    """compose_planes (one compiled pass, the engine's path) against compose_rgb's numpy
    integer path on the same chroma, with per-row and per-column weights folded in (the
    blended sums divided by their weight sums) and strided planes, as the engine passes
    them: within one level, on very few pixels (float32 rounding in another order)."""
    from tilecolor.core import kernels
    from tilecolor.core.color import _compose_numpy, compose_planes

    if not kernels.AVAILABLE:
        pytest.skip("numba is not installed: compose_planes is the numpy path itself")
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(11)
    gray = rng.integers(0, top + 1, (97, 131), dtype=dtype)
    sums = (rng.standard_normal((2, 97, 140)) * 0.4).astype(np.float32)[:, :, 5:136]
    wy = rng.uniform(0.5, 2.0, 97).astype(np.float32)
    wx = rng.uniform(0.5, 2.0, 131).astype(np.float32)
    got = compose_planes(gray, sums[0], sums[1], dtype, 110 / wy, 1 / wx)
    ab = np.moveaxis(sums * (110 / wy)[:, None] * (1 / wx)[None, :], 0, -1)
    want = _compose_numpy(gray, ab.astype(np.float32), dtype)
    assert got.dtype == dtype and got.shape == (97, 131, 3)
    diff = np.abs(got.astype(np.int64) - want)
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.001


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_compiled_gather_is_gray_to_input_tile_by_tile(dtype):
    """The engine's batches gathered straight from gray levels are exactly the tiles of
    gray_to_input's float image, edges of the footprint included."""
    from tilecolor.core import kernels
    from tilecolor.core.color import input_table

    if not kernels.AVAILABLE:
        pytest.skip("numba is not installed: the engine stacks tiles of gray_to_input")
    gray = np.random.default_rng(5).integers(0, np.iinfo(dtype).max + 1, (300, 333),
                                             dtype=dtype)
    ys, xs = np.array([0, 44, 0, 236]), np.array([0, 0, 269, 269])
    got = np.empty((4, 1, 64, 64), np.float32)
    kernels.gather(gray, input_table(dtype), ys, xs, got)
    full = gray_to_input(gray)
    want = np.stack([full[y : y + 64, x : x + 64] for y, x in zip(ys, xs, strict=True)])
    np.testing.assert_array_equal(got[:, 0], want)


def test_kernels_switch_off_runs_the_numpy_paths():
    """TILECOLOR_KERNELS=0 (an A/B switch for benchmarks and a way around a broken numba):
    a fresh process reports no compiled kernels and never imports numba."""
    import os
    import subprocess
    import sys

    code = ("import sys; from tilecolor.core import kernels; from tilecolor.core.color import "
            "compiled_kernels; print(kernels.AVAILABLE, compiled_kernels() is None, "
            "'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "TILECOLOR_KERNELS": "0"})
    assert out.stdout.split() == ["False", "True", "False"]
