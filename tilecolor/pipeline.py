"""Colorize a batch of images: discover, check, plan, submit each image's graph, collect.

Planning needs no cluster: images whose output is up to date (same fingerprint of input,
model and settings in the manifest) are skipped before any worker starts, so a scheduled
rerun over finished work returns in seconds. A working store left by an interrupted run
with the same fingerprint is resumed: its finished blocks are not recomputed. Images are
submitted a few at a time (``max_inflight``) so working stores and scheduler state stay
bounded on folders of thousands of files. A failed image is reported; the others go on.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import itertools
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tilecolor.core.errors import InputError, OutputError, TilecolorError, one_line
from tilecolor.core.planes import takes_hint
from tilecolor.engine.graph import submit_image
from tilecolor.engine.hints import DEFAULT_CONTEXT, ContextPass, find_reference, plan_reference
from tilecolor.engine.ingest import ingest_region
from tilecolor.engine.settings import Hint, Settings
from tilecolor.engine.store import LAYOUT, WorkStore
from tilecolor.engine.tiles import Predict
from tilecolor.io.atomic import write_atomic
from tilecolor.io.formats import check_output_size, output_path
from tilecolor.io.read import ImageInfo, probe
from tilecolor.io.tiff import tiff_tiles
from tilecolor.io.validate import InputPolicy, is_candidate
from tilecolor.progress import Progress
from tilecolor.safety import check_dest, file_ids, work_name

log = logging.getLogger("tilecolor")

WORK_DIR = ".tilecolor"


@dataclass
class ImageResult:
    """What happened to one input."""

    input: str
    status: str  #: "done", "skipped" (up to date) or "failed"
    output: str | None = None
    error: str | None = None
    height: int = 0
    width: int = 0
    tiles: int = 0
    blocks_computed: int = 0
    seconds: float = 0.0
    #: time the map tasks spent inside the generator (summed over workers)
    generator_seconds: float = 0.0
    #: CPU time of the task threads inside the generator (summed over workers): on CPU with
    #: one torch thread per worker, comparable with a bare loop's process time over the
    #: same tiles (BENCHMARKS.md); on CUDA only the host side
    generator_cpu_seconds: float = 0.0

    @property
    def megapixels_per_second(self) -> float:
        return self.height * self.width / 1e6 / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "megapixels_per_second": round(self.megapixels_per_second, 4)}


def find_inputs(patterns: list[str | Path] | str | Path) -> list[Path]:
    """Image files named by folders (not recursive, hidden files skipped), files or globs.

    A folder lists every entry named like an image, supported or not (``.bmp``...), and
    special files too: they are rejected one by one with a reason, not silently skipped.
    """
    if isinstance(patterns, (str, Path)):
        patterns = [patterns]
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found += sorted(p for p in path.iterdir()
                            if is_candidate(p.name) and not p.is_dir())
        elif path.is_file():
            found.append(path)
        else:
            found += sorted(Path(p) for p in glob.glob(str(pattern)) if Path(p).is_file())
    return list(dict.fromkeys(found))  # keep order, drop repeats


def fingerprint(src: Path, model_digest: str, settings: Settings, fmt: str,
                page: int = 0, precision: str = "fp32", hint: str | None = None) -> str:
    """Identity of a result: input (size, mtime, first and last MiB), page, model, its
    arithmetic, settings and ``hint`` (:func:`hint_identity`). Page 0, fp32 and no hint
    add nothing, so results written before those were options keep their fingerprint."""
    st = src.stat()
    h = hashlib.sha256()
    h.update(json.dumps([st.st_size, st.st_mtime_ns, model_digest, settings.render_scale,
                         settings.tile,
                         settings.stride, str(settings.blend), fmt,
                         *([page] if page else []),
                         *([precision] if precision != "fp32" else []),
                         *([hint] if hint else [])]).encode())
    with open(src, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return h.hexdigest()


@dataclass
class Job:
    """One image to compute."""

    src: Path
    info: ImageInfo
    dest: Path
    fmt: str
    store: WorkStore
    manifest: Path
    fingerprint: str
    tiles: int
    hint: Hint | None = None  #: where its tiles' hint comes from (None: no hint planes)
    t0: float = field(default_factory=time.perf_counter)
    graph: object = None
    generator_seconds: float = 0.0
    generator_cpu_seconds: float = 0.0


def _plan_one(src: Path, out_dir: Path, settings: Settings, model_digest: str,
              fmt: str | None, overwrite: bool, claimed: set[Path],
              policy: InputPolicy | None = None,
              protected: set[tuple[int, int]] | None = None,
              precision: str = "fp32", reference: Path | None = None) -> Job | ImageResult:
    info = probe(src, policy)
    out_fmt = fmt or info.format
    dest = output_path(out_dir, src, out_fmt)
    if dest.resolve() == src.resolve():
        raise OutputError(f"{src}: output would overwrite the input; choose another --output")
    check_dest(src, dest, out_dir, protected if protected is not None else file_ids([src]))
    check_output_size(src, info.height, info.width, out_fmt)
    if dest in claimed:
        raise OutputError(f"{src}: output name {dest.name} is already taken by another input")
    claimed.add(dest)
    work = out_dir / WORK_DIR
    manifest = work / f"{work_name(src)}.done.json"
    hint = image_hint(src, info, settings, reference, policy)
    fp = fingerprint(src, model_digest, settings, out_fmt, info.page, precision,
                     hint_identity(settings, hint))
    if dest.exists() and not overwrite:
        try:
            previous = json.loads(manifest.read_text()).get("fingerprint")
        except (OSError, ValueError):
            previous = None
        if previous == fp:
            return ImageResult(str(src), "skipped", str(dest), height=info.height,
                               width=info.width)
        if previous is None:
            raise OutputError(f"{src}: {dest} exists and was not written by tilecolor; "
                              f"use --overwrite to replace it")
    plan = settings.plan(info.height, info.width)
    store = WorkStore(work / f"{work_name(src)}.zarr")
    attrs = {"fingerprint": fp, "block": settings.block, "source": str(src), "layout": LAYOUT}
    resumable = (not overwrite and store.exists()
                 and {k: store.attrs.get(k) for k in attrs} == attrs)
    if resumable:
        log.info("%s: resuming (%d of %d blocks already done)", src.name,
                 int(store.blocks_done().sum()), store.blocks_done().size)
    else:
        work.mkdir(parents=True, exist_ok=True)
        store = WorkStore.create(store.path, plan, info.dtype, attrs=attrs,
                                 render=settings.render_plan(info.height, info.width),
                                 tiff_tiles=tiff_tiles(out_fmt, settings.block),
                                 context_copy=context_copy(hint, settings.block))
    return Job(src, info, dest, out_fmt, store, manifest, fp, plan.n_tiles, hint)


def image_hint(src: Path, info: ImageInfo, settings: Settings, reference: Path | None,
               policy: InputPolicy | None = None) -> Hint | None:
    """Where image ``src``'s hint comes from: for a generator with hint planes, its
    reference image (``reference``: the file, or a folder holding one of the same name
    stem; InputError when there is none or it does not fit), else its context pass."""
    if not takes_hint(settings.planes):
        return None
    if reference is None:
        return settings.context_pass(info.height, info.width)
    path = find_reference(src, reference)
    return plan_reference(src, info.height, info.width, path,
                          settings.context or DEFAULT_CONTEXT, policy)


def hint_identity(settings: Settings, hint: Hint | None) -> str | None:
    """What a result's fingerprint records of its hint: nothing for a generator without
    hint planes, else the context size (0: off) or the reference's SHA-256."""
    if not takes_hint(settings.planes):
        return None
    digest = getattr(hint, "digest", None)
    return f"hint={digest}" if digest else f"context={settings.context}"


def context_copy(hint: Hint | None, block: int) -> tuple[int, int, int] | None:
    """The working store's context copy for ``hint`` (WorkStore.create), or None."""
    if not isinstance(hint, ContextPass):
        return None
    return (*hint.copy_shape, block // hint.step)


def plan_batch(inputs: list[Path], out_dir: Path, settings: Settings, model_digest: str, *,
               fmt: str | None = None, overwrite: bool = False,
               policy: InputPolicy | None = None, precision: str = "fp32",
               reference: Path | None = None
               ) -> tuple[list[Job], dict[Path, ImageResult]]:
    """Check every input's header and decide what to do, without a cluster.

    ``reference`` (guided mode, ``--hint``): a color image of the scene, or a folder of
    them matched to the inputs by name stem; each image's reference is checked here (a
    missing or unfit one fails that image only). ``policy`` sets the pixel limit and
    TIFF page; ``precision`` is the generator's
    arithmetic (a bf16 result is not an fp32 one: it is part of the fingerprint). Returns
    the jobs to run and the results already known (up to date, or failed checks).
    """
    jobs, known, claimed = [], {}, set()
    protected = file_ids(inputs)  # no output may replace any input
    for src in inputs:
        try:
            item = _plan_one(src, out_dir, settings, model_digest, fmt, overwrite, claimed,
                             policy, protected, precision, reference)
        except TilecolorError as e:
            known[src] = ImageResult(str(src), "failed", error=str(e))
            log.error("%s", e)
            continue
        except OSError as e:
            known[src] = ImageResult(str(src), "failed", error=one_line(f"{src}: {e}"))
            log.error("%s", known[src].error)
            continue
        if isinstance(item, ImageResult):
            known[src] = item
            log.info("up to date: %s", src.name)
        else:
            jobs.append(item)
    return jobs, known


#: How many images run_jobs keeps in flight (also what the disk estimate assumes).
MAX_INFLIGHT = 4


class Preingest:
    """Ingest the first images' TIFF blocks in a thread of the driver until :meth:`stop`.

    Started before the embedded cluster, it uses the time the driver would otherwise spend
    waiting for the worker processes (the forkserver importing torch, the workers
    registering, the generator loading: ~3-4 s on the 2-core machine, with one core idle
    most of it): the blocks it ingests are marked done in the working store, exactly as an
    ingest task marks them, so :func:`submit_image` submits no task for them and the first
    generator tasks start at once. It stops after the block in hand (a few tens of ms at
    the default block). Any error just ends it for that image: the image's ingest task meets
    the same problem on a worker and reports it like any other.
    """

    def __init__(self, jobs: list[Job], settings: Settings, *, enabled: bool = True,
                 limit: int = MAX_INFLIGHT) -> None:
        self.blocks = 0  #: blocks ingested so far
        self._stop = threading.Event()
        todo = [j for j in jobs[:limit] if j.info.format == "tiff"] if enabled else []
        self._thread = threading.Thread(target=self._run, args=(todo, settings),
                                        name="tilecolor-preingest", daemon=True)

    def __enter__(self) -> Preingest:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> int:
        """Stop after the block in hand; returns the number of blocks ingested."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
        return self.blocks

    def _run(self, jobs: list[Job], settings: Settings) -> None:
        _lowest_priority()
        try:
            self._ingest(jobs, settings)
        finally:  # the driver lives as long as the run: hand the blocks' buffers back
            _trim_heap()

    def _ingest(self, jobs: list[Job], settings: Settings) -> None:
        import numpy as np

        for job in jobs:
            plan = settings.plan(job.info.height, job.info.width)
            try:
                for r, c in np.argwhere(~job.store.blocks_done("ingest")).tolist():
                    if self._stop.is_set():
                        return
                    ingest_region(job.info, job.store, plan, r, c,
                                  job.hint if isinstance(job.hint, ContextPass) else None)
                    self.blocks += 1
            except Exception as e:  # noqa: BLE001 - the ingest task reports it
                log.debug("%s: not ingested ahead (%s)", job.src, one_line(str(e)))


def _lowest_priority() -> None:
    """Give the calling thread the lowest CPU priority (nice 19; Linux only, where nice is
    per thread). Work done ahead runs on what the critical path leaves idle: the
    forkserver's imports, which the first generator tile waits for, get the cores first."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _trim_heap() -> None:
    """Return freed heap memory to the OS (glibc's malloc_trim; a no-op elsewhere). A
    thread's malloc arena keeps what it freed: after ingesting four 4096^2 blocks the
    driver held ~40 MB more, for the rest of the run, until trimmed."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def run_jobs(client, jobs: list[Job], settings: Settings, predict: Predict, *,
             max_inflight: int = MAX_INFLIGHT, progress: bool = True,
             slots: int | None = None, cores: int | None = None) -> dict[Path, ImageResult]:
    """Run planned jobs on ``client``; one result per job.

    ``slots``: how many generator tasks the cluster runs at once (the embedded cluster's
    workers), or None. Given, the generator tasks are handed to the scheduler as workers
    free up, two per slot at most (one running, the next ready), so whichever worker is
    ahead takes the next block; None submits them all at once (see :func:`submit_image`).
    ``cores``: the cores those slots share (the embedded cluster's machine), or None. Given,
    once nothing is left to hand out and fewer generator tasks than slots still run, they
    are told to use ``cores // running`` torch threads each: the last block no longer
    runs on one core while the others idle.
    """
    from distributed import as_completed

    results: dict[Path, ImageResult] = {}
    queue = deque(jobs)
    finals: dict[object, Job] = {}
    active: list[Job] = []  # submitted, not finished, in rank order
    maps: dict[str, Job] = {}  # map task key -> its image, to sum the generator's time
    bar = Progress(desc="colorize", enabled=progress)
    ac = as_completed()
    ranks = itertools.count()
    window = 2 * slots if slots else None
    running = 0  # generator tasks submitted and not finished

    def track(job: Job, futures: list, new_maps: list) -> None:
        nonlocal running
        maps.update((f.key, job) for f in new_maps)
        running += len(new_maps)
        for f in futures:
            ac.add(f)

    def feed() -> None:
        """Submit generator tasks, first image first, up to the window."""
        for job in active:
            if window is not None and running >= window:
                return
            if job.graph.held:
                before = len(job.graph.maps)
                new = job.graph.feed(None if window is None else window - running)
                track(job, new, job.graph.maps[before:])

    def submit_next() -> None:
        if not queue:
            return
        job = queue.popleft()
        job.t0 = time.perf_counter()
        if cores:
            job.store.set_threads(0)  # a hint an interrupted run left
        job.graph = submit_image(client, job.info, job.store, settings, predict,
                                 dest=job.dest, fmt=job.fmt, rank=next(ranks),
                                 defer=window is not None, hint=job.hint)
        finals[job.graph.final] = job
        active.append(job)
        bar.add_total(len(job.graph.futures) + job.graph.unsubmitted)
        track(job, job.graph.futures, job.graph.maps)
        feed()

    hinted = 0
    for _ in range(max_inflight):
        submit_next()
    for future in ac:
        bar.update()
        owner = maps.pop(future.key, None)
        if owner is not None:
            running -= 1
            if future.status == "finished":
                stats = future.result()
                owner.generator_seconds += stats["generator_seconds"]
                owner.generator_cpu_seconds += stats["generator_cpu_seconds"]
            feed()
            if (cores and slots and 0 < running < slots and not queue
                    and not any(j.graph.held for j in active)
                    and cores // running > max(hinted, 1)):
                hinted = cores // running
                for j in active:
                    j.store.set_threads(hinted)
        job = finals.pop(future, None)
        if job is None:
            continue
        active.remove(job)
        r = results[job.src] = _finish(job, future)
        bar.update(job.graph.unsubmitted)  # a failed image's tasks that never will be
        job.graph.release(client)
        bar.write(one_line(f"done: {r.output}" if r.status == "done" else f"error: {r.error}"))
        submit_next()
    bar.close()
    return results


def _finish(job: Job, future) -> ImageResult:
    base = dict(height=job.info.height, width=job.info.width, tiles=job.tiles,
                blocks_computed=len(job.graph.maps), seconds=time.perf_counter() - job.t0,
                generator_seconds=round(job.generator_seconds, 3),
                generator_cpu_seconds=round(job.generator_cpu_seconds, 3))
    if future.status == "finished":
        write_atomic(job.manifest, json.dumps({"fingerprint": job.fingerprint,
                                               "output": str(job.dest)}) + "\n")
        job.store.remove()
        return ImageResult(str(job.src), "done", str(job.dest), **base)
    exc = future.exception()
    if isinstance(exc, (InputError, OutputError)):
        msg = str(exc)
    else:
        msg = one_line(f"{job.src}: {type(exc).__name__}: {exc}")
    return ImageResult(str(job.src), "failed", error=msg, **base)


def write_report(path: Path, results: list[ImageResult], seconds: float,
                 settings: Settings, model_digest: str, *, device: str = "cpu",
                 precision: str = "fp32") -> Path:
    """The JSON run report: one entry per image plus totals."""
    done = [r for r in results if r.status == "done"]
    pixels = sum(r.height * r.width for r in done)
    report = {
        "settings": {"tile": settings.tile, "stride": settings.stride,
                     "render_scale": settings.render_scale,
                     "context": settings.context if takes_hint(settings.planes) else 0,
                     "blend": str(settings.blend), "block": settings.block,
                     "batch_size": settings.batch_size, "device": device,
                     "precision": precision},
        "model_sha256": model_digest,
        "images": [r.to_dict() for r in results],
        "totals": {"images": len(results), "done": len(done),
                   "skipped": sum(r.status == "skipped" for r in results),
                   "failed": sum(r.status == "failed" for r in results),
                   "megapixels": round(pixels / 1e6, 3), "seconds": round(seconds, 3),
                   "megapixels_per_second": round(pixels / 1e6 / seconds, 4) if seconds else 0,
                   "tiles": sum(r.tiles for r in done)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, json.dumps(report, indent=2) + "\n")
