"""tilecolor.metrics as pure functions, and `tilecolor eval` (tilecolor.evaluate) end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tilecolor.cli import main
from tilecolor.core.color import compose_rgb, rgb_to_gray
from tilecolor.evaluate import select_photos
from tilecolor.metrics import (
    ab_rmse,
    chroma_rms,
    ciede2000,
    colorfulness,
    compare,
    mean_metrics,
    psnr,
    ssim,
    to_lab,
)
from tilecolor.model.data import list_photos, split_photos


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth, clearly colored RGB image."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / 9.0 + seed)
    g = 128 + 90 * np.cos(y / 7.0)
    b = 128 + 80 * np.sin((x + y) / 13.0 - seed)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def test_psnr_identical_is_inf_and_known_value():
    img = _photo(32, 40, 0)
    assert psnr(img, img) == math.inf
    other = img.copy()
    other[img < 255] += 1
    other[img == 255] -= 1  # every sample off by exactly 1: MSE 1
    assert psnr(other, img) == pytest.approx(20 * math.log10(255), abs=1e-9)


def test_ssim_identical_is_one():
    img = _photo(32, 40, 1)
    assert ssim(img, img) == pytest.approx(1.0)
    assert ssim(255 - img, img) < 0.5


def test_ciede2000_identical_is_zero():
    lab = to_lab(_photo(24, 30, 2))
    assert ciede2000(lab, lab) == 0.0
    # chunking over rows does not change the mean
    other = to_lab(_photo(24, 30, 3))
    assert ciede2000(other, lab, rows=5) == pytest.approx(ciede2000(other, lab, rows=1000))
    assert ciede2000(other, lab) > 1.0


def test_ab_rmse_known_value():
    truth = np.zeros((4, 6, 3))
    truth[..., 0] = 50.0
    pred = truth.copy()
    pred[:2, :, 1], pred[:2, :, 2] = 3.0, 4.0  # half the pixels off by |(3, 4)| = 5
    assert ab_rmse(pred, truth) == pytest.approx(math.sqrt(25 / 2))
    assert ab_rmse(truth, truth) == 0.0
    # lightness errors do not count; a gray prediction's error is the truth's chroma RMS
    pred[..., 0] = 80.0
    assert ab_rmse(pred, truth) == pytest.approx(math.sqrt(25 / 2))
    assert ab_rmse(truth, pred) == pytest.approx(chroma_rms(pred))


def test_colorfulness_gray_is_zero():
    gray = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16)[..., None], 3, -1)
    assert colorfulness(gray) == 0.0


def test_colorfulness_known_values():
    # half pure red, half black: rg in {255, 0}, yb in {127.5, 0}, so the std and the mean
    # are (127.5, 63.75) each: (1 + 0.3) * sqrt(127.5^2 + 63.75^2) = 1.3 * 63.75 * sqrt(5)
    img = np.zeros((4, 4, 3), np.uint8)
    img[:2, :, 0] = 255
    assert colorfulness(img) == pytest.approx(1.3 * 63.75 * math.sqrt(5))
    # a flat color has no spread: 0.3 * sqrt(rg^2 + yb^2), rg = 100, yb = 150 - 50 = 100
    flat = np.empty((3, 5, 3), np.uint8)
    flat[...] = (200, 100, 50)
    assert colorfulness(flat) == pytest.approx(0.3 * math.sqrt(2) * 100)
    assert colorfulness(flat.astype(np.float32) / 255) == pytest.approx(colorfulness(flat))


def test_compare_and_mean():
    truth = _photo(32, 32, 4)
    gray = rgb_to_gray(truth)
    baseline = compose_rgb(gray, np.zeros((32, 32, 2), np.float32), np.uint8)
    m = compare(baseline, truth)
    assert m["colorfulness"] == pytest.approx(0.0, abs=1e-9)
    assert m["colorfulness_ratio"] == pytest.approx(0.0, abs=1e-9)
    assert m["ab_rmse"] == pytest.approx(chroma_rms(to_lab(truth)), rel=2e-3)
    same = compare(truth, truth)
    assert same["psnr"] == math.inf and same["ciede2000"] == 0.0
    assert same["colorfulness_ratio"] == pytest.approx(1.0)
    mean = mean_metrics([m, same])
    assert mean["ab_rmse"] == pytest.approx(m["ab_rmse"] / 2)
    assert mean["psnr"] == math.inf


def test_select_photos_val_matches_training_split(tmp_path):
    for i in range(9):
        Image.fromarray(_photo(8, 8, i)).save(tmp_path / f"p{i}.png")
    assert select_photos(tmp_path, "val", 3) == split_photos(list_photos(tmp_path), 3)[1]
    assert select_photos(tmp_path, "all") == list_photos(tmp_path)


def test_eval_command_end_to_end(tmp_path, tiny_checkpoint):
    data = tmp_path / "photos"
    data.mkdir()
    truths = {"a.png": _photo(80, 96, 5), "b.png": _photo(100, 72, 6)}
    for name, rgb in truths.items():
        Image.fromarray(rgb).save(data / name)
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, [
        "eval", "--checkpoint", str(tiny_checkpoint), "--data", str(data), "--out", str(out),
        "--tile", "64", "--stride", "32", "--block", "64", "--threads", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert "MEAN" in result.output
    report = json.loads((out / "eval.json").read_text())
    assert [e["name"] for e in report["images"]] == ["a.png", "b.png"]
    for entry in report["images"]:
        truth = truths[entry["name"]]
        assert (entry["height"], entry["width"]) == truth.shape[:2]
        base = entry["baseline"]
        assert base["ab_rmse"] == pytest.approx(chroma_rms(to_lab(truth)), rel=2e-3)
        assert base["ab_rmse"] == pytest.approx(entry["truth"]["chroma_rms"], rel=2e-3)
        assert base["colorfulness"] == pytest.approx(0.0, abs=1e-9)
        for who in ("model", "baseline"):
            assert set(entry[who]) >= {"psnr", "ssim", "ciede2000", "ab_rmse",
                                       "colorfulness", "colorfulness_ratio"}
    for who in ("model", "baseline"):
        assert report["mean"][who]["ciede2000"] == pytest.approx(
            np.mean([e[who]["ciede2000"] for e in report["images"]]))
    sheet = Image.open(out / "sheet.png")
    assert sheet.height == 2 * 384 + 4 and sheet.width > 3 * 384


def test_eval_of_a_hinted_checkpoint_reports_context_off_and_guided(tmp_path,
                                                                    hinted_checkpoint):
    data = tmp_path / "photos"
    data.mkdir()
    Image.fromarray(_photo(80, 96, 5)).save(data / "a.png")
    Image.fromarray(_photo(70, 90, 6)).save(data / "b.png")
    base = ["eval", "--checkpoint", str(hinted_checkpoint), "--data", str(data), "--tile", "64",
            "--stride", "32", "--block", "64", "--threads", "1", "-q", "--context", "64"]
    reports = {}
    for factor in (1, 4):
        out = tmp_path / f"eval{factor}"
        result = CliRunner().invoke(main, [*base, "--out", str(out), "--guided", str(factor)])
        assert result.exit_code == 0, result.output
        assert "no ctx" in result.output and "bilinear" in result.output
        reports[factor] = json.loads((out / "eval.json").read_text())
    exact, coarse = reports[1], reports[4]
    assert set(exact["mean"]) == {"model", "no_context", "guided", "bilinear", "baseline",
                                  "truth"}
    # a reference at full size hints the truth's own chroma: the bilinear row is the truth
    assert exact["mean"]["bilinear"]["ciede2000"] < 0.5
    # downscaled 4x it is still far better than gray, and the photos were cropped to 4s
    assert coarse["mean"]["bilinear"]["ciede2000"] < coarse["mean"]["baseline"]["ciede2000"]
    assert [(e["height"], e["width"]) for e in coarse["images"]] == [(80, 96), (68, 88)]
    assert coarse["settings"]["guided"] == 4 and coarse["settings"]["context"] == 64


def test_eval_guided_needs_a_hinted_checkpoint(tmp_path, tiny_checkpoint):
    data = tmp_path / "photos"
    data.mkdir()
    Image.fromarray(_photo(40, 48, 1)).save(data / "a.png")
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(tiny_checkpoint), "--data",
                                       str(data), "--out", str(tmp_path / "e"), "--guided", "4",
                                       "--tile", "64", "--stride", "32", "-q"])
    assert result.exit_code == 2 and "--guided needs a checkpoint with hint planes" in \
        result.output
