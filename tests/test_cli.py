"""The command line, through click's CliRunner and as a real subprocess, on real clusters."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from conftest import free_port, smooth_image, wait_for_cluster
from PIL import Image

from tilecolor.cli import main
from tilecolor.core.color import gray_to_lightness, rgb_to_lab

FAST = ["--tile", "64", "--stride", "32", "--block", "128", "--dashboard-address",
        "127.0.0.1:0", "--threads", "1"]


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    Image.fromarray(smooth_image(100, 150, seed=1)).save(d / "a.png")
    tifffile.imwrite(d / "b.tif", smooth_image(130, 90, seed=2, dtype=np.uint16),
                     tile=(32, 32), compression="zlib")
    Image.fromarray(smooth_image(50, 40, seed=3)).save(d / "c.jpg")
    (d / "notes.txt").write_text("not an image, ignored")
    return d


def run_cli(args):
    return CliRunner().invoke(main, ["run", *args], catch_exceptions=False)


def test_run_colorizes_every_image_keeping_name_size_format_and_lightness(
        photos, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    r = run_cli(["--input", str(photos), "--output", str(out), "--checkpoint",
                 str(tiny_checkpoint), *FAST])
    assert r.exit_code == 0, r.output
    assert "dashboard: http://127.0.0.1:" in r.output
    assert "3 colorized, 0 up to date, 0 failed" in r.output
    assert sorted(p.name for p in out.iterdir()) == [".tilecolor", "a.png", "b.tif", "c.jpg"]
    a = np.asarray(Image.open(out / "a.png"))
    assert a.shape == (100, 150, 3)
    src = smooth_image(100, 150, seed=1)
    # the output keeps the input's L* (up to 8-bit rounding and gamut clipping)
    lightness = rgb_to_lab(a / 255.0)[..., 0]
    assert np.median(np.abs(lightness - gray_to_lightness(src))) < 0.5
    b = tifffile.imread(out / "b.tif")
    assert b.shape == (130, 90, 3) and b.dtype == np.uint16
    with Image.open(out / "c.jpg") as c:
        assert c.format == "JPEG" and c.size == (40, 50)
    # a second run finds everything done
    r2 = run_cli(["--input", str(photos), "--output", str(out), "--checkpoint",
                  str(tiny_checkpoint), *FAST])
    assert r2.exit_code == 0 and "0 colorized, 3 up to date" in r2.output


def test_format_override_and_single_file(photos, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    r = run_cli(["--input", str(photos / "a.png"), "--output", str(out), "--format", "tiff",
                 "--checkpoint", str(tiny_checkpoint), *FAST])
    assert r.exit_code == 0, r.output
    t = tifffile.imread(out / "a.tif")
    assert t.shape == (100, 150, 3) and t.dtype == np.uint8


def test_some_inputs_fail_exit_1_others_complete(photos, tmp_path, tiny_checkpoint):
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (photos / "text.tif").write_text("hello")
    out = tmp_path / "out"
    r = run_cli(["--input", str(photos), "--output", str(out), "--checkpoint",
                 str(tiny_checkpoint), *FAST])
    assert r.exit_code == 1
    assert "3 colorized, 0 up to date, 2 failed" in r.output
    assert "broken.png" in r.output and "text.tif: not a TIFF, PNG or JPEG" in r.output
    assert (out / "a.png").exists() and not (out / "broken.png").exists()
    assert "Traceback" not in r.output


@pytest.mark.parametrize("args,message", [
    (["--stride", "300"], "stride must satisfy"),
    (["--stride", "0"], "stride must satisfy"),
    (["--block", "32"], "block must be at least"),
    (["--blend", "median"], "Invalid value for '--blend'"),
    (["--workers", "0"], "must be >= 1"),
    (["--precision", "fp16"], "precision fp16 needs device cuda"),
    (["--precision", "fp8"], "Invalid value for '--precision'"),
])
def test_usage_errors_exit_2(photos, tmp_path, args, message):
    r = run_cli(["--input", str(photos), "--output", str(tmp_path / "o"), *args])
    assert r.exit_code == 2
    assert message in r.output


def test_empty_folder_exits_2(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_cli(["--input", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "no TIFF, PNG or JPEG images" in r.output


def test_bad_checkpoint_exits_1_with_one_line(photos, tmp_path):
    (tmp_path / "ck").mkdir()
    r = run_cli(["--input", str(photos), "--checkpoint", str(tmp_path / "ck"), *FAST])
    assert r.exit_code == 1
    assert "missing checkpoint.json" in r.output and "Traceback" not in r.output


def _processes_marked(mark: str) -> list:
    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("TILECOLOR_TEST_MARK") == mark:
                found.append(p)
        except (psutil.Error, OSError):
            pass
    return found


def test_subprocess_exit_codes(photos, tmp_path, tiny_checkpoint):
    base = [sys.executable, "-m", "tilecolor", "run", "--checkpoint", str(tiny_checkpoint),
            *FAST, "-q"]
    mark = os.urandom(8).hex()
    ok = subprocess.run([*base, "--input", str(photos), "--output", str(tmp_path / "o1")],
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "TILECOLOR_TEST_MARK": mark})
    assert ok.returncode == 0, ok.stderr
    # the quick exit leaves no process of the run behind (forkserver, workers)
    assert _processes_marked(mark) == []
    (photos / "zero.jpg").write_bytes(b"")
    bad = subprocess.run([*base, "--input", str(photos), "--output", str(tmp_path / "o2")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert "zero.jpg: empty file (0 bytes)" in bad.stderr
    assert "Traceback" not in bad.stderr, bad.stderr
    usage = subprocess.run([*base, "--input", str(photos), "--stride", "-3"],
                           capture_output=True, text=True, timeout=300)
    assert usage.returncode == 2 and "stride" in usage.stderr



@pytest.fixture
def dask_cluster(tmp_path):
    """A real `dask scheduler` and `dask worker`, as separate processes."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    sched = subprocess.Popen([os.path.join(bindir, "dask"), "scheduler", "--host", "127.0.0.1",
                              "--port", str(port), "--dashboard-address", "127.0.0.1:0"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([os.path.join(bindir, "dask"), "worker", address, "--nworkers",
                               "1", "--nthreads", "1", "--host", "127.0.0.1",
                               "--local-directory", str(tmp_path / "w")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_cluster(address)
        yield address
    finally:
        for p in (worker, sched):
            p.terminate()
        for p in (worker, sched):
            p.wait(timeout=30)


def test_existing_scheduler(photos, tmp_path, tiny_checkpoint, dask_cluster):
    out = tmp_path / "out"
    r = run_cli(["--input", str(photos), "--output", str(out), "--checkpoint",
                 str(tiny_checkpoint), "--scheduler", dask_cluster, *FAST])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        ["a.png", "b.tif", "c.jpg"]
    # same result as the embedded LocalCluster
    r2 = run_cli(["--input", str(photos), "--output", str(tmp_path / "local"), "--checkpoint",
                  str(tiny_checkpoint), *FAST])
    assert r2.exit_code == 0
    np.testing.assert_array_equal(tifffile.imread(out / "b.tif"),
                                  tifffile.imread(tmp_path / "local" / "b.tif"))


def test_render_scale_end_to_end(photos, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    r = run_cli(["--input", str(photos / "b.tif"), "--output", str(out), "--checkpoint",
                 str(tiny_checkpoint), *FAST, "--render-scale", "0.5"])
    assert r.exit_code == 0, r.output
    b = tifffile.imread(out / "b.tif")
    assert b.shape == (130, 90, 3) and b.dtype == np.uint16
    bad = run_cli(["--input", str(photos), "--render-scale", "0.3", *FAST])
    assert bad.exit_code == 2 and "render scale must be 1/k" in bad.output


def test_tile_must_suit_the_checkpoint(photos, tmp_path, tiny_checkpoint):
    r = run_cli(["--input", str(photos), "--output", str(tmp_path / "o"), "--checkpoint",
                 str(tiny_checkpoint), "--tile", "72", "--stride", "36", "--block", "144",
                 "--dashboard-address", "127.0.0.1:0"])
    assert r.exit_code == 2 and "--tile must be a multiple of 16" in r.output


def test_checkpoint_not_matching_its_architecture_exits_1_before_any_image(photos, tmp_path,
                                                                         tiny_checkpoint):
    """The driver's checks are torch-free (metadata, sha256, header); the full check runs
    on a worker, before any image is submitted, and still ends in one line and exit 1."""
    import json
    import shutil

    bad = tmp_path / "bad-arch"
    shutil.copytree(tiny_checkpoint, bad)
    meta = json.loads((bad / "checkpoint.json").read_text())
    meta["architecture"]["width"] *= 2  # the weights (and their sha256) are unchanged
    (bad / "checkpoint.json").write_text(json.dumps(meta))
    r = run_cli(["--input", str(photos), "--checkpoint", str(bad), "--output",
                 str(tmp_path / "out"), *FAST])
    assert r.exit_code == 1, r.output
    assert "architecture wants" in r.output and "error: checkpoint" in r.output
    assert "Traceback" not in r.output
    assert not [p for p in (tmp_path / "out").iterdir() if p.is_file()]  # none colorized
