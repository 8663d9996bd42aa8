"""Ingesting the first images' TIFF blocks on the driver while the cluster starts."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

from tilecolor.batch.plan import Job
from tilecolor.batch.run import MAX_INFLIGHT
from tilecolor.core.errors import one_line
from tilecolor.engine.hints import ContextPass
from tilecolor.engine.ingest import ingest_region
from tilecolor.engine.settings import Settings

log = logging.getLogger("tilecolor")

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
