"""Where the Dask graph runs: an embedded LocalCluster (default) or an existing scheduler."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("tilecolor")


@contextmanager
def connect(scheduler: str | None = None, *, workers: int = 1, dashboard_address: str =
            "127.0.0.1:8787", host: str = "127.0.0.1", gpus: int = 0,
            security=None) -> Iterator:
    """Yield a ``distributed.Client``.

    With ``scheduler`` (``tcp://host:8786`` or ``tls://...`` with ``security``) it connects to
    that cluster. Otherwise it starts a LocalCluster of ``workers`` processes with one task
    thread each (the generator uses torch threads inside the task), listening on ``host``
    only, dashboard on ``dashboard_address``. ``gpus`` > 0 gives each worker ``GPU=1``.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler, security=security, timeout="30s") as client:
            yield client
        return
    resources = {"GPU": 1} if gpus else None
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host=host,
                      dashboard_address=dashboard_address, resources=resources,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client
