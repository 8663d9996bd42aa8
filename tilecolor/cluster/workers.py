"""What the workers offer and hold: how many workers, the generator slot each inference task
asks for, the generator preloaded on every worker, and expected errors kept quiet."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from tilecolor.core.errors import TilecolorError

log = logging.getLogger("tilecolor")

GENERATOR = "generator"


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
