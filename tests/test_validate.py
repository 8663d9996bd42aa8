"""Header checks and sample conversions (tilecolor.io.validate, and probe/readers using them)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import smooth_image
from PIL import Image, ImageOps

from tilecolor.core.errors import ConfigError, InputError, one_line
from tilecolor.io.read import probe, read_tiff_region, read_whole
from tilecolor.io.validate import (
    DEFAULT_MAX_PIXELS,
    InputPolicy,
    identify,
    is_candidate,
    orient,
    oriented_size,
)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillow_exif_transpose(orientation):
    img = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[274] = orientation
    im.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(im))
    got = orient(img, orientation)
    np.testing.assert_array_equal(got, expected)
    assert oriented_size(7, 5, orientation) == (got.shape[1], got.shape[0])


def test_exif_rotated_jpeg_header_size_is_the_upright_size(tmp_path):
    exif = Image.Exif()
    exif[274] = 8
    Image.fromarray(smooth_image(20, 60)).save(tmp_path / "r.jpg", exif=exif)
    info = probe(tmp_path / "r.jpg")
    assert (info.height, info.width, info.orientation) == (60, 20, 8)
    assert read_whole(info).shape == (60, 20)


@pytest.mark.parametrize("head,name,match", [
    (b"BM" + bytes(40), "x.png", "unsupported format BMP"),
    (b"GIF89a" + bytes(40), "x.gif", "unsupported format GIF"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "x.webp", "unsupported format WebP"),
    (b"\x00\x01\x02\x03", "x.webp", "unsupported format WebP"),  # named so, unknown bytes
    (b"just some text\n", "x.tif", "looks like text"),
    (b"\x00\x01\x02\x03" * 8, "x.tif", "unrecognized header"),
])
def test_identify_names_what_the_file_is(head, name, match):
    with pytest.raises(InputError, match=match):
        identify(Path(name), head)


def test_candidates_include_unsupported_image_names():
    assert all(map(is_candidate, ["a.tif", "a.TIFF", "a.jpeg", "a.bmp", "a.webp", "a.gif"]))
    assert not any(map(is_candidate, ["a.txt", ".a.png", "a", "a.zarr"]))


def test_policy_validates():
    assert InputPolicy().max_pixels == DEFAULT_MAX_PIXELS == 2**33
    with pytest.raises(ConfigError, match="max_pixels=0"):
        InputPolicy(max_pixels=0)
    with pytest.raises(ConfigError, match="page=-1"):
        InputPolicy(page=-1)


def _forged(path: Path, width: int, height: int) -> Path:
    tifffile.imwrite(path, smooth_image(16, 16))
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(width)
        tif.pages[0].tags["ImageLength"].overwrite(height)
    return path


def test_max_pixels_default_passes_gigapixel_and_rejects_forged_headers(tmp_path):
    info = probe(_forged(tmp_path / "giga.tif", 92000, 92000))  # 8.5e9 px: header only
    assert info.pixels == 92000 * 92000
    with pytest.raises(InputError, match="10000000000 pixels exceeds --max-pixels"):
        probe(_forged(tmp_path / "forged.tif", 100000, 100000))
    with pytest.raises(InputError, match="exceeds --max-pixels 1000"):
        probe(tmp_path / "giga.tif", InputPolicy(max_pixels=1000))


def test_decompression_bomb_becomes_input_error(tmp_path):
    Image.fromarray(smooth_image(16, 16)).save(tmp_path / "b.png")
    blob = bytearray((tmp_path / "b.png").read_bytes())
    import struct
    import zlib

    blob[16:24] = struct.pack(">II", 20000, 20000)
    blob[29:33] = struct.pack(">I", zlib.crc32(bytes(blob[12:29])))
    (tmp_path / "b.png").write_bytes(bytes(blob))
    with pytest.raises(InputError, match="decompression-bomb guard") as e:
        probe(tmp_path / "b.png")
    assert "b.png" in str(e.value)


@pytest.mark.parametrize("shape", [(3, 100000), (100000, 3)])
def test_extreme_aspect_ratio(tmp_path, shape):
    img = smooth_image(*shape)
    tifffile.imwrite(tmp_path / "x.tif", img, rowsperstrip=64)
    info = probe(tmp_path / "x.tif")
    assert (info.height, info.width) == shape
    h, w = shape
    np.testing.assert_array_equal(read_tiff_region(info.path, h // 2, h, w // 3, w),
                                  img[h // 2 :, w // 3 :])


def test_page_selection(tmp_path):
    pages = np.stack([smooth_image(20, 30, seed=s) for s in range(3)])
    tifffile.imwrite(tmp_path / "p.tif", pages, photometric="minisblack")
    info = probe(tmp_path / "p.tif", InputPolicy(page=2))
    assert (info.page, info.pages) == (2, 3) and "3 pages" in info.notes[0]
    np.testing.assert_array_equal(read_whole(info), pages[2])
    with pytest.raises(InputError, match="--page 3 asked but the file has 3 page"):
        probe(tmp_path / "p.tif", InputPolicy(page=3))
    Image.fromarray(pages[0]).save(tmp_path / "p.png")
    with pytest.raises(InputError, match="only TIFF pages"):
        probe(tmp_path / "p.png", InputPolicy(page=1))


def test_float_tiff_maps_0_1_to_uint16_and_rejects_nan_and_range(tmp_path):
    x = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    tifffile.imwrite(tmp_path / "f.tif", x)
    info = probe(tmp_path / "f.tif")
    assert info.dtype == "uint16"
    np.testing.assert_array_equal(read_whole(info), np.rint(x * 65535).astype(np.uint16))
    x[3, 4] = np.inf
    tifffile.imwrite(tmp_path / "inf.tif", x)
    with pytest.raises(InputError, match="inf.tif: float samples contain inf"):
        read_whole(probe(tmp_path / "inf.tif"))
    tifffile.imwrite(tmp_path / "r.tif", x.clip(0, 1) * 2)
    with pytest.raises(InputError, match=r"outside \[0, 1\] \(found 0 to 2\)"):
        read_whole(probe(tmp_path / "r.tif"))


def test_color_layouts_give_the_same_gray(tmp_path):
    rgb = np.stack([smooth_image(24, 32, seed=s) for s in range(3)], axis=-1)
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(rgb, -1, 0), photometric="rgb",
                     planarconfig="separate")
    tifffile.imwrite(tmp_path / "a.tif", np.dstack([rgb, rgb[..., 0]]), photometric="rgb",
                     extrasamples=["unassalpha"])
    ref = read_whole(probe(tmp_path / "c.tif"))
    for name in ("p.tif", "a.tif"):
        np.testing.assert_array_equal(read_whole(probe(tmp_path / name)), ref)
    cmyk = np.zeros((24, 32, 4), np.uint8)
    cmyk[..., 3] = 255 - smooth_image(24, 32)  # K only: gray = 255 - K
    tifffile.imwrite(tmp_path / "k.tif", cmyk, photometric="separated")
    np.testing.assert_allclose(read_whole(probe(tmp_path / "k.tif")),
                               smooth_image(24, 32), atol=1)


def test_bilevel_and_miniswhite(tmp_path):
    bits = smooth_image(16, 24) > 128
    tifffile.imwrite(tmp_path / "b.tif", bits, photometric="miniswhite")
    gray = read_whole(probe(tmp_path / "b.tif"))
    np.testing.assert_array_equal(gray, np.where(bits, 0, 255).astype(np.uint8))


def test_palette_uses_the_colormap(tmp_path):
    idx = (smooth_image(16, 24) // 64).astype(np.uint8)  # 0..3
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, :4] = np.array([0, 20000, 40000, 65535])  # gray ramp in the first 4 entries
    tifffile.imwrite(tmp_path / "p.tif", idx, photometric="palette", colormap=cmap)
    info = probe(tmp_path / "p.tif")
    assert info.is_color and info.dtype == "uint8"
    np.testing.assert_array_equal(read_whole(info), (cmap[0] >> 8)[idx].astype(np.uint8))


def test_16_bit_rgb_png_keeps_16_bits(tmp_path):
    import imagecodecs

    rgb = np.stack([smooth_image(10, 12, s, np.uint16) for s in range(3)], axis=-1)
    (tmp_path / "c.png").write_bytes(imagecodecs.png_encode(rgb))
    info = probe(tmp_path / "c.png")
    assert info.dtype == "uint16" and info.channels == 3
    assert read_whole(info).dtype == np.uint16


def test_errors_survive_pickling_and_print_on_one_line():
    e = pickle.loads(pickle.dumps(InputError("/a/b\nc.tif", "bad value 3")))
    assert isinstance(e, InputError) and e.reason == "bad value 3"
    assert str(e) == "/a/b\\nc.tif: bad value 3"
    assert one_line("x\udcffy") == "x\\xffy"
