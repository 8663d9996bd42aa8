from __future__ import annotations

import numpy as np
import pytest
import tifffile
from conftest import smooth_image
from PIL import Image

from tilecolor.core.color import gray_to_lightness, rgb_to_lab
from tilecolor.core.errors import InputError, OutputError
from tilecolor.io.formats import output_path
from tilecolor.io.read import probe, read_tiff_region, read_whole
from tilecolor.io.write import write_image


@pytest.mark.parametrize("kwargs", [dict(), dict(tile=(32, 32), compression="zlib"),
                                    dict(bigtiff=True, tile=(16, 16)),
                                    dict(rowsperstrip=7, compression="lzw")])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_region_reads_match_whole(tmp_path, kwargs, dtype):
    img = smooth_image(90, 77, dtype=dtype)
    tifffile.imwrite(tmp_path / "a.tif", img, **kwargs)
    info = probe(tmp_path / "a.tif")
    assert (info.format, info.height, info.width, info.dtype, info.channels) == \
        ("tiff", 90, 77, np.dtype(dtype).name, 1)
    np.testing.assert_array_equal(read_tiff_region(info.path, 10, 50, 3, 70), img[10:50, 3:70])


def test_color_tiff_becomes_gray_with_same_lightness(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb")
    info = probe(tmp_path / "c.tif")
    assert info.is_color
    gray = read_tiff_region(info.path, 0, 40, 0, 50)
    assert gray.shape == (40, 50) and gray.dtype == np.uint8
    np.testing.assert_allclose(gray_to_lightness(gray), rgb_to_lab(rgb / 255.0)[..., 0], atol=0.6)


@pytest.mark.parametrize("mode,fmt,dtype", [("L", "png", "uint8"), ("I;16", "png", "uint16"),
                                            ("L", "jpeg", "uint8"), ("RGB", "jpeg", "uint8"),
                                            ("RGB", "png", "uint8")])
def test_pillow_formats(tmp_path, mode, fmt, dtype):
    img = smooth_image(33, 45, dtype=np.uint16 if mode == "I;16" else np.uint8)
    if mode == "RGB":
        img = np.stack([img, img[::-1], img[:, ::-1]], axis=-1)
    path = tmp_path / f"x.{'jpg' if fmt == 'jpeg' else fmt}"
    Image.fromarray(img).save(path)
    info = probe(path)
    assert (info.format, info.height, info.width, info.dtype) == (fmt, 33, 45, dtype)
    gray = read_whole(info)
    assert gray.shape == (33, 45) and gray.dtype == dtype
    if mode in ("L", "I;16") and fmt == "png":
        np.testing.assert_array_equal(gray, img)


@pytest.mark.parametrize("content,match", [(b"", "empty file"), (b"hello world", "not a TIFF"),
                                           (b"II*\x00" + b"\x00" * 20, "corrupt"),
                                           (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "corrupt")])
def test_bad_files_raise_input_error_naming_file(tmp_path, content, match):
    path = tmp_path / "bad.tif"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match) as e:
        probe(path)
    assert "bad.tif" in str(e.value)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_output_is_tiled_compressed_and_exact(tmp_path, dtype):
    rgb = np.stack([smooth_image(300, 520, seed=s, dtype=dtype) for s in range(3)], axis=-1)
    dest = write_image(rgb, tmp_path / "o.tif", "tiff")
    with tifffile.TiffFile(dest) as tif:
        page = tif.pages[0]
        assert page.is_tiled and page.tilewidth == 256
        assert page.compression != 1
        np.testing.assert_array_equal(page.asarray(), rgb)
    assert [p.name for p in tmp_path.iterdir()] == ["o.tif"]  # no temporary left


def test_png_output_16_bit_round_trip(tmp_path):
    rgb = np.stack([smooth_image(40, 30, seed=s, dtype=np.uint16) for s in range(3)], axis=-1)
    dest = write_image(rgb, tmp_path / "o.png", "png")
    import imagecodecs

    np.testing.assert_array_equal(imagecodecs.png_decode(dest.read_bytes()), rgb)


def test_jpeg_output_from_16_bit(tmp_path):
    rgb = np.full((20, 30, 3), 40000, np.uint16)
    dest = write_image(rgb, tmp_path / "o.jpg", "jpeg")
    with Image.open(dest) as im:
        assert im.size == (30, 20) and im.mode == "RGB"
        assert abs(int(np.asarray(im)[0, 0, 0]) - 40000 // 256) <= 2


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(OutputError):
        write_image(np.zeros((2, 2, 3), np.uint8), tmp_path / "o.xyz", "xyz")
    assert list(tmp_path.iterdir()) == []


def test_output_names(tmp_path):
    assert output_path(tmp_path, tmp_path / "in" / "a.TIFF", "tiff").name == "a.TIFF"
    assert output_path(tmp_path, tmp_path / "in" / "a.tif", "png").name == "a.png"
    assert output_path(tmp_path, tmp_path / "in" / "a.jpeg", "jpeg").name == "a.jpeg"
