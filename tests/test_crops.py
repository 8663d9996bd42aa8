"""Training crops and hints: pure functions of their seeds, the engine's conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tilecolor.core.resample import downsample_mean, upsample_bilinear
from tilecolor.model import data
from tilecolor.train import crops


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(70, 120), (96, 64), (40, 200)]):
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([(xx * 3 + 40 * i) % 256, (yy * 4) % 256, (xx + 2 * yy) % 256], -1)
        rgb = np.clip(rgb + rng.integers(-10, 10, rgb.shape), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(tmp_path / f"p{i}.png")
    return data.load_photos(data.list_photos(tmp_path), 32)


def test_batches_are_pure_functions_of_their_seed(photos):
    bank = crops.PhotoBank(photos, crops.CropPolicy(crop=32))
    a = bank.batch(np.random.default_rng((1, 0, 5)), 6)
    b = bank.batch(np.random.default_rng((1, 0, 5)), 6)
    c = bank.batch(np.random.default_rng((1, 1, 5)), 6)
    assert a[0].shape == (6, 1, 32, 32) and a[1].shape == (6, 2, 32, 32)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert -1 <= a[0].min() and a[0].max() <= 1 and a[1].abs().max() < 1


def test_native_crops_are_slices_of_the_lab_photo(photos):
    """With no zoom-out the crop is a plain (maybe flipped) window of the photo's Lab."""
    bank = crops.PhotoBank(photos[:1], crops.CropPolicy(crop=32, whole=0.0, max_zoom_out=1.0))
    lab = crops.photo_lab(photos[0]).float()
    light, _ = bank.batch(np.random.default_rng(3), 4)
    windows = lab[0].unfold(0, 32, 1).unfold(1, 32, 1) / 50 - 1  # (h-31, w-31, 32, 32)
    for crop in light[:, 0]:
        hits = [(windows - c).abs().amax(dim=(-2, -1)).min() for c in (crop, crop.flip(-1))]
        assert min(hits) < 1e-6


def test_whole_photo_crops_fit_the_crop_and_pad_like_the_engine():
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(2, 5, 7)
    padded = crops.reflect_pad(x, 16, 12)  # longer pads than the image: reflect repeatedly
    want = np.pad(x.numpy(), ((0, 0), (0, 11), (0, 5)), mode="reflect")
    np.testing.assert_array_equal(padded.numpy(), want)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_lowpass_is_the_engines_hint_upsampling(k):
    """Training hints (area down, bilinear up) == the engine's downsample_mean +
    upsample_bilinear (pixel centres aligned), so hints are in distribution."""
    ab = torch.randn(1, 2, 32, 32)
    got = crops.lowpass(ab, float(k))[0].numpy()
    small = np.stack([downsample_mean(ab[0, i].numpy(), k) for i in range(2)], axis=-1)
    want = upsample_bilinear(small, (0, 0), k, (0, 32), (0, 32), small.shape[:2])
    np.testing.assert_allclose(got, np.moveaxis(want, -1, 0), atol=1e-5)


def test_hints_drop_and_keep_the_color():
    ab = torch.full((4, 2, 32, 32), 0.25)
    ab[:, 1] = -0.1
    rng = np.random.default_rng(0)
    dropped = crops.make_hints(ab, rng, crops.CropPolicy(crop=32, hint_drop=1.0))
    assert not dropped.any()
    kept = crops.make_hints(ab, rng, crops.CropPolicy(crop=32, hint_drop=0.0, hint_perturb=0.0,
                                                      hint_partial=0.0))
    assert torch.equal(kept[:, 2], torch.ones_like(kept[:, 2]))
    torch.testing.assert_close(kept[:, :2], ab)  # a flat color survives any low-pass
    partial = crops.make_hints(ab, rng, crops.CropPolicy(crop=32, hint_drop=0.0,
                                                         hint_partial=1.0, hint_perturb=0.0))
    off = partial[:, 2] == 0
    assert off.any() and not partial[:, :2][off[:, None].expand(-1, 2, -1, -1)].any()


def test_validation_set_and_its_score(photos):
    val = crops.validation_set(photos, 32)
    assert val.kinds.count("whole") == 3 and "zoom1" in val.kinds
    whole = val.kinds.index("whole")
    assert val.valid[whole].sum() < 32 * 32  # p0 is 70x120: the whole view is padded
    de, gray = crops.ciede2000_vs_gray(val.lightness, val.ab, val.ab, val.valid)
    assert de == 0 and gray > 1
    de_zero, gray2 = crops.ciede2000_vs_gray(val.lightness, torch.zeros_like(val.ab), val.ab,
                                             val.valid)
    assert de_zero == pytest.approx(gray2) and gray2 == gray
