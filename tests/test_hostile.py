"""One batch over a corpus of malformed and unusual inputs, all generated here.

Every file has an expected outcome: colorized (with the warning it must print, if any) or
rejected with a message. The batch must colorize the good ones, list every bad one with its
reason, exit 1, print no traceback, leave the inputs untouched and leave no stray files.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image

from tilecolor.cli import main

FAST = ["--tile", "64", "--stride", "32", "--block", "128", "--dashboard-address",
        "127.0.0.1:0", "--threads", "1"]
ODD = os.fsdecode(b"odd\nname \xff.png")  # a newline and a byte that is not UTF-8
LONG = "L" * 200 + ".png"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _patched_tiff(path: Path, **tags: int) -> None:
    tifffile.imwrite(path, smooth_image(32, 32))
    with tifffile.TiffFile(path, mode="r+b") as tif:
        for name, value in tags.items():
            tif.pages[0].tags[name].overwrite(value)


def _jpeg_with_size(path: Path, height: int, width: int) -> None:
    Image.fromarray(smooth_image(16, 16)).save(path)
    blob = bytearray(path.read_bytes())
    sof = blob.index(b"\xff\xc0")
    blob[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(blob))


def _exif_jpeg(path: Path, img: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[274] = orientation
    Image.fromarray(img).save(path, exif=exif)


def make_corpus(d: Path, out: Path, elsewhere: Path) -> dict[str, tuple[str, str | None]]:
    """Write the corpus into ``d``; returns name -> ("ok", warning or None) or
    ("reject", message)."""
    g = smooth_image(40, 56, seed=4)
    rgb = np.stack([g, g[::-1], g[:, ::-1]], axis=-1)
    exp: dict[str, tuple[str, str | None]] = {}

    def ok(name, warning=None):
        exp[name] = ("ok", warning)
        return d / name

    def bad(name, message):
        exp[name] = ("reject", message)
        return d / name

    # plain good images
    Image.fromarray(g).save(ok("good8.png"))
    tifffile.imwrite(ok("good16.tif"), smooth_image(70, 90, 1, np.uint16), tile=(32, 32),
                     compression="zlib")
    Image.fromarray(g).save(ok("good.jpg"))
    # unusual but readable: colorized, with a warning where something is converted/ignored
    Image.fromarray(rgb).save(ok("rgb.png", "RGB image; colorizing its luminance"))
    Image.fromarray(np.dstack([rgb, g])).save(ok("rgba.png", "alpha channel ignored"))
    Image.fromarray(rgb).convert("P").save(ok("palette.png", "palette image"))
    Image.fromarray(g).convert("LA").save(ok("graya.png", "alpha channel ignored"))
    Image.fromarray(rgb).convert("CMYK").save(ok("cmyk.jpg", "CMYK image"))
    tifffile.imwrite(ok("rgb.tif", "RGB image"), rgb, photometric="rgb")
    tifffile.imwrite(ok("planar.tif", "RGB image"), np.moveaxis(rgb, -1, 0),
                     photometric="rgb", planarconfig="separate")
    tifffile.imwrite(ok("palette.tif", "PALETTE image"), g, photometric="palette",
                     colormap=np.stack([np.arange(256) * 257, np.arange(256)[::-1] * 257,
                                        np.full(256, 30000)]).astype(np.uint16))
    tifffile.imwrite(ok("cmyk.tif", "CMYK image"), np.dstack([rgb, g]),
                     photometric="separated")
    tifffile.imwrite(ok("ycbcr.tif", "RGB image"), rgb, photometric="ycbcr",
                     compression="jpeg")
    tifffile.imwrite(ok("pages.tif", "3 pages; colorizing page 0 only"),
                     np.stack([g, g[::-1], g[:, ::-1]]), photometric="minisblack")
    tifffile.imwrite(ok("float01.tif"), (g / 255.0).astype(np.float32))
    tifffile.imwrite(ok("bilevel.tif"), g > 128)
    ramp = np.tile(np.linspace(0, 255, 56).astype(np.uint8), (40, 1))
    tifffile.imwrite(ok("miniswhite.tif"), ramp, photometric="miniswhite")
    _exif_jpeg(ok("rotated.jpg"), smooth_image(24, 40, seed=5), 6)
    _exif_jpeg(ok("orient9.jpg", "invalid EXIF orientation 9 ignored"), g, 9)
    frames = [Image.fromarray(g), Image.fromarray(g[::-1])]
    frames[0].save(ok("anim.png", "2 frames; colorizing the first"), save_all=True,
                   append_images=frames[1:])
    Image.fromarray(smooth_image(1, 1)).save(ok("pixel.png"))
    tifffile.imwrite(ok("thin.tif"), smooth_image(5, 70, seed=6))
    Image.fromarray(smooth_image(3, 2000, seed=7)).save(ok("wide.png"))
    tifffile.imwrite(ok("tall.tif"), smooth_image(1500, 2, seed=8))
    Image.fromarray(g).save(ok("png_named.tif", "named .tif but is a PNG file"), format="PNG")
    import imagecodecs

    ok("rgb16.png", "RGB image").write_bytes(imagecodecs.png_encode(
        np.stack([smooth_image(30, 20, s, np.uint16) for s in range(3)], axis=-1)))
    Image.fromarray(g).save(ok(ODD))
    Image.fromarray(g).save(ok(LONG))
    # rejected, each with a reason
    bad("zero.png", "empty file (0 bytes)").write_bytes(b"")
    bad("text.tif", "it looks like text").write_text("hello, I am not an image\n")
    bad("page.jpg", "it looks like text").write_text("<html><body>404</body></html>")
    bad("zeros.tif", "unrecognized header").write_bytes(bytes(4096))
    png = (d / "good8.png").read_bytes()
    bad("cut.png", "cannot decode PNG").write_bytes(png[: len(png) // 2])
    bad("flipped.png", "cannot decode PNG").write_bytes(
        png[:60] + bytes(b ^ 0x5A for b in png[60:-20]) + png[-20:])
    bad("header_only.png", "cannot decode PNG").write_bytes(png[:33] + _chunk(b"IEND", b""))
    jpg = (d / "good.jpg").read_bytes()
    bad("cut.jpg", "cannot decode JPEG").write_bytes(jpg[: len(jpg) // 2])
    bad("noise.jpg", "corrupt or unreadable JPEG").write_bytes(
        b"\xff\xd8\xff" + np.random.default_rng(0).bytes(500))
    tif = (d / "good16.tif").read_bytes()
    bad("cut.tif", "truncated TIFF").write_bytes(tif[: len(tif) // 2])
    bad("header.tif", "corrupt TIFF header").write_bytes(b"II*\x00" + bytes(20))
    Image.fromarray(g).save(bad("photo.bmp", "unsupported format BMP"))
    Image.fromarray(g).save(bad("anim.gif", "unsupported format GIF"))
    bad("photo.webp", "unsupported format WebP").write_bytes(
        b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(24))
    bad("scan.jp2", "unsupported format JPEG 2000").write_bytes(
        b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(40))
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    bad("bomb.png", "decompression-bomb guard").write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(bytes(9)))
        + _chunk(b"IEND", b""))
    _jpeg_with_size(bad("bomb.jpg", "decompression-bomb guard"), 60000, 60000)
    _patched_tiff(bad("huge.tif", "exceeds --max-pixels 8589934592"), ImageWidth=100000,
                  ImageLength=100000)
    _patched_tiff(bad("empty.tif", "empty image"), ImageWidth=0)
    _patched_tiff(bad("lab.tif", "photometric interpretation CIELAB"),
                  PhotometricInterpretation=8)
    _patched_tiff(bad("codec.tif", "unsupported TIFF compression"), Compression=99)
    tifffile.imwrite(bad("int16.tif", "unsupported sample type int16"), g.astype(np.int16))
    nan = (g / 255.0).astype(np.float32)
    nan[30, 50] = np.nan
    tifffile.imwrite(bad("nan.tif", "NaN or inf"), nan)
    tifffile.imwrite(bad("range.tif", "outside [0, 1]"), g.astype(np.float32))
    os.symlink(d / "missing.png", bad("dangling.png", "cannot read"))
    os.mkfifo(bad("fifo.tif", "not a regular file"))
    # an output path that is a symlink is refused, not followed
    Image.fromarray(g).save(bad("victim.png", "is a symlink; refusing to follow it"))
    out.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    os.symlink(elsewhere / "precious.txt", out / "victim.png")
    (d / "notes.txt").write_text("not listed")
    (d / "dir.png").mkdir()
    return exp


def _snapshot(d: Path) -> dict[str, tuple]:
    snap = {}
    for p in d.iterdir():
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
        snap[p.name] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return snap


def _output_name(name: str) -> str:
    return "png_named.png" if name == "png_named.tif" else name  # named by its content


@pytest.fixture(scope="module")
def batch(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("hostile")
    d, out, elsewhere = root / "in", root / "out", root / "elsewhere"
    d.mkdir()
    elsewhere.mkdir()
    exp = make_corpus(d, out, elsewhere)
    before = _snapshot(d)
    r = CliRunner().invoke(main, ["run", "--input", str(d), "--output", str(out),
                                  "--checkpoint", str(tiny_checkpoint), *FAST],
                           catch_exceptions=False)
    return dict(d=d, out=out, elsewhere=elsewhere, exp=exp, before=before, r=r)


def test_exit_1_no_traceback_summary_counts(batch):
    r, exp = batch["r"], batch["exp"]
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and "Logging error" not in r.output
    n_ok = sum(k == "ok" for k, _ in exp.values())
    n_bad = len(exp) - n_ok
    assert f"{n_ok} colorized, 0 up to date, {n_bad} failed" in r.output, r.output


def test_every_rejected_file_is_listed_with_its_reason(batch):
    failed = [line for line in batch["r"].output.splitlines() if line.startswith("  failed: ")]
    for name, (kind, message) in batch["exp"].items():
        if kind != "reject":
            continue
        lines = [line for line in failed if f"/{name}: " in line or f"/{name} " in line]
        assert lines, f"{name} not listed as failed"
        assert any(message in line for line in lines), (name, message, lines)


def test_readable_files_are_colorized_with_their_warning(batch):
    out, output = batch["out"], batch["r"].output
    for name, (kind, warning) in batch["exp"].items():
        if kind != "ok":
            continue
        dest = out / _output_name(name)
        assert dest.is_file(), f"no output for {name!r}"
        if warning:
            assert f"{name}: {warning}" in output, (name, warning)
    with Image.open(out / "rotated.jpg") as im:  # EXIF orientation 6: 40 x 24 stored
        assert im.size == (24, 40)
    assert tifffile.imread(out / "float01.tif").dtype == np.uint16
    with Image.open(out / "wide.png") as im:
        assert im.size == (2000, 3)
    white = np.asarray(tifffile.imread(out / "miniswhite.tif"), dtype=float).mean(axis=(0, 2))
    assert white[0] > white[-1] + 100  # stored 0 is white in MinIsWhite


def test_nothing_lost_no_stray_files(batch):
    d, out = batch["d"], batch["out"]
    assert _snapshot(d) == batch["before"]  # inputs untouched, nothing written beside them
    assert (batch["elsewhere"] / "precious.txt").read_text() == "keep"
    assert (out / "victim.png").is_symlink()
    expected = {_output_name(n) for n, (k, _) in batch["exp"].items() if k == "ok"}
    assert {p.name for p in out.iterdir()} == expected | {"victim.png", ".tilecolor"}
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]
    rejected_early = [n for n, (k, m) in batch["exp"].items() if k == "reject"
                      and "decode" not in m and "NaN" not in m and "outside" not in m]
    stores = {p.name for p in (out / ".tilecolor").iterdir()}
    for name in rejected_early:  # a file rejected by its header leaves nothing at all
        assert f"{name}.zarr" not in stores, name


def test_real_stderr_of_a_failing_batch_has_no_traceback(tmp_path, tiny_checkpoint):
    """As a subprocess: worker processes write to the real stderr too (a corrupt input
    fails inside an ingest task there)."""
    import subprocess
    import sys

    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(smooth_image(40, 30)).save(d / "good.png")
    png = (d / "good.png").read_bytes()
    (d / "cut.png").write_bytes(png[: len(png) // 2])
    nan = np.full((20, 20), np.nan, np.float32)
    tifffile.imwrite(d / "nan.tif", nan)
    (d / "text.tif").write_text("hello")
    r = subprocess.run([sys.executable, "-m", "tilecolor", "run", "--input", str(d),
                        "--output", str(tmp_path / "out"), "--checkpoint",
                        str(tiny_checkpoint), *FAST, "-q"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "1 colorized, 0 up to date, 3 failed" in r.stderr, r.stderr
    assert "cut.png: cannot decode PNG" in r.stderr and "nan.tif: float samples" in r.stderr
    assert "Traceback" not in r.stderr and "Compute Failed" not in r.stderr, r.stderr


def test_extreme_aspect_ratio_end_to_end(tmp_path, tiny_checkpoint):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(smooth_image(3, 100000, seed=9)).save(d / "strip.png")
    r = CliRunner().invoke(main, ["run", "--input", str(d), "--output", str(tmp_path / "out"),
                                  "--checkpoint", str(tiny_checkpoint), "--tile", "64",
                                  "--stride", "64", "--block", "8192", "--batch-size", "64",
                                  "--dashboard-address", "127.0.0.1:0", "--threads", "1", "-q"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "out" / "strip.png") as im:
        assert im.size == (100000, 3) and im.mode == "RGB"


def test_corrupt_tile_read_by_a_generator_task_fails_its_image_only(tmp_path, tiny_checkpoint):
    """With stride = tile and blocks of whole TIFF tiles, a block's generator task reads
    its region of the input itself (no ingest task): a tile whose deflate stream is garbage
    fails that image with one line naming the file and the rows, without a traceback, while
    the other image of the batch completes and no partial output is left."""
    import subprocess
    import sys

    d = tmp_path / "in"
    d.mkdir()
    for name in ("good.tif", "bad.tif"):
        tifffile.imwrite(d / name, smooth_image(1100, 700, seed=3), tile=(64, 64),
                         compression="zlib")
    with tifffile.TiffFile(d / "bad.tif") as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[150], page.databytecounts[150]  # tile row 8
    with open(d / "bad.tif", "r+b") as f:
        f.seek(offset)
        f.write(bytes(range(256)) * (count // 256) + bytes(count % 256))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "tilecolor", "run", "--input", str(d),
                        "--output", str(out), "--checkpoint", str(tiny_checkpoint),
                        "--tile", "64", "--stride", "64", "--block", "512",
                        "--dashboard-address", "127.0.0.1:0", "--threads", "1", "-q"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "1 colorized, 0 up to date, 1 failed" in r.stderr, r.stderr
    assert "bad.tif: cannot decode TIFF rows 512:1024" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "Compute Failed" not in r.stderr, r.stderr
    assert sorted(p.name for p in out.iterdir()) == [".tilecolor", "good.tif"]
