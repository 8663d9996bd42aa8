"""The embedded cluster's worker processes: forked from a server that has imported the
generator's stack, with glibc malloc settings that keep freed memory."""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger("tilecolor")

#: What the embedded cluster's worker processes import before they are forked (see
#: start_worker_server): the generator's stack, so no worker pays for it after starting.
WORKER_PRELOAD = ("distributed", "numpy", "zarr", "tifffile", "torch", "tilecolor.engine.graph",
                  "tilecolor.core.kernels", "tilecolor.model.nets", "tilecolor.io.write",
                  "tilecolor.model.predict")


#: glibc malloc settings of the embedded cluster's worker processes (set in the environment
#: the forkserver starts with; other C libraries ignore them).
#: With glibc's defaults a worker page-faulted its generator's activations in afresh on
#: every batch: buffers over 32 MiB are always mmap'ed and unmapped when freed, and a Dask
#: task thread allocates from its own arena, whose 64 MiB heaps are unmapped once empty.
#: The task threads of an 8192^2 run took 3.3M minor faults and 10 s of system time for
#: 67 s of CPU; with one arena, no mmap and freed memory kept up to 1 GiB, 0.1M and 0.3 s,
#: and the generator's CPU per tile fell by ~15 % (numbers: BENCHMARKS.md).
WORKER_MALLOC = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
                 "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def start_worker_server() -> None:
    """Start, once per process and without waiting, the forkserver that the embedded
    LocalCluster's worker processes are forked from, importing WORKER_PRELOAD.

    With the default ``spawn`` every worker process imported torch and the rest of the
    stack after the cluster had started (2-3 s on the 2-core dev machine), on the critical
    path of every run, and finalizing the interpreter on exit took another second.
    Started early (the CLI calls this before planning), the imports overlap the driver's own
    start-up, and a forked worker leaves with ``os._exit``. The nanny's environment reaches
    a forked worker only after torch was imported, so thread counts are set explicitly
    (GeneratorPredictor.threads) rather than through OMP_NUM_THREADS, and the malloc
    settings (WORKER_MALLOC) through the server's own environment.
    """
    import multiprocessing
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(WORKER_PRELOAD))
    # the server (and so every worker forked from it) takes its malloc settings from the
    # environment it starts with; the driver's own environment is left as it was (a Dask
    # nanny started earlier in this process may have put MALLOC_TRIM_THRESHOLD_ there)
    saved = {k: os.environ.get(k) for k in WORKER_MALLOC}
    os.environ.update(WORKER_MALLOC)
    try:
        forkserver.ensure_running()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def stop_worker_server() -> None:
    """Stop this process's forkserver, if one runs, without waiting for it to finalize
    (SIGTERM: it ignores only SIGINT). Its workers have exited with the cluster; left alone
    it would import nothing more but spend a second tearing torch down after the driver
    exits, and anything reading the run's output pipe (cron, SLURM, ``| tee``) waits."""
    import signal
    from multiprocessing import forkserver

    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if pid:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
