"""Where the Dask graph runs: an embedded LocalCluster (default), an existing scheduler, or
batch-job workers on SLURM/PBS through dask-jobqueue."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from tilecolor.cluster.config import ClusterConfig
from tilecolor.cluster.forkserver import WORKER_MALLOC, start_worker_server
from tilecolor.cluster.workers import GENERATOR
from tilecolor.core.errors import ConfigError

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


def security_for(cfg: ClusterConfig):
    """A ``distributed.security.Security`` for a tls:// scheduler, or None; ConfigError
    when TLS files are given without a tls:// address or one without the other."""
    from distributed.security import Security

    address = (cfg.address or "") if cfg.kind == "address" else ""
    ca_file, cert, key = cfg.tls_ca_file, cfg.tls_cert, cfg.tls_key
    if ca_file or cert or key:
        if not address.startswith("tls://"):
            raise ConfigError("--tls-ca-file/--tls-cert/--tls-key need a tls:// "
                              f"--scheduler address, got {address or 'none'!r}")
        if not (ca_file and cert):
            raise ConfigError("TLS needs --tls-ca-file and --tls-cert (and --tls-key "
                              "unless the certificate file holds the key)")
        return Security(tls_ca_file=str(ca_file), tls_client_cert=str(cert),
                        tls_client_key=str(key) if key else None, require_encryption=True)
    if address.startswith("tls://"):
        security = Security()  # from the Dask config: distributed.comm.tls.*
        if not security.tls_ca_file:
            raise ConfigError(f"scheduler {address} uses TLS: give --tls-ca-file and "
                              f"--tls-cert (or set distributed.comm.tls in the Dask config)")
        return security
    return None
