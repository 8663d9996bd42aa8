"""The CUDA inference path against the CPU one (skipped without a CUDA device; run on a
lent GPU by benchmarks/gpu_lease.sh)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from click.testing import CliRunner
from conftest import smooth_image

from tilecolor.cli import main
from tilecolor.model.predict import make_predictor

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("precision,tol", [("fp32", 5e-3), ("bf16", 0.05), ("fp16", 0.02)])
def test_predictor_on_cuda_matches_cpu(tiny_checkpoint, precision, tol):
    """Same tiles, same weights: CUDA (TF32 convolutions in fp32, autocast otherwise) stays
    within ``tol`` of the CPU's float32 in network units (ab / 110)."""
    x = np.random.default_rng(0).random((6, 1, 64, 64), dtype=np.float32) * 2 - 1
    cpu = make_predictor(tiny_checkpoint, device="cpu")(x)
    gpu = make_predictor(tiny_checkpoint, device="cuda", precision=precision)(x)
    assert gpu.dtype == np.float32 and gpu.shape == cpu.shape == (6, 2, 64, 64)
    assert np.abs(gpu - cpu).max() < tol


def test_run_on_cuda_matches_the_cpu_run(tmp_path, tiny_checkpoint):
    """`tilecolor run --device cuda` (its worker offers GPU=1) writes what the CPU run
    writes, to within a level in fp32 and on average within one in the default bf16."""
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "a.tif", smooth_image(300, 200, seed=4), tile=(64, 64))
    args = ["--input", str(src), "--checkpoint", str(tiny_checkpoint), "--tile", "64",
            "--stride", "32", "--block", "128", "--dashboard-address", "127.0.0.1:0"]
    outs, reports = {}, {}
    for name, extra in {"cpu": ["--device", "cpu", "--workers", "1"],
                        "fp32": ["--device", "cuda", "--precision", "fp32"],
                        "auto": ["--device", "cuda"]}.items():
        r = CliRunner().invoke(main, ["run", *args, "--output", str(tmp_path / name), *extra],
                               catch_exceptions=False)
        assert r.exit_code == 0, r.output
        outs[name] = tifffile.imread(tmp_path / name / "a.tif").astype(np.int16)
        report = next((tmp_path / name / ".tilecolor" / "reports").glob("run-*.json"))
        reports[name] = json.loads(report.read_text())["settings"]
    assert reports["auto"]["precision"] == "bf16" and reports["auto"]["device"] == "cuda"
    assert np.abs(outs["fp32"] - outs["cpu"]).max() <= 1
    assert np.abs(outs["auto"] - outs["cpu"]).mean() <= 1.0
