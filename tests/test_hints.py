"""Input planes and hint fields through the real tiled engine, against oracles: a 4-plane
affine stand-in run tile by tile equals the stand-in applied to the whole image's planes
(L, the whole hint field upsampled at once, mask), whatever the image, tile, stride,
block, render scale, and the field's scale (power of two or arbitrary)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import smooth_image, write_input

from tilecolor.core.color import gray_to_lightness, lightness_to_input
from tilecolor.core.planes import HINTED, L_ONLY
from tilecolor.core.resample import downsample_mean, upsample_bilinear, upsample_planes
from tilecolor.engine.graph import submit_image
from tilecolor.engine.hints import HintField
from tilecolor.engine.settings import Settings
from tilecolor.engine.store import WorkStore
from tilecolor.io.read import probe

MIX = np.array([[0.5, 0.3, -0.2, 0.1], [-0.25, 0.15, 0.4, -0.05]], np.float32)


def affine4(x: np.ndarray) -> np.ndarray:
    """(N, 4, T, T) -> (N, 2, T, T): a pointwise affine mix of the four planes."""
    assert x.shape[1] == 4 and x.dtype == np.float32
    return (np.einsum("op,nphw->nohw", MIX, x)
            + np.array([0.1, -0.05], np.float32)[None, :, None, None]).astype(np.float32)


def field_of(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth (2, h, w) chroma field in ab/110 units."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    return np.stack([0.3 * np.sin(x / 3 + seed) + 0.05 * rng.random((h, w)),
                     0.2 * np.cos(y / 2) - 0.1 * x / w]).astype(np.float32)


def whole_planes(lightness: np.ndarray, field: np.ndarray | None,
                 scale: tuple[float, float]) -> np.ndarray:
    """(1, 4, H, W): L input, the field upsampled whole (or 0), mask 1 (or 0)."""
    h, w = lightness.shape
    if field is None:
        hint, mask = np.zeros((2, h, w), np.float32), 0.0
    else:
        hint = upsample_planes(field, (0, 0), scale, (0, h), (0, w), field.shape[1:])
        mask = 1.0
    return np.concatenate([lightness_to_input(lightness)[None], hint,
                           np.full((1, h, w), mask, np.float32)])[None]


def run_hinted(client, tmp_path, img, settings, predict, field=None, scale=(1.0, 1.0),
               fmt="tiff"):
    path = write_input(tmp_path, img, fmt)
    h, w = img.shape
    store = WorkStore.create(tmp_path / "work.zarr", settings.plan(h, w), "uint8",
                             output="ab", render=settings.render_plan(h, w))
    hint = None
    if field is not None:
        store.put_small("hint_ab", field)
        hint = HintField("hint_ab", field.shape[1:], scale)
    graph = submit_image(client, probe(path), store, settings, predict, hint=hint)
    client.gather(graph.reduces)
    return store.array("ab")[:] / 110.0  # (H, W, 2) ab/110


CASES = [  # (h, w, tile, stride, block, field shape, scale)
    (37, 53, 16, 8, 32, (5, 7), (8.0, 8.0)),  # power of two, partial last cells
    (100, 131, 32, 24, 64, (13, 17), (100 / 13, 131 / 17)),  # arbitrary scale
    (10, 7, 16, 4, 16, (3, 2), (10 / 3, 3.5)),  # smaller than a tile: reflect-padded
    (300, 257, 64, 20, 64, (40, 33), (7.5, 257 / 33)),  # block not a multiple of stride
    (129, 300, 32, 5, 96, (3, 7), (43.0, 300 / 7)),  # dense; a field of a few pixels
    (520, 300, 32, 32, 160, (65, 38), (8.0, 8.0)),  # stride = tile (cut sums)
    (1, 90, 16, 8, 32, (1, 12), (1.0, 7.5)),  # a single row
]


@pytest.mark.parametrize("h,w,tile,stride,block,shape,scale", CASES)
def test_hinted_tiles_equal_the_whole_image(client2, tmp_path, h, w, tile, stride, block,
                                            shape, scale):
    img = smooth_image(h, w, seed=h + 2 * w)
    field = field_of(*shape, seed=h)
    settings = Settings(tile=tile, stride=stride, block=block, blend="cosine", batch_size=3,
                        planes=HINTED)
    got = run_hinted(client2, tmp_path, img, settings, affine4, field, scale)
    expected = affine4(whole_planes(gray_to_lightness(img), field, scale))[0]
    np.testing.assert_allclose(got, np.moveaxis(expected, 0, -1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt,blend", [("tiff", "uniform"), ("png", "cosine")])
def test_without_a_hint_the_hint_planes_and_mask_are_zero(client1, tmp_path, fmt, blend):
    img = smooth_image(70, 90, seed=4)
    settings = Settings(tile=32, stride=24, block=64, blend=blend, batch_size=4,
                        planes=HINTED)
    got = run_hinted(client1, tmp_path, img, settings, affine4, fmt=fmt)
    expected = affine4(whole_planes(gray_to_lightness(img), None, (1, 1)))[0]
    np.testing.assert_allclose(got, np.moveaxis(expected, 0, -1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("k,scale", [(2, (8.0, 8.0)), (3, (101 / 9, 87 / 11))])
def test_hint_at_reduced_render_scale(client2, tmp_path, k, scale):
    """At render scale 1/k the field is upsampled to the render grid's pixels; the
    result is the stand-in on the reduced grid, upsampled under the image."""
    h, w = 101, 87
    img = smooth_image(h, w, seed=k)
    field = field_of(9, 11, seed=k)
    settings = Settings(tile=16, stride=12, block=96 if k == 3 else 64, blend="cosine",
                        batch_size=5, render_scale=1 / k, planes=HINTED)
    got = run_hinted(client2, tmp_path, img, settings, affine4, field, scale)
    small = downsample_mean(gray_to_lightness(img), k)
    grid = HintField("hint_ab", field.shape[1:], scale).on_grid(k).scale
    ab_small = np.moveaxis(affine4(whole_planes(small, field, grid))[0], 0, -1)
    expected = upsample_bilinear(ab_small, (0, 0), k, (0, h), (0, w), small.shape)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_l_only_planes_ignore_a_hint(client1, tmp_path):
    """An L-only generator gets one plane, whatever hint the image has."""
    img = smooth_image(50, 60, seed=9)

    def one_plane(x):  # 4 planes would give 8 outputs: a shape error
        return np.concatenate([0.5 * x, -x], axis=1)

    settings = Settings(tile=16, stride=8, block=32, planes=L_ONLY)
    got = run_hinted(client1, tmp_path, img, settings, one_plane, field_of(4, 4, 0), (16, 16))
    x = lightness_to_input(gray_to_lightness(img))
    np.testing.assert_allclose(got[..., 1], -x, atol=1e-5)


def test_predictor_exposes_the_checkpoints_planes(tiny_checkpoint, hinted_checkpoint):
    from tilecolor.model.predict import make_predictor

    one = make_predictor(tiny_checkpoint, threads=1, validate=False)
    four = make_predictor(hinted_checkpoint, threads=1)
    assert one.planes == L_ONLY and four.planes == HINTED
    x = np.random.default_rng(0).random((3, 4, 64, 64)).astype(np.float32)
    y = four(x)
    assert y.shape == (3, 2, 64, 64) and y.dtype == np.float32
    mask = np.array([1, 0, 0, 0], np.float32)[None, :, None, None]
    assert not np.allclose(four(x * mask), y)  # the hint planes matter


def test_real_hinted_generator_through_the_engine(client1, tmp_path, hinted_checkpoint):
    """A 4-plane checkpoint runs tile by tile; the block decomposition does not change
    its output (each tile gets the same planes whatever block it is in)."""
    from tilecolor.model.predict import make_predictor

    predict = make_predictor(hinted_checkpoint, threads=1)
    img = smooth_image(150, 170, seed=2)
    field = field_of(10, 11, seed=2)
    outs = []
    for block in (64, 128):
        settings = Settings(tile=64, stride=48, block=block, batch_size=4, planes=HINTED)
        outs.append(run_hinted(client1, tmp_path / str(block), img, settings, predict,
                               field, (15.0, 170 / 11)))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
    assert np.abs(outs[0]).max() > 0
