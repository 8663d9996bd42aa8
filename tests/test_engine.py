"""The Dask engine against oracles: identity/affine stand-ins must reproduce the stand-in
applied to the whole image exactly, whatever the image size, tile, stride, block and blend."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import tifffile
from conftest import smooth_image, write_input
from distributed import wait

from tilecolor.core.color import compose_rgb, gray_to_lightness, lightness_to_input
from tilecolor.core.tiling import interior
from tilecolor.engine.graph import submit_image
from tilecolor.engine.settings import Settings
from tilecolor.engine.store import WorkStore
from tilecolor.io.read import probe
from tilecolor.model.predict import make_predictor


def affine(x: np.ndarray) -> np.ndarray:
    """(N, 1, T, T) -> (N, 2, T, T): a pointwise stand-in for the generator."""
    return np.concatenate([0.5 * x + 0.1, -0.25 * x - 0.05], axis=1)


def identity(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, x], axis=1)


def run_engine(client, tmp_path, img, settings, predict, output="ab", fmt="tiff"):
    path = write_input(tmp_path, img, fmt)
    info = probe(path)
    store = WorkStore.create(tmp_path / "work.zarr", settings.plan(*img.shape), info.dtype,
                             output=output)
    graph = submit_image(client, info, store, settings, predict)
    client.gather(graph.reduces)
    return store


def whole(predict, img):
    x = lightness_to_input(gray_to_lightness(img))[None, None]
    return np.moveaxis(predict(x)[0], 0, -1) * 110.0  # (H, W, 2) Lab units


CASES = [  # (h, w, tile, stride, block, blend)
    (37, 53, 16, 8, 32, "cosine"),
    (37, 53, 16, 8, 32, "uniform"),
    (100, 131, 32, 24, 64, "uniform"),
    (100, 131, 32, 24, 64, "cosine"),
    (10, 7, 16, 4, 16, "cosine"),  # smaller than a tile: reflect-padded
    (300, 257, 64, 64, 128, "cosine"),  # no overlap
    (300, 257, 64, 20, 64, "cosine"),  # block not a multiple of the stride
    (129, 300, 32, 5, 96, "uniform"),  # dense, the paper-like regime
    (65, 200, 64, 48, 64, "cosine"),  # one-row-of-tiles image
    (1, 90, 16, 8, 32, "cosine"),  # a single row of pixels
    # footprints wider than the partial sums' chunks (128): only the bands are stored
    (400, 530, 32, 24, 192, "cosine"),
    (300, 700, 64, 40, 256, "uniform"),
    (520, 300, 32, 32, 160, "cosine"),  # stride = tile, blocks not a multiple of it
]


@pytest.mark.parametrize("h,w,tile,stride,block,blend", CASES)
@pytest.mark.parametrize("stand_in", [affine, identity])
def test_tiled_equals_whole_image_two_workers(client2, tmp_path, h, w, tile, stride, block,
                                              blend, stand_in):
    img = smooth_image(h, w, seed=h + w)
    settings = Settings(tile=tile, stride=stride, block=block, blend=blend, batch_size=3)
    store = run_engine(client2, tmp_path, img, settings, stand_in)
    got = store.array("ab")[:] / 110.0
    np.testing.assert_allclose(got, whole(stand_in, img) / 110.0, atol=1e-5, rtol=0)


@pytest.mark.parametrize("stride,stored", [(32, 0), (24, None)])
def test_only_the_shared_bands_go_through_partial_sums(client1, tmp_path, stride, stored):
    """Map tasks finish their chunk's interior; the partial sums hold only the bands a
    neighbour also reaches (none when stride = tile divides the block), in whole chunks."""
    img = smooth_image(300, 512, seed=3)  # the last tiles are flush with the edges
    settings = Settings(tile=32, stride=stride, block=256, blend="cosine")
    store = run_engine(client1, tmp_path, img, settings, affine)
    np.testing.assert_allclose(store.array("ab")[:], whole(affine, img), atol=1e-3)
    rows, cols = store.array("partial_rows"), store.array("partial_cols")
    written = rows.nchunks_initialized + cols.nchunks_initialized
    if stored is None:  # bands of 8..32 px around 256-px blocks: a fraction of the chunks
        assert 0 < written < (rows.nchunks + cols.nchunks) / 4
    else:
        assert written == stored


@pytest.mark.parametrize("h,w,tile,stride,block,blend", CASES[::3])
def test_tiled_equals_whole_image_one_worker_png(client1, tmp_path, h, w, tile, stride, block,
                                                 blend):
    img = smooth_image(h, w, seed=1)
    settings = Settings(tile=tile, stride=stride, block=block, blend=blend, batch_size=5)
    store = run_engine(client1, tmp_path, img, settings, affine, fmt="png")
    np.testing.assert_allclose(store.array("ab")[:] / 110, whole(affine, img) / 110, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_rgb_output_is_original_lightness_plus_blended_chroma(client2, tmp_path, dtype):
    img = smooth_image(150, 170, seed=3, dtype=dtype)
    settings = Settings(tile=32, stride=24, block=64, blend="cosine")
    store = run_engine(client2, tmp_path, img, settings, affine, output="rgb")
    rgb = store.array("rgb")[:]
    expected = compose_rgb(img, whole(affine, img), dtype)
    assert rgb.dtype == dtype
    assert np.abs(rgb.astype(np.int64) - expected.astype(np.int64)).max() <= 1


def test_block_size_does_not_change_real_generator_output(client2, tmp_path, tiny_checkpoint):
    """With a real (convolutional) generator, tiling differs from whole-image inference,
    but the block decomposition must not: each tile is computed once, the same way."""
    img = smooth_image(200, 230, seed=5)
    predict = make_predictor(tiny_checkpoint, threads=1)
    outs = []
    for block in (64, 128, 256):
        settings = Settings(tile=64, stride=48, block=block, blend="cosine", batch_size=4)
        store = run_engine(client2, tmp_path / str(block), img, settings, predict)
        outs.append(store.array("ab")[:])
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-4)
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-4)


def test_no_overlap_real_generator_matches_per_tile_inference(client1, tmp_path,
                                                              tiny_checkpoint):
    img = smooth_image(128, 192, seed=6)
    predict = make_predictor(tiny_checkpoint, threads=1)
    settings = Settings(tile=64, stride=64, block=128, blend="uniform", batch_size=4)
    store = run_engine(client1, tmp_path, img, settings, predict)
    x = lightness_to_input(gray_to_lightness(img))
    tiles = np.stack([x[y : y + 64, c : c + 64] for y in (0, 64) for c in (0, 64, 128)])
    pred = predict(tiles[:, None]) * 110
    got = store.array("ab")[:]
    for k, (y, c) in enumerate([(y, c) for y in (0, 64) for c in (0, 64, 128)]):
        np.testing.assert_allclose(got[y : y + 64, c : c + 64], np.moveaxis(pred[k], 0, -1),
                                   atol=1e-3)


def test_model_loaded_once_per_worker_and_not_pickled(client2, tmp_path, tiny_checkpoint):
    predict = make_predictor(tiny_checkpoint, threads=1)
    assert len(pickle.dumps(predict)) < 1024  # a handle, not the weights
    img = smooth_image(256, 256, seed=7)
    settings = Settings(tile=64, stride=32, block=64, blend="cosine")
    run_engine(client2, tmp_path, img, settings, predict)

    def cached_models():
        from tilecolor.model import predict as p

        return sorted(k[0][:12] for k in p._CACHE)

    per_worker = client2.run(cached_models)
    assert per_worker, "no workers"
    for keys in per_worker.values():  # 16 blocks ran; each process loaded the model once
        assert keys.count(predict.digest[:12]) <= 1


def test_finished_blocks_are_not_recomputed(client1, tmp_path):
    img = smooth_image(100, 100, seed=8)
    settings = Settings(tile=32, stride=16, block=32, blend="cosine")
    store = run_engine(client1, tmp_path, img, settings, affine)
    assert store.blocks_done().all()
    ab = store.array("ab")[:]

    def broken(x):
        raise AssertionError("a finished block was recomputed")

    # forget the blended borders (as if killed after MAP, before REDUCE): they are rebuilt
    # from the stored partial sums without running the generator again; the interiors
    # were finished by the map tasks
    plan = settings.plan(100, 100)
    kept = np.zeros((100, 100), bool)
    for r, c in np.ndindex(plan.grid):
        kept[interior(plan.rows, r), interior(plan.cols, c)] = True
    assert 0 < kept.sum() < kept.size
    store.array("reduce_done", "r+")[:] = 0
    store.array("ab", "r+")[:] = np.where(kept[..., None], ab, 0)
    info = probe(tmp_path / "in.tif")
    graph = submit_image(client1, info, store, settings, broken)
    assert graph.maps == [] and graph.ingests == [] and len(graph.reduces) == 16
    client1.gather(graph.reduces)
    np.testing.assert_array_equal(store.array("ab")[:], ab)


@pytest.mark.parametrize("h,w,k,tile,stride,block", [(101, 87, 2, 16, 8, 64),
                                                     (130, 61, 3, 16, 12, 96),
                                                     (40, 300, 4, 16, 8, 64)])
def test_render_scale_equals_whole_image_at_reduced_scale(client2, tmp_path, h, w, k, tile,
                                                          stride, block):
    """Chroma predicted on the k-times coarser grid and upsampled: the tiled result equals
    the stand-in applied to the whole downsampled image, then upsampled."""
    from tilecolor.core.resample import downsample_mean, upsample_bilinear

    img = smooth_image(h, w, seed=k)
    settings = Settings(tile=tile, stride=stride, block=block, blend="cosine", batch_size=5,
                        render_scale=1 / k)
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, img)
    store = WorkStore.create(tmp_path / "w.zarr", settings.plan(h, w), "uint8", output="ab",
                             render=settings.render_plan(h, w))
    graph = submit_image(client2, probe(path), store, settings, affine)
    client2.gather(graph.reduces)
    small = downsample_mean(gray_to_lightness(img), k)
    ab_small = np.moveaxis(affine(lightness_to_input(small)[None, None])[0], 0, -1) * 110
    expected = upsample_bilinear(ab_small, (0, 0), k, (0, h), (0, w), small.shape)
    np.testing.assert_allclose(store.array("ab")[:] / 110, expected / 110, atol=1e-5)


def test_render_scale_must_be_one_over_an_integer():
    from tilecolor.core.errors import ConfigError

    with pytest.raises(ConfigError, match="render_scale=0.4"):
        Settings(render_scale=0.4)
    with pytest.raises(ConfigError, match="multiple of 1/render_scale=3"):
        Settings(render_scale=1 / 3, block=2048)


def _variables(client) -> list:
    """The image Variables left on the scheduler, once the (fire-and-forget) deletes have
    arrived."""
    import time

    def names():
        return [v for v in client.run_on_scheduler(
            lambda dask_scheduler: sorted(dask_scheduler.extensions["variables"].variables))
            if v.startswith("tilecolor-")]

    deadline = time.monotonic() + 30
    while names() and time.monotonic() < deadline:
        time.sleep(0.1)
    return names()


def test_streaming_writer_output_equals_composed_store(client2, tmp_path):
    """The writer starts with the image and writes each row of chunks once its blend tasks
    finish (blocks run row by row); the file equals the finished rgb array, and the
    Variables it waited on are dropped afterwards."""
    img = smooth_image(300, 260, seed=11)
    settings = Settings(tile=32, stride=16, block=64, blend="cosine")
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, img, tile=(16, 16))
    info = probe(path)
    store = WorkStore.create(tmp_path / "work.zarr", settings.plan(*img.shape), info.dtype)
    graph = submit_image(client2, info, store, settings, affine, dest=tmp_path / "out.tif",
                         fmt="tiff")
    assert len(graph.variables) == len(graph.reduces) == 5 * 5
    assert not graph.final.done() or graph.final.status == "finished"
    assert graph.final.result(timeout=300) == str(tmp_path / "out.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), store.array("rgb")[:])
    graph.release(client2)
    assert _variables(client2) == []


@pytest.mark.parametrize("h,w,stride,k,dtype", [(1300, 1100, 32, 1, np.uint8),  # bands
                                                 (1100, 1300, 64, 1, np.uint16),  # none
                                                 (1030, 700, 32, 2, np.uint8)])  # compose
def test_tasks_encode_the_tiff_tiles_and_the_file_is_unchanged(client2, tmp_path, h, w,
                                                               stride, k, dtype):
    """With blocks holding whole TIFF tiles, the task that finishes each chunk (blend, or
    compose at a reduced render scale, or the block's own map task where no other block
    reaches the chunk) encodes its tiles of levels 0 and 1, and the streaming writer copies
    them: the file is byte for byte what the writer alone writes from the pixels of the
    same graph run without encoded tiles."""
    from tilecolor.io.tiff import write_tiff

    img = smooth_image(h, w, seed=13, dtype=dtype)
    settings = Settings(tile=64, stride=stride, block=512, blend="cosine", render_scale=1 / k)
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, img, tile=(64, 64))
    info = probe(path)
    plan, render = settings.plan(h, w), settings.render_plan(h, w)
    reference = WorkStore.create(tmp_path / "ref.zarr", plan, info.dtype, render=render)
    wait(submit_image(client2, info, reference, settings, affine).futures, timeout=300)
    store = WorkStore.create(tmp_path / "work.zarr", plan, info.dtype, render=render,
                             tiff_tiles=True)
    graph = submit_image(client2, info, store, settings, affine, dest=tmp_path / "out.tif",
                         fmt="tiff")
    assert graph.final.result(timeout=300) == str(tmp_path / "out.tif")
    graph.release(client2)
    ny, nx = plan.grid
    assert len(list((store.path / "tiles").glob("*.bin"))) == ny * nx  # one per chunk
    # stride = tile: every chunk is its own block's alone, finished in its map task, which
    # reads its region of the input itself
    assert len(graph.reduces) == (0 if stride == 64 else ny * nx * (1 if k == 1 else 2))
    assert len(graph.ingests) == (0 if stride == 64 else ny * nx)
    write_tiff(reference.array("rgb")[:], tmp_path / "ref.tif", name="out.tif")
    assert (tmp_path / "out.tif").read_bytes() == (tmp_path / "ref.tif").read_bytes()
    levels = tifffile.TiffFile(tmp_path / "out.tif").series[0].levels
    assert [lv.shape[:2] for lv in levels][:2] == [(h, w), ((h + 1) // 2, (w + 1) // 2)]


def test_failed_chunk_task_fails_the_streaming_writer(client1, tmp_path):
    """A block whose generator call fails must fail the image (its writer raises the same
    error), not leave the writer waiting forever for rows that never finish."""
    img = smooth_image(200, 200, seed=12)
    settings = Settings(tile=32, stride=16, block=64, blend="cosine")

    def fails_on_bright_tiles(x):
        if x.max() > 0.9:
            raise ValueError("generator exploded on a bright tile")
        return affine(x)

    img[150:, 150:] = 255  # only the last block row/column holds such tiles
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, img)
    info = probe(path)
    store = WorkStore.create(tmp_path / "work.zarr", settings.plan(*img.shape), info.dtype)
    graph = submit_image(client1, info, store, settings, fails_on_bright_tiles,
                         dest=tmp_path / "out.tif", fmt="tiff", retries=0)
    # a hang here is the bug; the timeout only keeps a broken build from blocking CI
    with pytest.raises(ValueError, match="generator exploded"):
        graph.final.result(timeout=300)
    graph.release(client1)
    assert _variables(client1) == []
    assert not (tmp_path / "out.tif").exists()
    assert not list(tmp_path.glob("*.part")) and not list(store.path.glob("*.part"))


def test_store_removal_deletes_every_file(tmp_path):
    # more files than the threaded unlink's threshold, in nested chunk folders
    settings = Settings(tile=64, stride=64, block=64)
    store = WorkStore.create(tmp_path / "w.zarr", settings.plan(640, 640), "uint8")
    rgb = store.array("rgb", "r+")
    rgb[:] = np.full((640, 640, 3), 7, np.uint8)
    assert sum(len(f) for _, _, f in os.walk(store.path)) > 64
    store.remove()
    assert not store.path.exists() and not store.exists()
    store.remove()  # a second removal is a no-op


@pytest.mark.parametrize("h,w", [(100, 700), (700, 90), (130, 150)])
def test_axis_shorter_than_a_tile_through_the_map_task_encoding(client1, tmp_path, h, w):
    """An image with an axis shorter than a tile (reflect-padded, no gathered batches),
    stride = tile and blocks of whole TIFF tiles: its map tasks read the TIFF and encode the
    chunks, and the file equals the one of a non-encoded run (block 128)."""
    img = smooth_image(h, w, seed=21)
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, img, tile=(64, 64))
    info = probe(path)
    outs = []
    for block, tiles in ((1024, True), (128, False)):
        settings = Settings(tile=128, stride=128, block=block, blend="cosine")
        store = WorkStore.create(tmp_path / f"w{block}.zarr", settings.plan(h, w), info.dtype,
                                 tiff_tiles=tiles)
        dest = tmp_path / f"out{block}.tif"
        graph = submit_image(client1, info, store, settings, affine, dest=dest, fmt="tiff")
        assert graph.final.result(timeout=300) == str(dest)
        graph.release(client1)
        assert not tiles or (len(graph.ingests), len(graph.reduces)) == (0, 0)
        outs.append(tifffile.imread(dest))
    np.testing.assert_array_equal(outs[0], outs[1])
