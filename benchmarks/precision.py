"""`tilecolor run` at its defaults against `--precision fp32`, alternated in one run.

    python benchmarks/precision.py [--width 4000 --height 3000 --rounds 3 --checkpoint DIR]

One gray TIFF (a validation photo resized, 12 MP by default), colorized at the default
settings (stride 128, `--precision auto`: bf16 on a CPU with native bf16) and with
`--precision fp32`, in alternating rounds so that the shared machine's drift hits both.
Prints a Markdown table: each round's wall time of the whole command, the per-round ratio,
and the RGB difference between the two outputs (mean and maximum, in 8-bit levels).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from benchmark import VAL, gray_from_photo, machine, run_cli

from tilecolor.model.checkpoint import default_checkpoint
from tilecolor.model.predict import resolve_precision


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=4000)
    p.add_argument("--height", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--checkpoint", type=Path, default=default_checkpoint())
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tc-precision-"))
    try:
        (work / "in").mkdir()
        tifffile.imwrite(work / "in" / "img.tif",
                         gray_from_photo(VAL[0], args.width, args.height), tile=(256, 256),
                         compression="zlib")
        auto = resolve_precision("cpu")
        times: dict[str, list[float]] = {"default": [], "fp32": []}
        for k in range(args.rounds):
            for name in (("default", "fp32") if k % 2 == 0 else ("fp32", "default")):
                out = work / name
                shutil.rmtree(out, ignore_errors=True)
                extra = ["--precision", "fp32"] if name == "fp32" else []
                wall, _, _ = run_cli(["--input", str(work / "in"), "--output", str(out),
                                      "--checkpoint", str(args.checkpoint), *extra])
                times[name].append(wall)
        a = tifffile.imread(work / "default" / "img.tif").astype(np.int16)
        b = tifffile.imread(work / "fp32" / "img.tif").astype(np.int16)
        diff = np.abs(a - b)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mp = args.width * args.height / 1e6
    print(f"`tilecolor run` on a {args.width}x{args.height} ({mp:.1f} MP) gray TIFF, stride "
          f"128, {machine()}; default precision here: {auto}\n")
    print("| round | default (s) | fp32 (s) | fp32 / default |")
    print("|---|---:|---:|---:|")
    ratios = []
    for k, (d, f) in enumerate(zip(times["default"], times["fp32"], strict=True), 1):
        ratios.append(f / d)
        print(f"| {k} | {d:.1f} | {f:.1f} | {f / d:.2f}x |")
    print(f"| median | | | **{statistics.median(ratios):.2f}x** |")
    print(f"\nRGB difference, default vs fp32: mean {diff.mean():.3f} levels, "
          f"max {int(diff.max())} levels")


if __name__ == "__main__":
    main()
