"""How much a resume saves: one uninterrupted run, then the same run killed (SIGKILL to the
whole process tree) at about half of its blocks and rerun; and a scheduled rerun over
finished work. Prints a Markdown table.

    python benchmarks/resume.py --checkpoint models/default [--side 3072]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import zarr

sys.path.insert(0, str(Path(__file__).parent))
from benchmark import VAL, gray_from_photo  # noqa: E402


def cmd(src: Path, out: Path, ckpt: Path, block: int) -> list[str]:
    return [sys.executable, "-m", "tilecolor", "run", "--input", str(src), "--output",
            str(out), "--checkpoint", str(ckpt), "--block", str(block), "-q",
            "--dashboard-address", "127.0.0.1:0"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, default=Path("models/default"))
    ap.add_argument("--side", type=int, default=3072)
    ap.add_argument("--block", type=int, default=512)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tc-resume-"))
    (work / "in").mkdir()
    tifffile.imwrite(work / "in" / "img.tif", gray_from_photo(VAL[0], args.side, args.side),
                     tile=(256, 256), compression="zlib")
    c = lambda out: cmd(work / "in", work / out, args.checkpoint, args.block)  # noqa: E731

    t0 = time.perf_counter()
    subprocess.run(c("full"), check=True)
    full = time.perf_counter() - t0

    t0 = time.perf_counter()
    proc = subprocess.Popen(c("killed"), start_new_session=True)
    done_array = work / "killed" / ".tilecolor" / "img.tif.zarr" / "map_done"
    fraction = 0.0
    while proc.poll() is None:
        try:
            a = zarr.open_array(str(done_array), mode="r")[:]
            fraction = float((a > 0).mean())
        except Exception:
            fraction = 0.0
        if fraction >= 0.5:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before_kill = time.perf_counter() - t0
    fraction = float((zarr.open_array(str(done_array), mode="r")[:] > 0).mean())
    t0 = time.perf_counter()
    subprocess.run(c("killed"), check=True)
    resumed = time.perf_counter() - t0
    same = (work / "killed" / "img.tif").read_bytes() == (work / "full" / "img.tif").read_bytes()

    t0 = time.perf_counter()
    subprocess.run(c("full"), check=True)
    rerun = time.perf_counter() - t0

    print(f"\n### Resume: {args.side}x{args.side}, block {args.block}\n")
    print("| run | seconds |\n|---|---:|")
    print(f"| uninterrupted | {full:.1f} |")
    print(f"| killed (SIGKILL, whole tree) with {fraction:.0%} of blocks done | "
          f"{before_kill:.1f} |")
    print(f"| rerun after the kill (resumes) | {resumed:.1f} |")
    print(f"| scheduled rerun over finished work | {rerun:.1f} |")
    print(f"\nResume saved {full - resumed:.1f} s of {full:.1f} s "
          f"({(full - resumed) / full:.0%}); output byte-identical to the uninterrupted run: "
          f"{same}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
