"""Where the graph runs: the typed cluster settings (the ``[cluster]`` table of a job spec)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tilecolor.core.errors import ConfigError


class ClusterKind(StrEnum):
    """Where the graph runs: the embedded LocalCluster, an existing scheduler, or batch
    jobs through dask-jobqueue."""

    LOCAL = "local"
    ADDRESS = "address"
    SLURM = "slurm"
    PBS = "pbs"


CLUSTER_KINDS = tuple(k.value for k in ClusterKind)


@dataclass(frozen=True)
class ClusterConfig:
    """Where the graph runs.

    ``local``: an embedded LocalCluster of ``workers`` processes (None: chosen for the
    device and machine by :func:`tilecolor.cluster.workers.default_workers`). ``address``:
    an existing scheduler at ``address``. ``slurm``/``pbs``: dask-jobqueue submits ``jobs``
    batch jobs of ``cores`` cores, ``memory``, ``gpus`` GPUs (each worker then offers
    ``GPU=1``) and ``walltime``, to ``queue`` (and ``account``), with extra scheduler directives.
    """

    kind: ClusterKind = ClusterKind.LOCAL
    address: str | None = None
    workers: int | None = None
    threads: int | None = None
    dashboard_address: str = "127.0.0.1:8787"
    cores: int = 1
    memory: str = "4GB"
    gpus: int = 0
    walltime: str = "01:00:00"
    jobs: int = 1
    queue: str | None = None
    account: str | None = None
    job_extra: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    resource_timeout: int = 60  #: seconds to wait for a worker offering GPU=1

    def __post_init__(self) -> None:
        if self.kind not in CLUSTER_KINDS:
            raise ConfigError(f"cluster.kind must be one of {CLUSTER_KINDS}, got {self.kind!r}")
        object.__setattr__(self, "kind", ClusterKind(self.kind))
        if self.kind == "address" and not self.address:
            raise ConfigError("cluster.kind = 'address' needs cluster.address")
        for name in ("workers", "cores", "jobs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"cluster.{name} must be >= 1, got {getattr(self, name)}")
        if self.gpus < 0:
            raise ConfigError(f"cluster.gpus must be >= 0, got {self.gpus}")
        object.__setattr__(self, "job_extra", tuple(self.job_extra))
