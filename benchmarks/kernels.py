"""CPU per 2048x2048 block of the per-pixel steps around the generator, numpy against the
compiled kernels (tilecolor.core.kernels). Prints a Markdown table.

    python benchmarks/kernels.py [--repeat 7]

The block is the benchmark's validation photo (benchmark.gray_from_photo) as gray, its
chroma a smooth field in the generator's range; each cell is the median thread CPU time of
``--repeat`` calls, the two versions alternated call by call (the machine's speed drifts).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from benchmark import VAL, gray_from_photo

SIDE, TILE, BATCH = 2048, 256, 8


def cpu_ms(fn) -> float:
    t = time.thread_time()
    fn()
    return 1000 * (time.thread_time() - t)


def main() -> None:
    from tilecolor.core import kernels
    from tilecolor.core.color import (
        AB_SCALE,
        _compose_numpy,
        compose_planes,
        gray_to_input,
        input_table,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    if not kernels.AVAILABLE:
        raise SystemExit("numba is not installed: nothing to compare")
    gray = gray_from_photo(VAL[0], SIDE, SIDE)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) / SIDE
    sums = np.stack([0.3 * np.sin(6 * yy + 2 * xx), 0.3 * np.cos(4 * xx - 3 * yy)])
    sums = sums.astype(np.float32)  # the blended sums, ab / AB_SCALE, weights 1
    ones = np.ones(SIDE, np.float32)
    origins = [(y, x) for y in range(0, SIDE, TILE) for x in range(0, SIDE, TILE)]
    table = input_table(gray.dtype)

    def compose_numpy():
        _compose_numpy(gray, np.moveaxis(sums * AB_SCALE, 0, -1), np.uint8)

    def compose_kernel():
        compose_planes(gray, sums[0], sums[1], np.uint8, ones * AB_SCALE, ones)

    def input_numpy():
        net_in = gray_to_input(gray)
        for k in range(0, len(origins), BATCH):
            np.stack([net_in[y : y + TILE, x : x + TILE] for y, x in origins[k : k + BATCH]])

    def input_kernel():
        for k in range(0, len(origins), BATCH):
            part = origins[k : k + BATCH]
            out = np.empty((len(part), 1, TILE, TILE), np.float32)
            kernels.gather(gray, table, np.array([y for y, _ in part]),
                           np.array([x for _, x in part]), out)

    rows = [("compose RGB (L* + blended chroma -> sRGB, uint8)", compose_numpy, compose_kernel),
            (f"network input, {len(origins)} tiles in batches of {BATCH}", input_numpy,
             input_kernel)]
    for _, a, b in rows:  # warm up: tables, compiled code, page faults
        a(), b()
    print(f"\nCPU ms per {SIDE}x{SIDE} block, median of {args.repeat} alternated calls\n")
    print("| step | numpy | compiled (numba) | ratio |\n|---|---:|---:|---:|")
    for name, a, b in rows:
        ta, tb = [], []
        for _ in range(args.repeat):
            ta.append(cpu_ms(a))
            tb.append(cpu_ms(b))
        ma, mb = statistics.median(ta), statistics.median(tb)
        print(f"| {name} | {ma:.1f} | {mb:.1f} | {ma / mb:.1f}x |")


if __name__ == "__main__":
    main()
