"""The global context pass: a context copy of L* built block by block during ingest, the
generator run unconditionally over it, its chroma every full-resolution tile's hint.

Oracle: with a pointwise 4-plane stand-in the tiled run equals, to float rounding,
  context = stand-in(L of the image area-downscaled by k, hint 0, mask 0)
  result  = stand-in(L, context upsampled bilinearly by k, mask 1)
computed on whole arrays, for any image, tile, stride, block (k above the block, blocks
that are not multiples of k), PNG and TIFF ingest, and render scale.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from conftest import smooth_image, write_input
from PIL import Image
from test_hints import affine4, whole_planes

from tilecolor.batch.plan import context_copy
from tilecolor.core.color import gray_to_lightness
from tilecolor.core.planes import HINTED
from tilecolor.core.resample import downsample_mean, upsample_bilinear
from tilecolor.engine.graph import submit_image
from tilecolor.engine.hints import CONTEXT_AB, ContextPass, context_factor
from tilecolor.engine.settings import Settings
from tilecolor.engine.store import WorkStore
from tilecolor.io.read import probe


@pytest.mark.parametrize("h,w,size,k", [(1, 1, 256, 1), (256, 100, 256, 1), (257, 3, 256, 2),
                                        (1000, 999, 256, 4), (5000, 20, 100, 64),
                                        (1025, 1024, 1, 2048)])
def test_context_factor_is_the_smallest_power_of_two_that_fits(h, w, size, k):
    assert context_factor(h, w, size) == k
    assert -(-max(h, w) // k) <= size and (k == 1 or -(-max(h, w) // (k // 2)) > size)


def run_context(client, tmp_path, img, settings, predict, fmt="tiff"):
    path = write_input(tmp_path, img, fmt)
    h, w = img.shape
    ctx = settings.context_pass(h, w)
    store = WorkStore.create(tmp_path / "work.zarr", settings.plan(h, w), "uint8",
                             output="ab", render=settings.render_plan(h, w),
                             context_copy=context_copy(ctx, settings.block))
    graph = submit_image(client, probe(path), store, settings, predict, hint=ctx)
    client.gather(graph.reduces)
    return store, ctx, graph


def expected_context(img: np.ndarray, k: int) -> np.ndarray:
    """(2, Hc, Wc): the stand-in over the whole context copy, unconditionally."""
    small = downsample_mean(gray_to_lightness(img), k)
    return affine4(whole_planes(small, None, (1.0, 1.0)))[0]


CASES = [  # (h, w, tile, stride, block, context)
    (37, 53, 16, 8, 32, 8),  # k = 8 divides the block
    (100, 131, 32, 24, 64, 16),  # k = 16
    (300, 520, 16, 12, 64, 4),  # k = 256 > block: the copy in two steps (64, then 4)
    (200, 190, 16, 8, 96, 4),  # k = 64, block 96 = 3 * 32: cells of 32, then 2
    (10, 7, 16, 4, 16, 256),  # k = 1: the context copy is the image itself
    (129, 300, 32, 32, 96, 20),  # stride = tile; k = 16
]


@pytest.mark.parametrize("h,w,tile,stride,block,size", CASES)
def test_context_pass_equals_the_whole_image_oracle(client2, tmp_path, h, w, tile, stride,
                                                    block, size):
    img = smooth_image(h, w, seed=h + w)
    settings = Settings(tile=tile, stride=stride, block=block, blend="cosine", batch_size=3,
                        planes=HINTED, context=size)
    store, ctx, _ = run_context(client2, tmp_path, img, settings, affine4)
    k = ctx.factor
    assert k == context_factor(h, w, size) and store.blocks_done("hint").all()
    context = expected_context(img, k)
    np.testing.assert_allclose(store.array(CONTEXT_AB)[:], context, atol=1e-5, rtol=0)
    expected = affine4(whole_planes(gray_to_lightness(img), context, (k, k)))[0]
    np.testing.assert_allclose(store.array("ab")[:] / 110, np.moveaxis(expected, 0, -1),
                               atol=2e-5, rtol=0)


def test_context_pass_png_and_render_scale(client1, tmp_path):
    """A PNG is ingested whole (one task builds the copy); chroma rendered at 1/2 reads
    the context at the render grid's pixels."""
    h, w, r = 90, 130, 2
    img = smooth_image(h, w, seed=11)
    settings = Settings(tile=16, stride=12, block=64, batch_size=4, planes=HINTED,
                        context=20, render_scale=1 / r)
    store, ctx, _ = run_context(client1, tmp_path, img, settings, affine4, fmt="png")
    k = ctx.factor  # 8
    context = expected_context(img, k)
    small = downsample_mean(gray_to_lightness(img), r)
    ab_small = np.moveaxis(affine4(whole_planes(small, context, (k / r, k / r)))[0], 0, -1)
    expected = upsample_bilinear(ab_small, (0, 0), r, (0, h), (0, w), small.shape)
    np.testing.assert_allclose(store.array("ab")[:] / 110, expected, atol=2e-5, rtol=0)


def test_finished_context_pass_is_not_recomputed(client1, tmp_path):
    img = smooth_image(120, 100, seed=5)
    settings = Settings(tile=16, stride=8, block=32, batch_size=4, planes=HINTED, context=16)
    store, ctx, graph = run_context(client1, tmp_path, img, settings, affine4)
    assert any(str(f.key).startswith("('context-") for f in graph.ingests)
    ab = store.array("ab")[:]

    def no_context(x):  # the context pass is the only caller with mask 0
        if (x[:, 3] == 0).any():
            raise AssertionError("the context pass ran again")
        return affine4(x)

    # as if killed after the context pass and before any map task finished
    for stage in ("map", "reduce"):
        store.array(f"{stage}_done", "r+")[:] = 0
    store.array("ab", "r+")[:] = 0
    graph = submit_image(client1, probe(tmp_path / "in.tif"), store, settings, no_context,
                         hint=ctx)
    assert graph.ingests == []  # ingest and context done: nothing but maps and blends
    client1.gather(graph.reduces)
    np.testing.assert_array_equal(store.array("ab")[:], ab)


def test_context_copy_is_written_per_block_as_whole_chunks(tmp_path):
    """Ingest adds each block's cells to its own chunk of Lc (one writer per chunk)."""
    from tilecolor.engine.ingest import ingest_region

    img = smooth_image(300, 200, seed=1)
    tifffile.imwrite(tmp_path / "in.tif", img, tile=(16, 16))
    settings = Settings(tile=16, stride=8, block=64, planes=HINTED, context=4)
    ctx = settings.context_pass(300, 200)
    assert (ctx.factor, ctx.step) == (128, 64)
    plan = settings.plan(300, 200)
    store = WorkStore.create(tmp_path / "w.zarr", plan, "uint8",
                             context_copy=context_copy(ctx, settings.block))
    lc = store.array("Lc")
    assert lc.shape == (5, 4) and lc.chunks == (1, 1)
    info = probe(tmp_path / "in.tif")
    for r, c in np.ndindex(plan.grid):
        ingest_region(info, store, plan, r, c, ctx)
    np.testing.assert_allclose(store.array("Lc")[:],
                               downsample_mean(gray_to_lightness(img), 64), rtol=1e-6)


def test_context_pass_plan():
    ctx = ContextPass.plan(3000, 2000, 256, 2048)
    assert (ctx.factor, ctx.step, ctx.shape) == (16, 16, (188, 125))
    assert ctx.field.scale == (16.0, 16.0) and ctx.field.shape == (188, 125)
    assert Settings(context=0, planes=HINTED).context_pass(100, 100) is None
    assert Settings(context=256).context_pass(100, 100) is None  # L-only generator


# ------------------------------------------------------------- through `tilecolor run`

FAST = ["--tile", "64", "--stride", "32", "--block", "128", "--dashboard-address",
        "127.0.0.1:0", "--threads", "1", "-q"]


def run_cli(args):
    from click.testing import CliRunner

    from tilecolor.cli import main

    return CliRunner().invoke(main, ["run", *args], catch_exceptions=False)


@pytest.fixture
def gray_dir(tmp_path):
    d = tmp_path / "gray"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", smooth_image(300, 260, seed=1), tile=(32, 32))
    Image.fromarray(smooth_image(90, 140, seed=2)).save(d / "b.png")
    return d


def test_context_is_part_of_the_fingerprint(gray_dir, tmp_path, hinted_checkpoint):
    def run(out, *extra):
        r = run_cli(["--input", str(gray_dir), "--output", str(out), "--checkpoint",
                     str(hinted_checkpoint), *FAST, *extra])
        assert r.exit_code == 0, r.output
        return r.output

    run(tmp_path / "c64", "--context", "64")
    run(tmp_path / "c0", "--context", "0")
    a64 = tifffile.imread(tmp_path / "c64" / "a.tif")
    assert not np.array_equal(a64, tifffile.imread(tmp_path / "c0" / "a.tif"))
    assert "0 colorized, 2 up to date" in run(tmp_path / "c64", "--context", "64")
    assert "2 colorized, 0 up to date" in run(tmp_path / "c64", "--context", "32")
    assert not np.array_equal(a64, tifffile.imread(tmp_path / "c64" / "a.tif"))
    run(tmp_path / "c64", "--context", "64")
    np.testing.assert_array_equal(a64, tifffile.imread(tmp_path / "c64" / "a.tif"))


def test_l_only_checkpoint_skips_the_context_pass(gray_dir, tmp_path, tiny_checkpoint):
    """No hint planes: no context pass, the output and its fingerprint do not depend on
    --context."""
    out = tmp_path / "out"
    r = run_cli(["--input", str(gray_dir), "--output", str(out), "--checkpoint",
                 str(tiny_checkpoint), *FAST, "--context", "0"])
    assert r.exit_code == 0, r.output
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    r = run_cli(["--input", str(gray_dir), "--output", str(out), "--checkpoint",
                 str(tiny_checkpoint), *FAST, "--context", "32"])
    assert "0 colorized, 2 up to date" in r.output
    r = run_cli(["--input", str(gray_dir), "--output", str(tmp_path / "again"),
                 "--checkpoint", str(tiny_checkpoint), *FAST, "--context", "32"])
    assert {p.name: p.read_bytes() for p in (tmp_path / "again").iterdir()
            if p.is_file()} == first


def test_context_in_the_job_spec(gray_dir, tmp_path, hinted_checkpoint):
    from tilecolor.config import load_spec

    spec = tmp_path / "job.toml"
    spec.write_text(f'input = "{gray_dir}"\noutput = "out"\ncontext = 48\n')
    assert load_spec(spec)["context"] == 48
    spec.write_text(f'input = "{gray_dir}"\ncontext = -1\n')
    r = run_cli(["--config", str(spec)])
    assert r.exit_code == 2 and "context" in r.output
    r = run_cli(["--input", str(gray_dir), "--context", "-3"])
    assert r.exit_code == 2 and "--context" in r.output
    r = run_cli(["--input", str(gray_dir), "--context", "5000"])
    assert r.exit_code == 2 and "context must be 0 (off) to 4096" in r.output


def test_kill_9_resume_never_mixes_contexts(tmp_path, hinted_checkpoint):
    """Killed mid-run, a rerun with the same context resumes (the context pass and the
    finished blocks are kept) and gives the uninterrupted output byte for byte; a rerun
    with another context starts over and gives that context's output."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import zarr

    src = tmp_path / "in"
    src.mkdir()
    h, w, block = 768, 896, 64
    tifffile.imwrite(src / "big.tif", smooth_image(h, w, seed=4), tile=(64, 64))

    def cmd(out, context):
        return [sys.executable, "-m", "tilecolor", "run", "--input", str(src), "--output",
                str(out), "--checkpoint", str(hinted_checkpoint), "--tile", "64", "--stride",
                "32", "--block", str(block), "--threads", "1", "--dashboard-address",
                "127.0.0.1:0", "-q", "--context", str(context), "--report", str(out / "r")]

    for context in (64, 32):
        ref = subprocess.run(cmd(tmp_path / f"ref{context}", context), capture_output=True,
                             text=True, timeout=600)
        assert ref.returncode == 0, ref.stderr
    total = -(-h // block) * -(-w // block)

    def killed_run(out):
        proc = subprocess.Popen(cmd(out, 64), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done_file = out / ".tilecolor" / "big.tif.zarr" / "map_done"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if (zarr.open_array(str(done_file), mode="r")[:] > 0).sum() >= total * 0.4:
                    break
            except Exception:  # the store is not created yet
                pass
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)
        return int((zarr.open_array(str(done_file), mode="r")[:] > 0).sum())

    def rerun(out, context):
        r = subprocess.run(cmd(out, context), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        report = max((out / "r").glob("run-*.json"))
        return json.loads(report.read_text())["images"][0]["blocks_computed"]

    done = killed_run(tmp_path / "same")
    assert rerun(tmp_path / "same", 64) == total - done
    assert ((tmp_path / "same" / "big.tif").read_bytes()
            == (tmp_path / "ref64" / "big.tif").read_bytes())
    killed_run(tmp_path / "other")
    assert rerun(tmp_path / "other", 32) == total
    assert ((tmp_path / "other" / "big.tif").read_bytes()
            == (tmp_path / "ref32" / "big.tif").read_bytes())
    assert ((tmp_path / "ref32" / "big.tif").read_bytes()
            != (tmp_path / "ref64" / "big.tif").read_bytes())


def test_chunks_finished_by_their_map_task_get_the_context_too(tmp_path, hinted_checkpoint):
    """stride = tile and TIFF tiles encoded by the map tasks (no ingest task without a
    context pass): with one, every block is ingested into the copy first, and the TIFF
    holds the same pixels as a PNG of the same run."""
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "a.tif", smooth_image(1100, 700, seed=3), tile=(64, 64))
    outs = {}
    for fmt in ("tiff", "png"):
        r = run_cli(["--input", str(src), "--output", str(tmp_path / fmt), "--checkpoint",
                     str(hinted_checkpoint), "--tile", "64", "--stride", "64", "--block",
                     "512", "--dashboard-address", "127.0.0.1:0", "--threads", "1", "-q",
                     "--context", "100", "--format", fmt])
        assert r.exit_code == 0, r.output
        path = next((tmp_path / fmt).glob("a.*"))
        outs[fmt] = (tifffile.imread(path) if fmt == "tiff"
                     else np.asarray(Image.open(path)))
    np.testing.assert_array_equal(outs["tiff"], outs["png"])
