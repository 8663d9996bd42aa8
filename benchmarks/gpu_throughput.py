"""Generator throughput on CUDA through tilecolor's own predict path (pinned host memory,
channels_last, autocast), across batch sizes, bf16/fp16 against fp32. Prints a Markdown table.

    python benchmarks/gpu_throughput.py --checkpoint models/default --out gpu_throughput.md
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from tilecolor.model.checkpoint import save_generator
from tilecolor.model.nets import GeneratorSpec, UNetGenerator
from tilecolor.model.predict import make_predictor


def tiles_per_second(predict, batch: int, seconds: float = 3.0) -> float:
    """256^2 random tiles through ``predict`` for ``seconds`` after 3 warm-up calls (also
    used by gpu_pipeline.py, whose dry run is on the CPU)."""
    x = (np.random.default_rng(0).random((batch, 1, 256, 256), dtype=np.float32) * 2 - 1)
    for _ in range(3):
        predict(x)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        predict(x)  # returns host numpy: includes H2D and D2H like the engine's tasks
        n += batch
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batches", default="8,32,128")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    paper = save_generator(f"{tmp}/paper", UNetGenerator(GeneratorSpec()).eval(), tile=256,
                           stride=128)
    rows = ["| model | precision | batch | tiles/s | MP/s (256 px tiles) | vs fp32 |",
            "|---|---|---:|---:|---:|---:|"]
    for name, ckpt in (("default", args.checkpoint), ("paper 64/8/512", paper)):
        base: dict[int, float] = {}
        for precision in ("fp32", "bf16", "fp16"):
            predict = make_predictor(ckpt, device="cuda", precision=precision)
            for batch in map(int, args.batches.split(",")):
                tps = tiles_per_second(predict, batch)
                base.setdefault(batch, tps) if precision == "fp32" else None
                rows.append(f"| {name} | {precision} | {batch} | {tps:.0f} | "
                            f"{tps * 65536 / 1e6:.1f} | {tps / base[batch]:.2f}x |")
                print(rows[-1], flush=True)
    table = "\n".join([f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}",
                       "", *rows, ""])
    open(args.out, "w").write(table)
    print(table)


if __name__ == "__main__":
    main()
