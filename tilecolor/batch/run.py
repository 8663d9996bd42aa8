"""Running a planned batch: each image's graph submitted, a few images at a time
(``max_inflight``) so working stores and scheduler state stay bounded on folders of
thousands of files, and collected. A failed image is reported; the others go on."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import deque
from pathlib import Path

from tilecolor.batch.plan import Job
from tilecolor.batch.progress import Progress
from tilecolor.batch.report import ImageResult
from tilecolor.core.errors import InputError, OutputError, one_line
from tilecolor.engine.graph import submit_image
from tilecolor.engine.settings import Settings
from tilecolor.engine.tiles import Predict
from tilecolor.io.atomic import write_atomic

log = logging.getLogger("tilecolor")

#: How many images run_jobs keeps in flight (also what the disk estimate assumes).
MAX_INFLIGHT = 4


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
