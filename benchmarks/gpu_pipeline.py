"""The CUDA rows of the benchmark, for one prepared device run (benchmarks/gpu_lease.sh):
prints Markdown tables and writes them to OUT/gpu_pipeline.md as each one finishes.

    python benchmarks/gpu_pipeline.py --out OUT [--checkpoint models/default]

1. generator:   tiles/s through tilecolor's predict path (numpy in, pinned host memory,
                channels_last, autocast, numpy out) per precision and batch size;
2. agreement:   `tilecolor run` on CUDA in each precision against the same run on the CPU
                (fp32), in 8-bit levels of the output RGB;
3. workers:     `tilecolor run --device cuda` (stride 256, uniform blend, the default
                precision) on a --sweep-side input for each --sweep-workers: wall time,
                MP/s, against the generator alone (row 1's tiles/s at the same precision
                and batch), mean GPU utilisation and machine CPU use while it ran, peak RSS of
                the whole process tree;
4. gigapixel:   the same on a --side input (1 GP by default) with tilecolor's default workers
                (run before the sweep) and again with the sweep's fastest count.

Inputs are the bundled examples/gray/kite.jpg resized to 4096^2 and repeated side by side,
written as tiled deflate TIFFs like the CPU benchmark's. --budget (seconds) skips the steps
that would start after it, so a lease always brings back the tables done so far. --device
cpu runs the same steps on the CPU (fp32 only): a dry run of this script, not a benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from benchmark import REPO, report_seconds, run_cli  # noqa: E402

KITE = REPO / "examples" / "gray" / "kite.jpg"


def base_image(side: int = 4096) -> np.ndarray:
    """The bundled example photo, Lanczos-resized to cover side^2, center-cropped."""
    from PIL import Image

    with Image.open(KITE) as im:
        im = im.convert("L")
        scale = side / min(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
        x0, y0 = (im.width - side) // 2, (im.height - side) // 2
        return np.asarray(im.crop((x0, y0, x0 + side, y0 + side)))


def write_input(folder: Path, side: int, base: np.ndarray) -> Path:
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    reps = -(-side // base.shape[0])
    gray = np.tile(base, (reps, reps))[:side, :side]
    path = folder / "img.tif"
    tifffile.imwrite(path, gray, tile=(256, 256), compression="zlib", bigtiff=gray.size > 2**31,
                     maxworkers=os.cpu_count())
    return path


class Sampler:
    """GPU utilisation (NVML) and the machine's CPU use, sampled while a run goes on."""

    def __init__(self, period: float = 0.5) -> None:
        import psutil

        self.period, self.gpu, self.cpu = period, [], []
        self._done = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._util = lambda: pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
        except Exception:  # no NVML (a CPU dry run): no GPU column
            self._util = None
        psutil.cpu_percent()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._done.wait(self.period):
            self.cpu.append(psutil.cpu_percent())
            if self._util:
                self.gpu.append(self._util())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def summary(self) -> tuple[str, str]:
        gpu = f"{np.mean(self.gpu):.0f} %" if self.gpu else "-"
        cpu = f"{np.mean(self.cpu):.0f} %" if self.cpu else "-"
        return gpu, cpu


class Report:
    def __init__(self, out: Path) -> None:
        self.path = out / "gpu_pipeline.md"
        self.lines: list[str] = []

    def add(self, *lines: str) -> None:
        for line in lines:
            print(line, flush=True)
            self.lines.append(line)
        self.path.write_text("\n".join(self.lines) + "\n")


def machine(device: str) -> str:
    import platform

    import psutil
    import torch

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "no GPU (dry run)"
    return (f"{gpu}; {os.cpu_count()} CPU cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB; Python "
            f"{platform.python_version()}, torch {torch.__version__}")


def generator_rows(args, rep: Report) -> dict[tuple[str, int], float]:
    """Section 1: tiles/s per (precision, batch)."""
    from gpu_throughput import tiles_per_second

    from tilecolor.model.predict import make_predictor

    rep.add(f"\n### Generator alone: `{args.checkpoint}`, 256 x 256 tiles, "
            f"{args.seconds:g} s per cell\n",
            "| precision | batch | tiles/s | MP/s | vs fp32 |", "|---|---:|---:|---:|---:|")
    tps: dict[tuple[str, int], float] = {}
    for precision in args.precisions:
        predict = make_predictor(args.checkpoint, device=args.device, precision=precision,
                                 threads=None if args.device == "cuda" else os.cpu_count())
        for batch in args.batches:  # host numpy out: the D2H copy is inside, as in the engine
            tps[precision, batch] = tiles_per_second(predict, batch, args.seconds)
            ref = tps.get(("fp32", batch))
            rep.add(f"| {precision} | {batch} | {tps[precision, batch]:.0f} | "
                    f"{tps[precision, batch] * 65536 / 1e6:.1f} | "
                    f"{f'{tps[precision, batch] / ref:.2f}x' if ref else '-'} |")
    return tps


def cli(args, inp: Path, out: Path, *extra: str) -> tuple[float, float, int, tuple[str, str]]:
    """`tilecolor run` on folder ``inp``; (wall s, in-cluster s, peak tree RSS, samples)."""
    with Sampler() as s:
        wall, peak, _ = run_cli(["--input", str(inp), "--output", str(out), "--checkpoint",
                                 str(args.checkpoint), "--stride", "256", "--blend", "uniform",
                                 "--overwrite", *extra], poll=0.5)
    return wall, report_seconds(out / ".tilecolor" / "reports"), peak, s.summary()


def agreement(args, rep: Report, work: Path, base: np.ndarray) -> None:
    """Section 2: each precision on the device against the CPU's fp32, same input."""
    import tifffile

    side = args.agree_side
    inp = work / f"in{side}"
    write_input(inp, side, base)
    ref_dir = work / "agree-cpu"
    wall, _, _, _ = cli(args, inp, ref_dir, "--device", "cpu", "--workers", "4")
    ref = tifffile.imread(ref_dir / "img.tif").astype(np.int16)
    rep.add(f"\n### Agreement with the CPU: {side} x {side}, stride 256, uniform blend; "
            f"difference of the output RGB from the CPU's fp32 run, in 8-bit levels\n",
            "| device | precision | max | 99.9th pct | mean | seconds |",
            "|---|---|---:|---:|---:|---:|",
            f"| cpu (4 workers) | fp32 | 0 | 0 | 0 | {wall:.1f} |")
    for precision in args.precisions:
        out = work / f"agree-{precision}"
        wall, _, _, _ = cli(args, inp, out, "--device", args.device, "--precision", precision)
        d = np.abs(tifffile.imread(out / "img.tif").astype(np.int16) - ref)
        rep.add(f"| {args.device} | {precision} | {d.max()} | "
                f"{np.percentile(d, 99.9):.0f} | {d.mean():.3f} | {wall:.1f} |")


def pipeline_row(args, rep: Report, inp: Path, out: Path, side: int, workers: int | None,
                 ceiling: float | None, kernels: bool = True) -> float:
    """One `tilecolor run` row; ``kernels=False`` runs it with TILECOLOR_KERNELS=0 (the
    numpy paths; the variable reaches the workers through the environment)."""
    from unittest.mock import patch

    extra = ["--device", args.device, *(["--workers", str(workers)] if workers else [])]
    with patch.dict(os.environ, {} if kernels else {"TILECOLOR_KERNELS": "0"}):
        wall, inside, peak, (gpu, cpu) = cli(args, inp, out, *extra)
    report = json.loads(sorted((out / ".tilecolor" / "reports").glob("run-*.json"))[-1]
                        .read_text())
    mp = side * side / 1e6
    vs = f"{mp / wall / ceiling:.3f}x" if ceiling else "-"
    from tilecolor.core import kernels as compiled

    used = "numba" if kernels and compiled.AVAILABLE else "numpy"
    rep.add(f"| {workers or 'default (' + str(report_workers(args)) + ')'} | {used} | "
            f"{report['settings']['precision']} | {report['settings']['batch_size']} | "
            f"{wall:.1f} | {inside:.1f} | {mp / wall:.1f} | {vs} | {gpu} | {cpu} | "
            f"{peak / 2**30:.2f} GiB |")
    shutil.rmtree(out, ignore_errors=True)
    return mp / wall


def report_workers(args) -> int:
    from tilecolor.cluster.workers import default_workers

    return default_workers(args.device)


def header(rep: Report, title: str) -> None:
    rep.add(f"\n### {title}\n",
            "| workers | per-pixel kernels | precision | batch | wall s | in-cluster s | "
            "MP/s (wall) | vs generator alone | GPU busy | CPU busy (machine) | "
            "peak RSS (tree) |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, default=REPO / "models" / "default")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--batches", default="8,32,64,128")
    ap.add_argument("--precisions", default="fp32,bf16,fp16")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--agree-side", type=int, default=2048, help="0: no agreement table")
    ap.add_argument("--sweep-side", type=int, default=16384)
    ap.add_argument("--sweep-workers", default="1,2,4,8")
    ap.add_argument("--side", type=int, default=32768)
    ap.add_argument("--budget", type=float, default=1e9,
                    help="seconds; steps that would start later are skipped")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--kernels-ab", action="store_true",
                    help="each sweep row twice: compiled per-pixel kernels, then numpy "
                         "(TILECOLOR_KERNELS=0)")
    args = ap.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    args.precisions = args.precisions.split(",") if args.device == "cuda" else ["fp32"]
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    rep = Report(args.out)
    rep.add(f"Machine: {machine(args.device)}")
    work = Path(tempfile.mkdtemp(prefix="tc-gpu-", dir=args.workdir))

    def left() -> bool:
        if time.perf_counter() - t0 < args.budget:
            return True
        rep.add("\n(budget spent: the remaining steps were skipped)")
        return False

    try:
        tps = generator_rows(args, rep)
        from tilecolor.model.predict import default_batch_size, resolve_precision

        precision = resolve_precision(args.device)
        batch = default_batch_size(args.device)
        alone = tps.get((precision, batch))
        ceiling = alone * 65536 / 1e6 if alone else None  # stride = tile: 1 tile px per px
        base = base_image()
        if args.agree_side and left():
            agreement(args, rep, work, base)
        big, made = None, 0.0
        if left():  # the gigapixel run at the defaults first: it is the one a lease must bring
            t1 = time.perf_counter()
            big = write_input(work / f"in{args.side}", args.side, base).parent
            made = time.perf_counter() - t1
            header(rep, f"Pipeline on {args.device}: {args.side} x {args.side} "
                        f"({args.side ** 2 / 1e9:.2f} GP), stride 256, uniform blend "
                        f"(input written in {made:.0f} s)")
            pipeline_row(args, rep, big, work / "big-default", args.side, None, ceiling)
        best, best_workers = 0.0, None
        if left():
            inp = work / f"in{args.sweep_side}"
            write_input(inp, args.sweep_side, base)
            header(rep, f"Pipeline on {args.device}: {args.sweep_side} x {args.sweep_side} "
                        f"({args.sweep_side ** 2 / 1e6:.0f} MP), stride 256, uniform blend")
            for w in (int(x) for x in args.sweep_workers.split(",")):
                if not left():
                    break
                rate = pipeline_row(args, rep, inp, work / f"sweep-{w}", args.sweep_side, w,
                                    ceiling)
                if args.kernels_ab and left():
                    pipeline_row(args, rep, inp, work / f"sweep-{w}-numpy", args.sweep_side,
                                 w, ceiling, kernels=False)
                if rate > best:
                    best, best_workers = rate, w
            shutil.rmtree(inp, ignore_errors=True)
        if big and best_workers and best_workers != report_workers(args) and left():
            header(rep, f"Pipeline on {args.device}: {args.side} x {args.side}, "
                        f"{best_workers} workers")
            pipeline_row(args, rep, big, work / "big-best", args.side, best_workers, ceiling)
        rep.add(f"\n(all steps: {time.perf_counter() - t0:.0f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
