"""Guided mode (``--hint``): a color reference of the same scene, at any size and in any
format tilecolor reads, whose chroma is every tile's hint. The oracle: through the real
engine, a 4-plane affine stand-in equals the stand-in on the whole image's planes with
the reference's chroma upsampled at once (a reference size that is no power of two)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image
from test_hints import affine4, whole_planes

from tilecolor.cli import main
from tilecolor.core.color import AB_SCALE, gray_to_lightness, rgb_to_lab
from tilecolor.core.errors import InputError
from tilecolor.core.planes import HINTED
from tilecolor.core.resample import downsample_mean
from tilecolor.engine.graph import submit_image
from tilecolor.engine.hints import REFERENCE_AB, find_reference, plan_reference, read_color
from tilecolor.engine.settings import Settings
from tilecolor.engine.store import WorkStore
from tilecolor.io.read import probe

FAST = ["--tile", "64", "--stride", "32", "--block", "128", "--dashboard-address",
        "127.0.0.1:0", "--threads", "1"]


def color_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 with smooth hue changes."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack([0.5 + 0.4 * np.sin(x / w * 3 + seed), 0.5 + 0.3 * np.cos(y / h * 4),
                    0.4 + 0.3 * np.sin((x + y) / (h + w) * 5)], -1)
    return np.clip(rgb * 255, 0, 255).astype(np.uint8)


def reference_chroma(rgb: np.ndarray, factor: int) -> np.ndarray:
    lab = rgb_to_lab(rgb / np.float32(255))
    return np.stack([downsample_mean(lab[..., ch] / np.float32(AB_SCALE), factor)
                     for ch in (1, 2)])


@pytest.mark.parametrize("h,w,ref,size,tile,stride,block", [
    (200, 300, (41, 61), 16, 32, 24, 64),  # factor 3: field 14 x 21, scale 14.6 x 14.8
    (150, 131, (151, 132), 256, 16, 12, 96),  # a reference as large as the image
    (37, 53, (7, 10), 256, 16, 8, 32),  # a reference smaller than a tile
])
def test_guided_tiles_equal_the_whole_image_oracle(client2, tmp_path, h, w, ref, size, tile,
                                                   stride, block):
    img = smooth_image(h, w, seed=h)
    tifffile.imwrite(tmp_path / "in.tif", img, tile=(16, 16))
    rgb = color_image(*ref, seed=1)
    Image.fromarray(rgb).save(tmp_path / "ref.png")
    reference = plan_reference(tmp_path / "in.tif", h, w, tmp_path / "ref.png", size)
    settings = Settings(tile=tile, stride=stride, block=block, batch_size=3, planes=HINTED)
    store = WorkStore.create(tmp_path / "w.zarr", settings.plan(h, w), "uint8", output="ab")
    graph = submit_image(client2, probe(tmp_path / "in.tif"), store, settings, affine4,
                         hint=reference)
    client2.gather(graph.reduces)
    field = reference_chroma(rgb, reference.factor)
    assert field.shape[1:] == reference.shape
    np.testing.assert_allclose(store.array(REFERENCE_AB)[:], field, atol=1e-6)
    ky, kx = reference.field.scale
    assert (ky, kx) == (h * reference.factor / ref[0], w * reference.factor / ref[1])
    expected = affine4(whole_planes(gray_to_lightness(img), field, (ky, kx)))[0]
    np.testing.assert_allclose(store.array("ab")[:] / 110, np.moveaxis(expected, 0, -1),
                               atol=2e-5, rtol=0)


def test_reference_size_is_bounded_by_the_context_size(tmp_path):
    Image.fromarray(color_image(600, 1000)).save(tmp_path / "ref.jpg")
    for size, factor in [(256, 3), (100, 10), (2000, 1)]:
        ref = plan_reference(tmp_path / "in.tif", 60, 100, tmp_path / "ref.jpg", size)
        assert ref.factor == factor and size <= max(ref.shape) < 2 * size or factor == 1


def test_every_format_gives_the_same_chroma(tmp_path):
    rgb = color_image(40, 60, seed=3)
    Image.fromarray(rgb).save(tmp_path / "r.png")
    tifffile.imwrite(tmp_path / "r.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(rgb, -1, 0), photometric="rgb",
                     planarconfig="separate")
    tifffile.imwrite(tmp_path / "r16.tif", rgb.astype(np.uint16) * 257, photometric="rgb")
    want = read_color(probe(tmp_path / "r.png"))
    for name in ("r.tif", "p.tif", "r16.tif"):
        np.testing.assert_allclose(read_color(probe(tmp_path / name)), want, atol=1e-6)
    Image.fromarray(rgb).save(tmp_path / "r.jpg", quality=95)
    assert np.abs(read_color(probe(tmp_path / "r.jpg")) - want).mean() < 0.02


def test_reference_must_be_color_and_of_the_same_aspect_ratio(tmp_path):
    Image.fromarray(color_image(100, 150)).save(tmp_path / "ref.png")
    Image.fromarray(smooth_image(100, 150)).save(tmp_path / "gray.png")
    plan_reference(tmp_path / "in.tif", 200, 301, tmp_path / "ref.png", 64)  # 0.3 % off
    with pytest.raises(InputError, match=r"in.tif: hint .*ref.png is 150x100.*304x200"):
        plan_reference(tmp_path / "in.tif", 200, 304, tmp_path / "ref.png", 64)
    with pytest.raises(InputError, match="not a color image"):
        plan_reference(tmp_path / "in.tif", 100, 150, tmp_path / "gray.png", 64)


def test_references_are_matched_by_name_stem(tmp_path):
    (tmp_path / "refs").mkdir()
    for name in ("a.jpg", "b.png", "b.tif", "notes.txt"):
        (tmp_path / "refs" / name).write_bytes(b"x")
    assert find_reference(tmp_path / "in" / "a.tif", tmp_path / "refs").name == "a.jpg"
    with pytest.raises(InputError, match="several hints for it.*b.png, b.tif"):
        find_reference(tmp_path / "in" / "b.png", tmp_path / "refs")
    with pytest.raises(InputError, match=r"c.tif: no hint for it in .*refs \(no image named c"):
        find_reference(tmp_path / "in" / "c.tif", tmp_path / "refs")
    assert find_reference(tmp_path / "x.tif", tmp_path / "refs" / "a.jpg").name == "a.jpg"


# ------------------------------------------------------------- through `tilecolor run`

def run_cli(*args):
    return CliRunner().invoke(main, ["run", *map(str, args)], catch_exceptions=False)


@pytest.fixture
def scene(tmp_path):
    """Gray inputs a.tif, b.png, c.png, d.png and references: a and b fit (a's a JPEG of
    another size, b's a TIFF), c's aspect ratio is off by 5 %, d has none."""
    gray, refs = tmp_path / "gray", tmp_path / "refs"
    gray.mkdir()
    refs.mkdir()
    tifffile.imwrite(gray / "a.tif", smooth_image(300, 260, seed=1), tile=(32, 32))
    for name, shape in (("b", (90, 140)), ("c", (100, 100)), ("d", (80, 80))):
        Image.fromarray(smooth_image(*shape, seed=len(name))).save(gray / f"{name}.png")
    Image.fromarray(color_image(75, 65, seed=1)).save(refs / "a.jpg", quality=95)
    tifffile.imwrite(refs / "b.tif", color_image(45, 70, seed=2), photometric="rgb")
    Image.fromarray(color_image(100, 105, seed=3)).save(refs / "c.png")
    return gray, refs


def test_guided_run_fails_unfit_images_and_finishes_the_others(scene, tmp_path,
                                                               hinted_checkpoint):
    gray, refs = scene
    out = tmp_path / "out"
    r = run_cli("--input", gray, "--output", out, "--checkpoint", hinted_checkpoint, *FAST,
                "--hint", refs)
    assert r.exit_code == 1, r.output
    assert "2 colorized, 0 up to date, 2 failed" in r.output
    lines = [line for line in r.output.splitlines() if line.startswith("  failed:")]
    assert len(lines) == 2
    assert "c.png: hint" in lines[0] and "c.png is 105x100" in lines[0]
    assert "d.png: no hint for it in" in lines[1]
    assert (out / "a.tif").exists() and (out / "b.png").exists()
    unguided = tmp_path / "unguided"
    r = run_cli("--input", gray / "a.tif", "--output", unguided, "--checkpoint",
                hinted_checkpoint, *FAST)
    assert r.exit_code == 0, r.output
    assert not np.array_equal(tifffile.imread(out / "a.tif"),
                              tifffile.imread(unguided / "a.tif"))


def test_reference_digest_is_part_of_the_fingerprint(scene, tmp_path, hinted_checkpoint):
    gray, refs = scene
    out = tmp_path / "out"
    args = ["--input", gray / "b.png", "--output", out, "--checkpoint", hinted_checkpoint,
            *FAST, "--hint", refs / "b.tif"]
    assert run_cli(*args).exit_code == 0
    first = (out / "b.png").read_bytes()
    assert "0 colorized, 1 up to date" in run_cli(*args).output
    tifffile.imwrite(refs / "b.tif", color_image(45, 70, seed=9), photometric="rgb")
    assert "1 colorized, 0 up to date" in run_cli(*args).output
    assert (out / "b.png").read_bytes() != first


def test_hint_usage_errors_exit_2(scene, tmp_path, tiny_checkpoint, hinted_checkpoint):
    gray, refs = scene
    r = run_cli("--input", gray, "--output", tmp_path / "o", "--checkpoint", tiny_checkpoint,
                *FAST, "--hint", refs)
    assert r.exit_code == 2
    assert "--hint needs a checkpoint with hint planes" in r.output
    assert str(tiny_checkpoint.resolve()) in r.output.replace("\n", "")
    r = run_cli("--input", gray, "--output", tmp_path / "o", "--checkpoint",
                hinted_checkpoint, *FAST, "--hint", refs / "a.jpg")
    assert r.exit_code == 2 and "is one image for 4 inputs" in r.output


def test_hint_in_the_job_spec_is_relative_to_it(scene, tmp_path, hinted_checkpoint):
    from tilecolor.config import load_spec

    gray, refs = scene
    spec = tmp_path / "job.toml"
    spec.write_text('input = "gray/b.png"\noutput = "out"\nhint = "refs/b.tif"\n'
                    f'checkpoint = "{hinted_checkpoint}"\ntile = 64\nstride = 32\n'
                    'block = 128\n[cluster]\nthreads = 1\ndashboard_address = "127.0.0.1:0"\n')
    assert load_spec(spec)["hint"] == str(refs / "b.tif")
    r = CliRunner().invoke(main, ["run", "--config", str(spec)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "b.png").exists()
