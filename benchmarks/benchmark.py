"""tilecolor benchmarks: prints Markdown tables (BENCHMARKS.md is this script's output).

    python benchmarks/benchmark.py throughput --checkpoint models/default
    python benchmarks/benchmark.py quality --checkpoint models/default
    python benchmarks/benchmark.py memory --checkpoint PATH [--sizes 8192,32768]

throughput  one square input per --side (4096 unless given; comma-separated sides give one
            table each), stride 256, one generator: the bare generator on the same
            tiles, in one process and split over one 1-thread process per core (the faster
            of the two is the ceiling), `tilecolor run` end to end (a subprocess:
            cluster start, ingest, blend, TIFF write included; and the in-cluster time from
            its JSON report), and MONAI's sliding_window_inference with the same generator,
            overlap 0 and constant blend (run in a separate venv: MONAI is a peer, not a
            dependency; --monai-python points at it; left out, with the reason printed, where
            its in-memory buffers would not fit). The bare generator and MONAI run
            with tilecolor's worker malloc settings (cluster.WORKER_MALLOC). Rounds are
            interleaved with the order rotated; each row is reported at its best round and,
            per round, against that round's faster bare row (median over rounds), since the
            shared machine's speed drifts from minute to minute. --defaults-only keeps the
            split bare row, tilecolor's default workers and MONAI (for large --side).
quality     per stride (256..32) and blend: compute cost (generator input pixels per image
            pixel), ab RMSE against whole-image inference, and the seam score (below).
memory      peak RSS of the whole process tree (driver + nanny + workers) of `tilecolor run`
            for square inputs of the given sides, and the largest output difference between
            two block sizes.

Seam score: G = |grad a|^2 + |grad b|^2 (forward differences of the blended chroma, Lab
units). The seam band is every pixel within 1 px of an interior tile edge (x or y equal to
an origin or origin + tile, not at the image border). For a result R,
ratio(R) = mean_band(G_R) / mean_rest(G_R); seam score = ratio(tiled) / ratio(whole-image
inference), so image content cancels: 1.0 means the tile edges add no chroma gradient.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "photos"
VAL = ["plasma-Kite.jpg", "mate-Storm.jpg", "mate-Blinds.jpg", "lomiri-Picture_0B_by_freespace.jpg"]


def gray_from_photo(name: str, width: int, height: int) -> np.ndarray:
    """A validation photo, resized to cover (width, height), center-cropped, as gray uint8."""
    from PIL import Image

    from tilecolor.core.color import rgb_to_gray

    Image.MAX_IMAGE_PIXELS = None  # our own photos, resized past Pillow's bomb limit on purpose
    with Image.open(PHOTOS / name) as im:
        scale = max(width / im.width, height / im.height)
        im = im.convert("RGB").resize((round(im.width * scale), round(im.height * scale)),
                                      Image.LANCZOS)
        x0, y0 = (im.width - width) // 2, (im.height - height) // 2
        rgb = np.asarray(im.crop((x0, y0, x0 + width, y0 + height)))
    return rgb_to_gray(rgb)


def machine() -> str:
    import platform

    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), platform.processor())
    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores, "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_cli(args: list[str], *, poll: float = 0.2
            ) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run `tilecolor run ARGS`; returns (wall seconds, peak tree RSS bytes, result)."""
    cmd = [sys.executable, "-m", "tilecolor", "run", *args, "-q",
           "--dashboard-address", "127.0.0.1:0"]
    import threading

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, done = 0, threading.Event()

    def sample() -> None:  # RSS in the background: the wall time ends when the run does
        nonlocal peak
        while not done.wait(poll):
            peak = max(peak, tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"tilecolor run failed ({proc.returncode}): {err[-2000:]}")
    return wall, peak, subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def done_images(report_dir: Path) -> list[dict]:
    """The done images' entries of the newest run report in ``report_dir``."""
    report = json.loads(sorted(report_dir.glob("run-*.json"))[-1].read_text())
    return [i for i in report["images"] if i["status"] == "done"]


def report_seconds(report_dir: Path) -> float:
    return sum(i["seconds"] for i in done_images(report_dir))


# ------------------------------------------------------------------------------ throughput

BARE = "bare generator, same tiles, 1 process"
BARE_SPLIT = "bare generator, same tiles, {n} processes x 1 thread"

#: bytes per pixel MONAI's script holds at once: the input (float32), the output and its
#: count map (2 + 1 float32), the output as chroma (2 float32), RGB and gray (uint8)
MONAI_BYTES_PER_PIXEL = 4 + 12 + 8 + 3 + 1
#: the largest side the photo is resized to (Pillow's Lanczos resize of a 32768^2 RGB image
#: ran out of the machine's 24 GiB); larger inputs repeat it side by side
PHOTO_SIDE = 16384


def throughput(args) -> None:
    for side in args.side:
        throughput_at(args, side)


def throughput_at(args, side: int) -> None:
    import psutil
    import tifffile

    from tilecolor.cluster.forkserver import WORKER_MALLOC
    from tilecolor.core.tiling import tile_origins

    tile = 256
    work = Path(tempfile.mkdtemp(prefix="tc-bench-"))
    atexit.register(shutil.rmtree, work, True)  # inputs and outputs: up to GBs per run
    gray = gray_from_photo(VAL[0], min(side, PHOTO_SIDE), min(side, PHOTO_SIDE))
    if side > PHOTO_SIDE:
        reps = -(-side // PHOTO_SIDE)
        gray = np.tile(gray, (reps, reps))[:side, :side]
    (work / "in").mkdir()
    tifffile.imwrite(work / "in" / "img.tif", gray, tile=(256, 256), compression="zlib",
                     bigtiff=gray.size > 2**31)
    del gray
    threads = len(os.sched_getaffinity(0))
    mp = side * side / 1e6

    # the ceiling: the same tiles through the same generator (exactly as tilecolor's
    # predictor runs it), stacked in memory beforehand, in a fresh process of its own like
    # MONAI's (a long-lived process holding the other rows' arrays ran it ~10 % slower)
    o = tile_origins(side, tile, args.stride)
    n_tiles = len(o) ** 2
    # (argv: torch threads, this process's share k of n: tiles k, k + n, ...)
    bare_script = (
        "import sys,time,numpy as np,tifffile\n"
        "from tilecolor.core.color import gray_to_lightness, lightness_to_input\n"
        "from tilecolor.model.predict import make_predictor\n"
        "from tilecolor.core.tiling import tile_origins\n"
        "threads,k,n=map(int,sys.argv[1:])\n"
        f"p=make_predictor({str(args.checkpoint)!r},threads=threads)\n"
        f"g=tifffile.imread({str(work / 'in' / 'img.tif')!r})\n"
        f"o=tile_origins({side},{tile},{args.stride})\n"
        # tile by tile (the conversion is per pixel): a float copy of a whole 1 GP image
        # per process would not fit beside the other process
        f"t=np.stack([lightness_to_input(gray_to_lightness(g[i:i+{tile},j:j+{tile}])) "
        "for i, j in [(i, j) for i in o for j in o][k::n]])[:,None]\n"
        "del g\n"
        f"b={args.batch_size}\n"
        "p(t[:b])\n"
        "t0=time.perf_counter()\n"
        "for k in range(0,len(t),b): p(t[k:k+b])\n"
        "print(time.perf_counter()-t0)\n")

    # the peers' processes run with the malloc settings of tilecolor's workers too (without
    # them a bare generator spent ~13 % more CPU page-faulting its activations)
    tuned = {**WORKER_MALLOC, **os.environ}

    def bare() -> dict[str, float]:
        res = subprocess.run([sys.executable, "-c", bare_script, str(threads), "0", "1"],
                             capture_output=True, text=True, check=True, env=tuned)
        return {BARE: float(res.stdout.strip().splitlines()[-1])}

    def bare_split() -> dict[str, float]:
        """One process per core, one torch thread each, the tiles dealt out between them
        (how tilecolor's 1-thread workers run the generator); the slowest one's time."""
        procs = [subprocess.Popen([sys.executable, "-c", bare_script, "1", str(k),
                                   str(threads)], stdout=subprocess.PIPE, text=True,
                                  env=tuned)
                 for k in range(threads)]
        times = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        if any(p.returncode for p in procs):
            raise RuntimeError("bare generator process failed")
        return {BARE_SPLIT.format(n=threads): max(times)}

    # tilecolor run, end to end (JSON report only: the HTML one is opt-in)
    cli_args = ["--input", str(work / "in"), "--checkpoint", str(args.checkpoint),
                "--stride", str(args.stride), "--batch-size", str(args.batch_size),
                "--blend", "uniform", "--overwrite"]

    def tilecolor(workers: int) -> dict[str, float]:
        name = (f"tilecolor run, {workers} worker{'s' if workers > 1 else ''} x "
                f"{threads // workers} thread{'s' if threads // workers > 1 else ''}")
        out = work / f"out-{workers}"
        # each round starts from an empty folder, like a first run: replacing the previous
        # round's output (unlinking 0.5 GB at 268 MP) cost ~0.6 s inside the timed command
        shutil.rmtree(out, ignore_errors=True)
        wall, _, _ = run_cli([*cli_args, "--output", str(out), "--workers", str(workers)],
                             poll=2.0)  # RSS is not used here: sample rarely
        inside = report_seconds(out / ".tilecolor" / "reports")
        return {f"{name} (whole command)": wall,
                f"{name} (in-cluster, from its report)": inside}

    # MONAI sliding_window_inference with the same generator, overlap and blend
    script = (
        "import sys,time,numpy as np,torch,tifffile\n"
        "from monai.inferers import sliding_window_inference\n"
        "from tilecolor.model.checkpoint import load_generator\n"
        "from tilecolor.core.color import compose_rgb, gray_to_lightness, lightness_to_input\n"
        "from tilecolor.model.nets import for_inference\n"
        "from tilecolor.io.tiff import TIFF_CODEC\n"
        f"torch.set_num_threads({threads})\n"
        # the generator exactly as tilecolor's predictor runs it (BN folded, NHWC)
        f"m=for_inference(load_generator({str(args.checkpoint)!r})[0])\n"
        "net=lambda t: m(t.contiguous(memory_format=torch.channels_last)).contiguous()\n"
        "t0=time.perf_counter()\n"
        f"g=tifffile.imread({str(work / 'in' / 'img.tif')!r})\n"
        "x=torch.from_numpy(lightness_to_input(gray_to_lightness(g)))[None,None]\n"
        "t1=time.perf_counter()\n"
        "with torch.inference_mode():\n"
        f"  y=sliding_window_inference(x,(256,256),{args.batch_size},net,"
        f"overlap={1 - args.stride / tile},mode='constant')\n"
        "t2=time.perf_counter()\n"
        "ab=np.moveaxis(y[0].numpy(),0,-1)*110\n"
        f"tifffile.imwrite({str(work / 'monai.tif')!r},compose_rgb(g,ab,np.uint8),"
        "bigtiff=True,tile=(256,256),**TIFF_CODEC)\n"
        "print(t2-t1, time.perf_counter()-t0)\n")

    def monai() -> dict[str, float]:
        env = {**tuned, "PYTHONPATH": str(REPO)}
        (work / "monai.tif").unlink(missing_ok=True)  # as for tilecolor: no file to replace
        t0 = time.perf_counter()
        res = subprocess.run([args.monai_python, "-c", script], capture_output=True,
                             text=True, env=env, check=True)
        process = time.perf_counter() - t0
        infer, whole = map(float, res.stdout.strip().splitlines()[-1].split())
        return {"MONAI sliding_window_inference (inference on an in-memory tensor)": infer,
                "MONAI, read TIFF + inference + compose RGB + write tiled TIFF (no pyramid)":
                    whole,
                "MONAI, the same script as a whole process (Python start and imports too, "
                "like tilecolor's whole command)": process}

    need, free = side * side * MONAI_BYTES_PER_PIXEL, psutil.virtual_memory().available
    monai_fits = need < 0.9 * free
    if args.monai_python and not monai_fits:
        print(f"\n(MONAI left out at {side}x{side}: its script holds the whole image's input, "
              f"output, count map and chroma in memory, ~{need / 2**30:.0f} GiB, and "
              f"{free / 2**30:.0f} GiB are available)")
    # every method once per round, rounds interleaved, so a slow spell of the (shared)
    # machine hits all of them, and the order rotated from round to round, so no method
    # always runs at the same point of a round; each row reports its fastest round
    split = threads > 1
    measures = [*([bare] if not (args.defaults_only and split) else []),
                *([bare_split] if split else []),
                *([lambda: tilecolor(1)] if not (args.defaults_only and split) else []),
                *([lambda: tilecolor(threads)] if split else []),
                *([monai] if args.monai_python and monai_fits else [])]
    results: list[dict[str, list[float]]] = [{} for _ in range(len(measures))]
    for k in range(args.repeat):
        for i in [*range(k % len(measures), len(measures)), *range(k % len(measures))]:
            for name, sec in measures[i]().items():
                results[i].setdefault(name, []).append(sec)
    runs = {name: secs for r in results for name, secs in r.items()}  # in table order
    # the ceiling is the faster way of running the bare generator on this machine
    bare_rows = [secs for name, secs in runs.items() if name.startswith("bare")]
    ceiling = min(min(secs) for secs in bare_rows)
    # the machine's speed drifts from minute to minute: each row also against the faster
    # bare row of its own round, the median over rounds
    round_ceiling = [min(secs[k] for secs in bare_rows) for k in range(args.repeat)]
    print(f"\n### Throughput: {side}x{side} input, stride {args.stride}, tile {tile}, "
          f"{n_tiles} tiles, batch {args.batch_size}, best of {args.repeat}\n")
    print("| what | seconds (best) | all rounds | MP/s | best vs the faster bare row | "
          "per round vs that round's faster bare row (median) |\n|---|---:|---|---:|---:|---|")
    for name, secs in runs.items():
        best = min(secs)
        per_round = [c / t for c, t in zip(round_ceiling, secs, strict=True)]
        print(f"| {name} | {best:.1f} | {' / '.join(f'{t:.1f}' for t in secs)} | "
              f"{mp / best:.3f} | {ceiling / best:.2f}x | "
              f"{' / '.join(f'{r:.2f}' for r in per_round)} "
              f"(**{float(np.median(per_round)):.2f}x**) |")


# --------------------------------------------------------------------------------- quality

def seam_band(length: int, tile: int, stride: int) -> np.ndarray:
    from tilecolor.core.tiling import tile_origins

    band = np.zeros(length, bool)
    for o in tile_origins(length, tile, stride):
        for edge in (int(o), int(o) + tile):
            if 0 < edge < length:
                band[max(0, edge - 1) : edge + 1] = True
    return band


def gradient_energy(ab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 2) -> energy of forward differences along y (H-1, W) and x (H, W-1)."""
    gy = (np.diff(ab, axis=0) ** 2).sum(-1)
    gx = (np.diff(ab, axis=1) ** 2).sum(-1)
    return gy, gx


def seam_ratio(ab: np.ndarray, band_y: np.ndarray, band_x: np.ndarray) -> float:
    gy, gx = gradient_energy(ab)
    # a difference crosses an edge between rows i and i+1 when both are in the band
    cross_y = band_y[:-1] & band_y[1:]
    cross_x = band_x[:-1] & band_x[1:]
    band = np.concatenate([gy[cross_y].ravel(), gx[:, cross_x].ravel()])
    rest = np.concatenate([gy[~cross_y].ravel(), gx[:, ~cross_x].ravel()])
    return float(band.mean() / rest.mean())


def quality(args) -> None:
    import tifffile
    from distributed import Client, LocalCluster

    from tilecolor.core.color import gray_to_lightness, lightness_to_input
    from tilecolor.core.tiling import Plan
    from tilecolor.engine.graph import submit_image
    from tilecolor.engine.settings import Settings
    from tilecolor.engine.store import WorkStore
    from tilecolor.io.read import probe
    from tilecolor.model.predict import make_predictor

    h, w, tile = args.height, args.width, 256
    work = Path(tempfile.mkdtemp(prefix="tc-quality-"))
    atexit.register(shutil.rmtree, work, True)
    threads = len(os.sched_getaffinity(0))
    predict = make_predictor(args.checkpoint, threads=threads)
    images = []
    for name in VAL[: args.images]:
        gray = gray_from_photo(name, w, h)
        path = work / f"{name}.tif"
        tifffile.imwrite(path, gray)
        x = lightness_to_input(gray_to_lightness(gray))[None, None]
        whole = np.moveaxis(predict(x)[0], 0, -1) * 110.0  # (H, W, 2)
        images.append((name, path, whole))
    strides = [int(s) for s in args.strides.split(",")]
    rows = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        for stride in strides:
            band_y, band_x = seam_band(h, tile, stride), seam_band(w, tile, stride)
            for blend in ("uniform", "cosine"):
                settings = Settings(tile=tile, stride=stride, blend=blend, block=2048,
                                    batch_size=16)
                errs, seams, t0 = [], [], time.perf_counter()
                for name, path, whole in images:
                    store = WorkStore.create(work / f"{name}-{stride}-{blend}.zarr",
                                             settings.plan(h, w), "uint8", output="ab")
                    client.gather(submit_image(client, probe(path), store, settings,
                                               predict).reduces)
                    ab = store.array("ab")[:]
                    store.remove()
                    errs.append(float(np.sqrt(((ab - whole) ** 2).sum(-1).mean())))
                    seams.append(seam_ratio(ab, band_y, band_x)
                                 / seam_ratio(whole, band_y, band_x))
                cost = Plan(h, w, tile, stride, 2048).tile_pixels_per_pixel()
                rows.append((stride, blend, cost, np.mean(errs), np.mean(seams),
                             time.perf_counter() - t0))
                print(rows[-1], file=sys.stderr, flush=True)
    paper = next(r for r in rows if r[0] == 32 and r[1] == "uniform") if 32 in strides else None
    print(f"\n### Tiling quality: {args.images} validation photos at {w}x{h}, tile {tile}, "
          f"against whole-image inference\n")
    print("| stride | blend | compute (tile px / image px) | vs paper | ab RMSE vs whole | "
          "seam score | seconds |\n|---:|---|---:|---:|---:|---:|---:|")
    for stride, blend, cost, err, seam, sec in rows:
        rel = f"{cost / paper[2]:.3f}" if paper else "-"
        print(f"| {stride} | {blend} | {cost:.2f} | {rel} | {err:.3f} | {seam:.3f} | "
              f"{sec:.1f} |")


# ---------------------------------------------------------------------------------- memory

def memory(args) -> None:
    import tifffile

    rows = []
    for side in (int(s) for s in args.sizes.split(",")):
        work = Path(tempfile.mkdtemp(prefix=f"tc-mem-{side}-", dir=args.workdir))
        (work / "in").mkdir()
        src = work / "in" / "big.tif"
        t0 = time.perf_counter()
        tile = 1024
        base = gray_from_photo(VAL[0], 4096, 4096)

        def tiles(side=side, tile=tile, base=base):
            # the photo repeated: a real-looking image of any size, streamed tile by tile
            for i in range(0, side, tile):
                for j in range(0, side, tile):
                    yield base[i % 4096 : i % 4096 + tile, j % 4096 : j % 4096 + tile]

        tifffile.imwrite(src, tiles(), shape=(side, side), dtype=np.uint8, tile=(tile, tile),
                         compression="zlib", bigtiff=True)
        make = time.perf_counter() - t0
        outs = {}
        for block in (int(b) for b in args.blocks.split(",")):
            out = work / f"out-{block}"
            wall, peak, _ = run_cli(["--input", str(work / "in"), "--output", str(out),
                                     "--checkpoint", str(args.checkpoint), "--stride",
                                     str(args.stride), "--block", str(block),
                                     "--render-scale", str(args.render_scale),
                                     *(["--workers", str(args.workers)] if args.workers
                                       else [])], poll=0.5)
            rows.append((side, block, wall, peak))
            outs[block] = out / "big.tif"
            print(rows[-1], file=sys.stderr, flush=True)
        diff = "-"
        if len(outs) == 2:
            a, b = (tifffile.imread(p, aszarr=True, level=0) for p in outs.values())
            import zarr

            za, zb = zarr.open_array(a, mode="r"), zarr.open_array(b, mode="r")
            worst = 0
            for i in range(0, side, 2048):
                worst = max(worst, int(np.abs(za[i : i + 2048].astype(np.int16)
                                              - zb[i : i + 2048].astype(np.int16)).max()))
            diff = str(worst)
        from tilecolor.cluster.workers import default_workers

        workers = args.workers or default_workers("cpu")
        print(f"\n### Memory: {side}x{side} ({side * side / 1e9:.2f} GP), stride {args.stride}, "
              f"render scale {args.render_scale}, {workers} worker(s), model "
              f"{args.checkpoint}; input written in {make:.0f} s\n")
        print("| block | wall s | MP/s | peak RSS, whole process tree |\n|---:|---:|---:|---:|")
        for s, block, wall, peak in rows:
            if s == side:
                print(f"| {block} | {wall:.0f} | {s * s / 1e6 / wall:.2f} | "
                      f"{peak / 2**30:.2f} GiB |")
        print(f"\nLargest difference between the block sizes: {diff} (8-bit levels)")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--checkpoint", type=Path, default=REPO / "models" / "default")
    t.add_argument("--side", type=lambda v: [int(x) for x in v.split(",")], default=[4096],
                   help="input side(s), comma-separated: one table each, in one run")
    t.add_argument("--stride", type=int, default=256)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--monai-python", help="python of a venv with monai installed")
    t.add_argument("--defaults-only", action="store_true",
                   help="on several cores, only the split bare generator and tilecolor's "
                        "default workers (1 per core) beside MONAI: for large sides")
    t.add_argument("--repeat", type=int, default=3,
                   help="rounds; every method runs once per round, the best is reported")
    q = sub.add_parser("quality")
    q.add_argument("--checkpoint", type=Path, default=REPO / "models" / "default")
    q.add_argument("--images", type=int, default=2)
    q.add_argument("--height", type=int, default=768)
    q.add_argument("--width", type=int, default=1024)
    q.add_argument("--strides", default="256,224,192,128,64,32")
    m = sub.add_parser("memory")
    m.add_argument("--checkpoint", type=Path, required=True)
    m.add_argument("--sizes", default="8192")
    m.add_argument("--blocks", default="2048")
    m.add_argument("--stride", type=int, default=256)
    m.add_argument("--workers", type=int, help="[default: tilecolor's own default]")
    m.add_argument("--render-scale", type=float, default=1.0)
    m.add_argument("--workdir", default=None)
    m.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    print(f"Machine: {machine()}")
    {"throughput": throughput, "quality": quality, "memory": memory}[args.what](args)


if __name__ == "__main__":
    main()
