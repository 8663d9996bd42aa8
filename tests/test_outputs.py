"""Pyramidal TIFF and OME-Zarr outputs: levels, exactness, bounded memory, atomic folders."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image

from tilecolor.batch.plan import WORK_DIR, fingerprint, plan_batch
from tilecolor.cli import main
from tilecolor.config import RunConfig
from tilecolor.engine.settings import Settings
from tilecolor.engine.store import WorkStore
from tilecolor.engine.write import write_output
from tilecolor.io import tiff
from tilecolor.io.formats import output_path
from tilecolor.io.omezarr import ZARR_CHUNK
from tilecolor.io.pyramid import StripPyramid, downsample, pyramid_shapes
from tilecolor.io.tiff import OUTPUT_TILE
from tilecolor.io.write import write_image


def rgb_image(h: int, w: int, dtype=np.uint8) -> np.ndarray:
    return np.stack([smooth_image(h, w, seed=s, dtype=dtype) for s in range(3)], axis=-1)


def mean_oracle(a: np.ndarray) -> np.ndarray:
    """2x2 mean over the pixels that exist (float), the reference for ``downsample``."""
    h, w, c = a.shape
    total, count = np.zeros(((h + 1) // 2, (w + 1) // 2, c)), np.zeros(((h + 1) // 2,
                                                                      (w + 1) // 2, 1))
    for dy in (0, 1):
        for dx in (0, 1):
            part = a[dy::2, dx::2]
            total[: part.shape[0], : part.shape[1]] += part
            count[: part.shape[0], : part.shape[1]] += 1
    return total / count


class Recording:
    """Array wrapper that records how many rows each read returns (the memory oracle)."""

    def __init__(self, array) -> None:
        self.array, self.rows = array, []

    shape = property(lambda self: self.array.shape)
    dtype = property(lambda self: self.array.dtype)

    def __getitem__(self, key):
        out = np.asarray(self.array[key])
        self.rows.append(out.shape[0])
        return out


@pytest.mark.parametrize("h,w,want", [
    (1024, 1024, [(1024, 1024)]), (300, 520, [(300, 520)]),
    (1025, 10, [(1025, 10), (513, 5), (257, 3)]),
    (2048, 1500, [(2048, 1500), (1024, 750), (512, 375)]),
    (3001, 4097, [(3001, 4097), (1501, 2049), (751, 1025), (376, 513), (188, 257)])])
def test_pyramid_rule(h, w, want):
    assert pyramid_shapes(h, w) == want


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("h,w", [(6, 8), (7, 9), (1, 1), (1, 5)])
def test_downsample_is_rounded_mean_of_existing_pixels(h, w, dtype):
    a = np.random.default_rng(h * w).integers(0, np.iinfo(dtype).max, (h, w, 3), dtype=dtype,
                                             endpoint=True)
    got = downsample(a)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, np.floor(mean_oracle(a) + 0.5))


@pytest.mark.parametrize("h,w,rows", [(37, 23, 4), (64, 16, 8), (9, 40, 2), (5, 3, 16)])
def test_strip_pyramid_equals_whole_image_downsampling(h, w, rows):
    a = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    shapes = [(h, w)]
    while len(shapes) < 4:
        shapes.append(((shapes[-1][0] + 1) // 2, (shapes[-1][1] + 1) // 2))
    got = [np.zeros((*s, 3), np.uint8) for s in shapes]
    seen = []

    def sink(level, y, strip):
        assert strip.shape[0] <= rows and (y % rows == 0)
        got[level][y : y + strip.shape[0]] = strip
        seen.append(level)

    pyramid = StripPyramid(shapes, rows, sink)
    for y in range(0, h, rows):
        pyramid.push(0, a[y : y + rows])
    want = a
    for level in range(4):
        np.testing.assert_array_equal(got[level], want)
        want = downsample(want)
    assert set(seen) == {0, 1, 2, 3}


def read_tiff_levels(path) -> list[np.ndarray]:
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 1 and tif.is_ome  # the reduced levels are SubIFDs
        page = tif.pages[0]
        levels = [lv.keyframe for lv in tif.series[0].levels]
        assert levels[0] is page or levels[0].offset == page.offset
        assert [p.offset for p in levels[1:]] == list(page.subifds or ())
        for k, p in enumerate(levels):
            assert p.is_tiled and (p.tilelength, p.tilewidth) == (OUTPUT_TILE, OUTPUT_TILE)
            assert p.compression == tifffile.COMPRESSION.ADOBE_DEFLATE and p.predictor == 2
            assert p.subfiletype == (1 if k else 0)
        return [p.asarray() for p in levels]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_pyramid_tiff_levels_exact(tmp_path, dtype):
    rgb = rgb_image(1300, 1100, dtype)
    dest = write_image(rgb, tmp_path / "o.tif", "tiff")
    levels = read_tiff_levels(dest)
    assert [lv.shape[:2] for lv in levels] == pyramid_shapes(1300, 1100) == \
        [(1300, 1100), (650, 550), (325, 275)]
    np.testing.assert_array_equal(levels[0], rgb)
    for k in (1, 2):
        assert levels[k].dtype == dtype
        np.testing.assert_array_equal(levels[k], downsample(levels[k - 1]))
        assert np.abs(levels[k] - mean_oracle(levels[k - 1])).max() <= 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["o.tif"]  # no temporary file or levels


def test_small_tiff_has_no_pyramid(tmp_path):
    rgb = rgb_image(300, 1024)
    levels = read_tiff_levels(write_image(rgb, tmp_path / "o.tif", "tiff"))
    assert len(levels) == 1
    np.testing.assert_array_equal(levels[0], rgb)


def zarr_source(path, rgb: np.ndarray):
    a = zarr.create_array(str(path), shape=rgb.shape, chunks=(256, 512, 3), dtype=rgb.dtype,
                          fill_value=0)
    a[:] = rgb
    return a


@pytest.mark.parametrize("fmt,rows", [("tiff", OUTPUT_TILE), ("zarr", ZARR_CHUNK)])
def test_writers_read_only_strips_once(tmp_path, fmt, rows):
    src = Recording(zarr_source(tmp_path / "src.zarr", rgb_image(2100, 1300)))
    write_image(src, tmp_path / ("o.tif" if fmt == "tiff" else "o.ome.zarr"), fmt)
    assert max(src.rows) == rows and sum(src.rows) == 2100  # strips, each row read once


def test_writer_memory_does_not_grow_with_image_height(tmp_path):
    peaks = {}
    for h in (1024, 2048, 8192):  # the first write also warms up imports and caches
        src = zarr_source(tmp_path / f"s{h}.zarr", np.tile(rgb_image(1024, 1024), (h // 1024,
                                                                                    1, 1)))
        for fmt, name in (("tiff", f"{h}.tif"), ("zarr", f"{h}.ome.zarr")):
            tracemalloc.start()
            write_image(src, tmp_path / name, fmt)
            peaks[fmt, h] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    whole = 8192 * 1024 * 3
    for fmt in ("tiff", "zarr"):
        assert peaks[fmt, 8192] < 1.25 * peaks[fmt, 2048], peaks
        assert peaks[fmt, 8192] < whole / 3, peaks


def test_engine_stages_tiff_levels_in_the_work_store(tmp_path):
    rgb = rgb_image(1100, 700)
    plan = Settings(tile=64, stride=32, block=256).plan(1100, 700)
    store = WorkStore.create(tmp_path / "w.zarr", plan, "uint8")
    store.array("rgb", "r+")[:] = rgb
    seen = []
    real = tiff._EncodedLevels

    def spy(scratch, *args):
        seen.append(scratch)
        return real(scratch, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiff, "_EncodedLevels", spy)
        write_output(store, tmp_path / "out" / "o.tif", "tiff")
    assert seen == [store.path / "pyramid"]
    assert not (store.path / "pyramid").exists()  # removed once written
    levels = read_tiff_levels(tmp_path / "out" / "o.tif")
    assert [lv.shape[:2] for lv in levels] == [(1100, 700), (550, 350), (275, 175)]
    np.testing.assert_array_equal(levels[0], rgb)


def read_ome_zarr(path) -> tuple[dict, list[np.ndarray]]:
    """Check the NGFF 0.4 layout and return the attributes and levels as (h, w, 3)."""
    assert json.loads((path / ".zgroup").read_text())["zarr_format"] == 2
    group = zarr.open_group(str(path), mode="r", zarr_format=2)
    attrs = group.attrs.asdict()
    (ms,) = attrs["multiscales"]
    assert ms["version"] == "0.4"
    assert [(a["name"], a["type"]) for a in ms["axes"]] == \
        [("c", "channel"), ("y", "space"), ("x", "space")]
    levels = []
    for k, ds in enumerate(ms["datasets"]):
        assert ds["path"] == str(k)
        assert ds["coordinateTransformations"] == [{"type": "scale",
                                                    "scale": [1.0, 2.0**k, 2.0**k]}]
        meta = json.loads((path / str(k) / ".zarray").read_text())
        assert meta["dimension_separator"] == "/" and meta["compressor"]["id"] == "blosc"
        arr = group[str(k)]
        assert arr.chunks == (1, *(min(ZARR_CHUNK, n) for n in arr.shape[1:]))
        levels.append(np.moveaxis(arr[:], 0, -1))
    return attrs, levels


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_ome_zarr_levels_match_tiff(tmp_path, dtype):
    rgb = rgb_image(1100, 1700, dtype)
    tif = read_tiff_levels(write_image(rgb, tmp_path / "o.tif", "tiff"))
    dest = write_image(rgb, tmp_path / "o.ome.zarr", "zarr")
    attrs, levels = read_ome_zarr(dest)
    assert [lv.shape[:2] for lv in levels] == pyramid_shapes(1100, 1700) == \
        [(1100, 1700), (550, 850), (275, 425)]
    for k, level in enumerate(levels):
        assert level.dtype == dtype
        np.testing.assert_array_equal(level, tif[k])
        if k:
            assert np.abs(level - mean_oracle(levels[k - 1])).max() <= 1
    channels = attrs["omero"]["channels"]
    assert [(c["label"], c["color"]) for c in channels] == \
        [("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF")]
    assert {c["window"]["end"] for c in channels} == {np.iinfo(dtype).max}
    assert attrs["multiscales"][0]["name"] == "o"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.ome.zarr", "o.tif"]


def test_ome_zarr_opens_with_ome_zarr_py(tmp_path):
    pytest.importorskip("ome_zarr")
    from ome_zarr.format import FormatV04
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    rgb = rgb_image(1030, 600)
    dest = write_image(rgb, tmp_path / "x.ome.zarr", "zarr")
    (node,) = [n for n in Reader(parse_url(str(dest), fmt=FormatV04()))()
               if n.load(Multiscales)]
    assert [tuple(a.shape) for a in node.data] == [(3, 1030, 600), (3, 515, 300),
                                                   (3, 258, 150)]
    np.testing.assert_array_equal(np.moveaxis(np.asarray(node.data[0]), 0, -1), rgb)
    assert node.metadata["channel_names"] == ["red", "green", "blue"]
    assert node.metadata["contrast_limits"] == [[0, 255]] * 3


def test_ome_zarr_replaces_folder_atomically(tmp_path):
    dest = tmp_path / "o.ome.zarr"
    write_image(rgb_image(40, 50), dest, "zarr")
    new = rgb_image(60, 30, np.uint16)
    write_image(new, dest, "zarr")
    np.testing.assert_array_equal(read_ome_zarr(dest)[1][0], new)

    class Failing(Recording):
        def __getitem__(self, key):
            raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        write_image(Failing(new), dest, "zarr")
    np.testing.assert_array_equal(read_ome_zarr(dest)[1][0], new)  # the old one is intact
    assert [p.name for p in tmp_path.iterdir()] == ["o.ome.zarr"]  # no temporary left


def test_zarr_output_names_and_config(tmp_path):
    assert output_path(tmp_path, tmp_path / "a.png", "zarr").name == "a.ome.zarr"
    assert output_path(tmp_path, tmp_path / "scan.ome.tif", "zarr").name == "scan.ome.zarr"
    assert RunConfig(format="zarr").format == "zarr"


def test_cli_format_zarr_end_to_end(tmp_path, tiny_checkpoint):
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "b.tif", smooth_image(1090, 120, seed=2, dtype=np.uint16),
                     tile=(32, 32), compression="zlib")
    fast = ["--tile", "64", "--stride", "32", "--block", "128", "--threads", "1",
            "--dashboard-address", "127.0.0.1:0", "--checkpoint", str(tiny_checkpoint)]
    for fmt in ("tiff", "zarr"):
        r = CliRunner().invoke(main, ["run", "--input", str(d), "--output",
                                      str(tmp_path / fmt), "--format", fmt, *fast],
                               catch_exceptions=False)
        assert r.exit_code == 0 and "1 colorized" in r.output, r.output
    _, levels = read_ome_zarr(tmp_path / "zarr" / "b.ome.zarr")
    tif = read_tiff_levels(tmp_path / "tiff" / "b.tif")
    assert [lv.shape for lv in levels] == [(1090, 120, 3), (545, 60, 3), (273, 30, 3)]
    for level, t in zip(levels, tif, strict=True):
        assert level.dtype == np.uint16
        np.testing.assert_array_equal(level, t)
    assert sorted(p.name for p in (tmp_path / "zarr").iterdir()) == [".tilecolor",
                                                                     "b.ome.zarr"]
    assert not list((tmp_path / "zarr" / ".tilecolor").glob("*.zarr"))  # store removed


def test_existing_output_folder_is_skipped_or_refused(tmp_path):
    src = tmp_path / "in" / "a.png"
    src.parent.mkdir()
    Image.fromarray(smooth_image(20, 30)).save(src)
    out, settings = tmp_path / "out", Settings(tile=64, stride=32, block=128)
    (out / "a.ome.zarr").mkdir(parents=True)  # not written by tilecolor
    jobs, known = plan_batch([src], out, settings, "digest", fmt="zarr")
    assert not jobs and "not written by tilecolor" in known[src].error
    manifest = out / WORK_DIR / "a.png.done.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"fingerprint": fingerprint(src, "digest", settings,
                                                               "zarr")}))
    jobs, known = plan_batch([src], out, settings, "digest", fmt="zarr")
    assert not jobs and known[src].status == "skipped"
    # a bf16 result is not the fp32 one already there: recomputed
    jobs, known = plan_batch([src], out, settings, "digest", fmt="zarr", precision="bf16")
    assert [j.dest for j in jobs] == [out / "a.ome.zarr"] and not known
    jobs, known = plan_batch([src], out, settings, "digest", fmt="zarr", overwrite=True)
    assert [j.dest for j in jobs] == [out / "a.ome.zarr"] and jobs[0].fmt == "zarr"


def test_same_image_is_written_as_the_same_bytes(tmp_path):
    """No random UUIDs or timestamps: a resumed run must be byte-identical."""
    rgb = np.random.default_rng(5).integers(0, 255, (1100, 300, 3), dtype=np.uint8)
    a = write_image(rgb, tmp_path / "a" / "o.tif", "tiff").read_bytes()
    b = write_image(rgb, tmp_path / "b" / "o.tif", "tiff").read_bytes()
    assert a == b


@pytest.mark.parametrize("h,w,block,dtype", [(1300, 1100, 512, np.uint8),
                                             (2600, 1537, 1024, np.uint16),
                                             (700, 900, 512, np.uint8),  # no reduced levels
                                             (3001, 257, 512, np.uint8)])  # one tile wide
def test_tiff_from_chunk_encoded_tiles_is_the_same_file(tmp_path, h, w, block, dtype):
    """Levels 0 and 1 encoded chunk by chunk (as the tasks finishing each chunk do) and
    copied in TIFF order: byte for byte the file written from the pixels."""
    rng = np.random.default_rng(1)
    rgb = np.stack([smooth_image(h, w, seed=s, dtype=dtype) for s in range(3)], axis=-1)
    rgb[rng.random((h, w)) < 0.01] = 0  # some noise the deflate has to keep
    tiff.write_tiff(rgb, tmp_path / "ref.tif", name="o.tif")
    folder = tmp_path / "tiles"
    folder.mkdir()
    shapes = pyramid_shapes(h, w)
    level1 = np.zeros((*shapes[1], 3), dtype) if len(shapes) > 1 else None
    for r, y0 in enumerate(range(0, h, block)):
        for c, x0 in enumerate(range(0, w, block)):
            pixels = rgb[y0 : y0 + block, x0 : x0 + block]
            levels = [tiff.encode_tiles(pixels)]
            if level1 is not None:
                small = downsample(pixels)
                level1[y0 // 2 : y0 // 2 + small.shape[0],
                       x0 // 2 : x0 // 2 + small.shape[1]] = small
                levels.append(tiff.encode_tiles(small))
            tiff.save_chunk_tiles(folder / f"{r}.{c}.bin", levels)
    waited = []
    chunked = tiff.ChunkedTiles(folder, (h, w), block, level1,
                                   lambda a, b: waited.append((a, b)))
    # every byte comes from the tiles: the pixels given are only a shape and a dtype here
    blank = np.broadcast_to(np.zeros((), dtype), rgb.shape)
    tiff.write_tiff(blank, tmp_path / "new.tif", name="o.tif", chunked=chunked)
    assert (tmp_path / "new.tif").read_bytes() == (tmp_path / "ref.tif").read_bytes()
    rows = -(-h // block)
    assert waited[:rows] == [(r, r) for r in range(rows)]  # row by row, in order
    with pytest.raises(ValueError, match="multiple of 512"):
        tiff.ChunkedTiles(folder, (h, w), 768)
