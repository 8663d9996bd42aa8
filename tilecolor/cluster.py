"""Where the Dask graph runs: an embedded LocalCluster (default), an existing scheduler, or
batch-job workers on SLURM/PBS through dask-jobqueue."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator

from tilecolor.config import ClusterConfig
from tilecolor.core.errors import ConfigError, TilecolorError

log = logging.getLogger("tilecolor")


def jobqueue_cluster(cfg: ClusterConfig):
    """A dask-jobqueue cluster (not yet scaled) for ``cfg.kind`` slurm or pbs.

    Each job runs one worker process of ``cores`` threads... of which tilecolor uses one task
    thread (torch uses the cores inside the task). With ``gpus``, the job asks the batch
    system for them and the worker offers ``GPU=1`` to the inference tasks.
    """
    try:
        import dask_jobqueue
    except ImportError as e:
        raise ConfigError("cluster.kind = 'slurm'/'pbs' needs dask-jobqueue "
                          "(pip install 'tilecolor[cluster]')") from e
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[cfg.kind]
    extra = list(cfg.job_extra)
    worker_args = ["--nthreads", "1"]
    if cfg.gpus:
        if cfg.kind == "slurm" and not any(x.startswith("--gres") for x in extra):
            extra.append(f"--gres=gpu:{cfg.gpus}")
        worker_args += ["--resources", "GPU=1"]
    # the workers keep freed memory like the embedded cluster's (WORKER_MALLOC)
    prologue = [f"export {k}={v}" for k, v in WORKER_MALLOC.items()]
    kwargs = dict(cores=cfg.cores, processes=1, memory=cfg.memory, walltime=cfg.walltime,
                  queue=cfg.queue, account=cfg.account, job_extra_directives=extra,
                  job_script_prologue=prologue,
                  worker_extra_args=worker_args, python=sys.executable,
                  scheduler_options={"host": cfg.host,
                                     "dashboard_address": cfg.dashboard_address})
    return cls(**kwargs)


GENERATOR = "generator"

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


def default_workers(device: str) -> int:
    """Worker processes of the embedded cluster when not given, at most one per
    WORKER_MEMORY of available memory (a worker holds the model and one block's buffers).

    CPU: one per core, each running the generator in one torch thread (two 1-thread
    processes ran the same tiles 7-15 % faster than one 2-thread process on the 2-core
    machine, BENCHMARKS.md).
    CUDA: one per two cores, at most CUDA_WORKERS, all sharing the GPU. Around the
    generator call a block's work is CPU (L* in, blending, RGB out, deflating its TIFF
    tiles), and a worker runs one generator task at a time: on the H200 with 16 cores,
    1, 2, 4 and 8 workers colorized 268 MP in 14.6, 8.6, 5.3 and 4.0 s inside the cluster
    (BENCHMARKS.md), the GPU never more than 6 % busy.
    """
    import psutil

    from tilecolor.model.predict import available_cores

    cores = available_cores()
    wanted = cores if device == "cpu" else min(CUDA_WORKERS, max(1, cores // 2))
    return max(1, min(wanted, psutil.virtual_memory().available // WORKER_MEMORY))


#: Most embedded workers sharing one GPU by default (each holds a CUDA context and the
#: model on the GPU: about 1 GiB there and 1.1 GiB of host memory).
CUDA_WORKERS = 8


#: Memory budgeted per worker by :func:`default_workers` (peak CPU worker RSS was ~0.6 GiB
#: at the default block of 2048, a CUDA worker's ~1.1 GiB).
WORKER_MEMORY = 3 << 29  # 1.5 GiB


def inference_resources(device: str, kind: str) -> dict[str, float] | None:
    """What a generator task asks for: the GPU on CUDA, the worker's generator slot on the
    embedded LocalCluster, nothing on clusters whose workers tilecolor did not start."""
    if device.startswith("cuda"):
        return {"GPU": 1}
    return {GENERATOR: 1} if kind == "local" else None


#: Event-loop housekeeping of the embedded LocalCluster. At Dask's defaults (stack samples
#: for the dashboard's Profile page every 10 ms, a loop tick every 20 ms, the nanny's
#: memory check every 100 ms) the workers' event loops and the driver (scheduler, nannies)
#: took 14 % of the 2-core machine from the generator (8192^2 run, 2 workers: CPU ticks of
#: those threads over 20 s). The tick only feeds the dashboard's event-loop-interval
#: metric, yet every wake-up of every loop costs: idle for 30 s, this cluster took
#: 1.38-1.66 core-s with ticks at 100 ms, the system monitor (psutil counters for the
#: System page) at 1 s and memory checks at 500 ms, and 0.95-1.07 core-s at 1 s / 2 s / 1 s
#: (benchmarks/idle_cluster.py; 2.3-2.8 % -> 1.6-1.8 % of the machine). Everything the
#: dashboard shows is still there, refreshed at 0.5 Hz (System page) and 5 Hz (Profile).
LOCAL_HOUSEKEEPING = {
    "distributed.worker.profile.interval": "200ms",
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "1s",
}


#: Seconds between a worker's heartbeats to the embedded cluster's scheduler. Dask asks for
#: one every 0.5 s up to 10 workers (distributed.scheduler.heartbeat_interval, no config
#: key); each gathers and ships the worker's metrics, and the scheduler digests them: on an
#: idle 2-worker cluster 0.53-0.60 core-s per 20 s at 0.5 s, 0.39-0.40 at 2 s (driver and
#: workers). The dashboard's worker tables refresh at that pace; worker-ttl is 5 minutes.
LOCAL_HEARTBEAT = 2.0


@contextlib.contextmanager
def _heartbeat_every(seconds: float) -> Iterator[None]:
    """While in the block, the schedulers of this process ask their workers for a heartbeat
    every ``seconds`` at most (nothing changes where Dask no longer has the function)."""
    from distributed import scheduler

    dask_interval = getattr(scheduler, "heartbeat_interval", None)
    if dask_interval is None:
        yield
        return
    scheduler.heartbeat_interval = lambda n: max(seconds, dask_interval(n))
    try:
        yield
    finally:
        scheduler.heartbeat_interval = dask_interval


@contextlib.contextmanager
def connect(cfg: ClusterConfig, *, security=None) -> Iterator:
    """Yield a ``distributed.Client`` for ``cfg``.

    ``local`` starts a LocalCluster of ``cfg.workers`` processes (1 if unset: the CLI picks
    :func:`default_workers`), each with two task threads
    and one generator slot (the generator uses torch threads inside its task), listening on
    ``cfg.host`` only.
    ``address`` connects to ``cfg.address`` (``tls://`` with ``security``).
    """
    import dask
    from distributed import Client, LocalCluster

    if cfg.kind == "address":
        with Client(cfg.address, security=security, timeout="30s") as client:
            yield client
        return
    if cfg.kind in ("slurm", "pbs"):
        with jobqueue_cluster(cfg) as cluster, Client(cluster) as client:
            cluster.scale(jobs=cfg.jobs)
            yield client
        return
    # Two task threads per worker, one "generator" slot: reading, blending and writing
    # overlap the generator instead of waiting behind it (torch uses the cores inside its
    # task), while two generator tasks never share one worker's cores.
    resources = {GENERATOR: 1, **({"GPU": 1} if cfg.gpus else {})}
    # Workers are forked from a server that has imported torch (start_worker_server). That
    # also keeps Dask's nannies from setting MALLOC_TRIM_THRESHOLD_=65536 in the workers,
    # which pins glibc's mmap threshold low: every large torch activation was then mmap'ed
    # and page-faulted afresh, and the generator ran ~20 % slower in a worker than in a
    # plain process (4096^2, stride 256); it is dropped from the environment too.
    start_worker_server()
    environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()
               if k != "MALLOC_TRIM_THRESHOLD_"}
    with (dask.config.set({"distributed.nanny.pre-spawn-environ": environ,
                           "distributed.worker.multiprocessing-method": "forkserver",
                           **LOCAL_HOUSEKEEPING}),
          _heartbeat_every(LOCAL_HEARTBEAT),
          LocalCluster(n_workers=cfg.workers or 1, threads_per_worker=2, processes=True,
                       host=cfg.host, dashboard_address=cfg.dashboard_address,
                       resources=resources, security=security,
                       silence_logs=logging.ERROR) as cluster,
          Client(cluster) as client):
        yield client


def require_resource(client, resource: str, *, timeout: float = 60.0) -> None:
    """Fail fast unless some worker offers ``resource``.

    Tasks that ask for a resource no worker has wait forever; batch-job workers may still
    be starting, so this waits up to ``timeout`` seconds for one to appear.
    """
    deadline = time.monotonic() + timeout
    while True:
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
        if any(w.get("resources", {}).get(resource, 0) > 0 for w in workers.values()):
            return
        if time.monotonic() >= deadline:
            raise TilecolorError(
                f"no worker offers the {resource} resource after {timeout:.0f} s "
                f"({len(workers)} workers connected); start workers with "
                f"`--resources {resource}=1` or run with --device cpu")
        time.sleep(0.5)


# ---------------------------------------------------------------- expected task errors

_EXPECTED = ("InputError(", "OutputError(", "CheckpointError(")


class ExpectedErrorFilter(logging.Filter):
    """Drops a worker's "Compute Failed" record (a traceback on the worker's stderr) when the
    task raised an error tilecolor raises on purpose (a corrupt input...): the client
    reports those as one line per file. Other failures keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Compute Failed") and isinstance(record.args, tuple) \
                and len(record.args) > 3:
            return not str(record.args[3]).startswith(_EXPECTED)
        return True


def quiet_expected_errors(client) -> None:
    """Install :class:`ExpectedErrorFilter` on every worker of ``client``, present and
    future (a worker plugin)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class _Quiet(WorkerPlugin):
        def setup(self, worker) -> None:
            logger = logging.getLogger("distributed.worker")
            if not any(isinstance(f, ExpectedErrorFilter) for f in logger.filters):
                logger.addFilter(ExpectedErrorFilter())

    client.register_plugin(_Quiet(), name="tilecolor-quiet-expected-errors")


# ---------------------------------------------------------------- the generator on workers

@contextlib.contextmanager
def preloaded(client, predict) -> Iterator[None]:
    """Load the generator on every worker of ``client``, present and future, in the
    background: a worker plugin starts a thread that loads the model as each worker starts,
    so the worker's torch import and weight loading overlap the rest of start-up and the
    first ingest tasks instead of delaying the first generator task. The plugin is removed
    on exit (a scheduler may outlive this run)."""
    import threading

    from distributed.diagnostics.plugin import WorkerPlugin

    class _Preload(WorkerPlugin):
        def __init__(self, predict) -> None:
            self.predict = predict

        def setup(self, worker) -> None:
            threading.Thread(target=self._load, name="tilecolor-preload", daemon=True).start()

        def _load(self) -> None:
            try:
                self.predict.load()
            except Exception:  # noqa: BLE001 - check_generator reports it
                pass

    name = f"tilecolor-preload-{predict.digest[:12]}"
    client.register_plugin(_Preload(predict), name=name)
    try:
        yield
    finally:
        try:
            client.unregister_worker_plugin(name)
        except Exception:  # noqa: BLE001 - a lost scheduler is reported elsewhere
            log.debug("could not remove the %s worker plugin", name)


def check_generator(client, predict, resources: dict[str, float] | None) -> None:
    """Load the generator where it will run (``resources``): this fully checks the
    checkpoint (architecture, every tensor's name and shape), so a bad one raises
    CheckpointError before any image is submitted. With :func:`preloaded` it waits for the
    load already under way."""
    client.submit(predict.load, key=f"load_generator-{predict.digest[:12]}",
                  resources=resources, pure=False).result()
