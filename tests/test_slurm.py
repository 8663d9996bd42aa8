"""The SLURM path for real: a job spec with kind = "slurm" runs through dask-jobqueue on a
one-node SLURM (started by .ci/run with ../shared/recipes/slurm-single-node.sh)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from conftest import smooth_image


def _slurm_idle() -> bool:
    if shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return "idle" in out.stdout or "mixed" in out.stdout


pytestmark = pytest.mark.skipif(
    not _slurm_idle(), reason="no idle SLURM node (.ci/run starts one with "
                              "../shared/recipes/slurm-single-node.sh, as root)")


def test_slurm_job_spec_end_to_end(tmp_path, tiny_checkpoint):
    pytest.importorskip("dask_jobqueue")
    src = tmp_path / "scans"
    src.mkdir()
    img = smooth_image(150, 170, seed=11)
    tifffile.imwrite(src / "a.tif", img)
    spec = tmp_path / "slurm.toml"
    spec.write_text(f"""
input = ["scans/*.tif"]
output = "color"
checkpoint = "{tiny_checkpoint}"
tile = 64
stride = 32
block = 128

[cluster]
kind = "slurm"
jobs = 1
cores = 1
memory = "2GB"
walltime = "00:10:00"
queue = "debug"
threads = 1
dashboard_address = "127.0.0.1:0"
""")
    r = subprocess.run([sys.executable, "-m", "tilecolor", "run", "--config", str(spec)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tifffile.imread(tmp_path / "color" / "a.tif")
    assert out.shape == (150, 170, 3)
    # the same bytes as a local run of the same settings
    local = subprocess.run([sys.executable, "-m", "tilecolor", "run", "--input", str(src),
                            "--output", str(tmp_path / "local"), "--checkpoint",
                            str(tiny_checkpoint), "--tile", "64", "--stride", "32", "--block",
                            "128", "--threads", "1", "--dashboard-address", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr
    np.testing.assert_array_equal(out, tifffile.imread(tmp_path / "local" / "a.tif"))
