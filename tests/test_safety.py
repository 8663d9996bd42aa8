"""Output safety and the disk estimate (tilecolor.batch.safety), and their CLI behavior."""

from __future__ import annotations

import os
from collections import namedtuple
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image

from tilecolor.batch.safety import (
    DiskEstimate,
    check_dest,
    check_disk,
    check_output_dir,
    estimate_batch,
    estimate_image,
    file_ids,
    input_folders,
    work_name,
)
from tilecolor.cli import main
from tilecolor.core.errors import ConfigError, OutputError

FAST = ["--tile", "64", "--stride", "32", "--block", "128", "--dashboard-address",
        "127.0.0.1:0", "--threads", "1"]


def test_estimate_image_by_hand():
    # one block, footprint = image: L 1 + partial 8 + rgb 3 bytes/px; output 3 bytes/px
    assert estimate_image(100, 200, 1, 64, 32, 256, "tiff") == \
        DiskEstimate(work=12 * 20000, output=3 * 20000)
    # blocks of whole TIFF tiles: levels 0 and 1 encoded by the tasks (at most 3 * 5/4) and
    # level 1's pixels (3/4) too
    assert estimate_image(100, 200, 1, 64, 32, 512, "tiff") == \
        DiskEstimate(work=int(16.5 * 20000), output=3 * 20000)
    # 16-bit: L 2 + partial 8 + rgb 6; JPEG output 1 byte/px
    assert estimate_image(100, 200, 2, 64, 32, 256, "jpeg") == \
        DiskEstimate(work=16 * 20000, output=20000)


def test_estimate_partial_sums_grow_with_the_overlap():
    # 2 x 2 blocks of 128, margin tile - stride = 32: footprint capacity 160 per axis
    e = estimate_image(256, 256, 1, 64, 32, 128, "png")
    assert e.work == 256 * 256 * (1 + 3) + 8 * (2 * 160) ** 2
    # the formula's bound: 8 bytes/px * (1 + tile/block)^2
    assert e.work - 4 * 256 * 256 <= 8 * 256 * 256 * (1 + 64 / 128) ** 2


def test_estimate_batch_counts_outputs_and_largest_stores():
    images = [DiskEstimate(work=w, output=1) for w in (5, 50, 20, 10)]
    assert estimate_batch(images, inflight=2) == DiskEstimate(work=70, output=4)
    assert estimate_batch([], inflight=4) == DiskEstimate(0, 0)


Usage = namedtuple("Usage", "total used free")


def test_check_disk(tmp_path, monkeypatch):
    monkeypatch.setattr("tilecolor.batch.safety.shutil.disk_usage", lambda p: Usage(100, 90, 10))
    assert check_disk(tmp_path / "not" / "yet", DiskEstimate(4, 6)) == 10
    with pytest.raises(OutputError, match="needs about 11 B .* but 10 B is free"):
        check_disk(tmp_path, DiskEstimate(5, 6))


def test_output_dir_rules(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    folders = input_folders([src / "a.png"], [src])
    for bad in (src, src / "sub", src / "new" / "deeper"):
        with pytest.raises(ConfigError, match="--allow-output-in-input"):
            check_output_dir(bad, folders)
    check_output_dir(src, folders, allow_inside=True)
    check_output_dir(tmp_path / "in-colorized", folders)
    os.symlink(src, tmp_path / "alias")  # a symlink to the input folder is the same folder
    with pytest.raises(ConfigError):
        check_output_dir(tmp_path / "alias" / "out", folders)


def test_dest_rules(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    src = tmp_path / "a.png"
    src.write_bytes(b"x")
    protected = file_ids([src])
    check_dest(src, out / "a.png", out, protected)
    os.symlink(tmp_path / "elsewhere", out / "link.png")
    with pytest.raises(OutputError, match="is a symlink; refusing to follow it"):
        check_dest(src, out / "link.png", out, protected)
    os.link(src, out / "hard.png")
    with pytest.raises(OutputError, match="is an input file"):
        check_dest(src, out / "hard.png", out, protected)
    with pytest.raises(OutputError, match="escapes"):
        check_dest(src, tmp_path / "a.png", out, protected)


def test_work_name_stays_a_valid_file_name():
    assert work_name(Path("a.png")) == "a.png"
    long = Path("é" * 150 + ".png")  # 304 bytes
    name = work_name(long)
    assert len(os.fsencode(name + ".done.json.tmp")) < 255
    assert name != work_name(Path("é" * 151 + ".png"))


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    Image.fromarray(smooth_image(100, 150)).save(d / "a.png")
    return d


def test_cli_refuses_output_inside_input(photos, tiny_checkpoint):
    r = CliRunner().invoke(main, ["run", "--input", str(photos), "--output",
                                  str(photos / "out"), *FAST])
    assert r.exit_code == 2 and "--allow-output-in-input" in r.output


def test_a_linked_input_from_above_the_output_does_not_stop_the_batch(photos, tmp_path,
                                                                     tiny_checkpoint):
    """A link in the input folder to a photo in a folder that holds the output folder:
    that folder is not an input folder, so every image is colorized."""
    above = tmp_path / "archive"
    above.mkdir()
    Image.fromarray(smooth_image(90, 120, seed=2)).save(above / "linked.png")
    os.symlink(above / "linked.png", photos / "link.png")
    out = above / "colorized"
    r = CliRunner().invoke(main, ["run", "--input", str(photos), "--output", str(out),
                                  "--checkpoint", str(tiny_checkpoint), *FAST])
    assert r.exit_code == 0, r.output
    assert (out / "a.png").is_file() and (out / "link.png").is_file()
    assert (above / "linked.png").is_file() and not (photos / "link.png").samefile(out /
                                                                                  "link.png")


def test_cli_fails_early_when_the_disk_is_too_small(photos, tmp_path, tiny_checkpoint,
                                                    monkeypatch):
    monkeypatch.setattr("tilecolor.batch.safety.shutil.disk_usage",
                        lambda p: Usage(10**6, 10**6, 1000))
    monkeypatch.setattr("tilecolor.cluster.client.connect", None)  # must fail before any cluster
    r = CliRunner().invoke(main, ["run", "--input", str(photos), "--output",
                                  str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint),
                                  *FAST])
    assert r.exit_code == 1, r.output
    assert "not enough disk space" in r.output and "1000 B is free" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "out" / "a.png").exists()
