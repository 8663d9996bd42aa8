"""Turn a checkpoint into ``predict(batch) -> batch``, loaded once per process.

The engine calls ``predict`` with a float32 array (N, P, T, T) of the checkpoint's input
planes (:mod:`tilecolor.core.planes`, in the order ``GeneratorPredictor.planes`` lists them:
L/50 - 1 first) and gets (N, 2, T, T) of ab/110 back. :class:`GeneratorPredictor` is a
small picklable description (checkpoint path + digest + device settings); the model itself
is loaded on first use in each Dask worker process and cached by digest, never pickled
into tasks.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from tilecolor.core.errors import ConfigError
from tilecolor.core.planes import L_ONLY
from tilecolor.model.checkpoint import (
    check_weights,
    input_planes,
    load_generator,
    read_metadata,
    resolve,
)
from tilecolor.model.hardware import cpu_has_native_bf16


class Device(StrEnum):
    """Where the generator runs (``--device``); ``cuda`` tasks ask for the GPU resource."""

    CPU = "cpu"
    CUDA = "cuda"


class Precision(StrEnum):
    """The generator's arithmetic (``--precision``); ``auto`` picks one for the device
    (:func:`resolve_precision`)."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


PRECISIONS = tuple(p.value for p in Precision)

_CACHE: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class GeneratorPredictor:
    """Picklable handle on a checkpoint's generator.

    Parameters
    ----------
    checkpoint : str
        Checkpoint directory.
    digest : str
        SHA-256 of its weights (the cache key and part of the run fingerprint).
    device : {"cpu", "cuda"}
    precision : {"fp32", "bf16", "fp16"}
        Autocast dtype (:func:`resolve_precision`); fp16 on CUDA only.
    threads : int or None
        torch intra-op threads per worker process (Dask nannies set OMP_NUM_THREADS=1,
        so this must be set explicitly to use more than one core).
    """

    checkpoint: str
    digest: str
    device: str = "cpu"
    precision: str = "fp32"
    threads: int | None = None
    multiple: int = 1  #: tile sides must be multiples of this (2**depth)
    planes: tuple[str, ...] = L_ONLY  #: the checkpoint's input planes, in batch order

    def _model(self):
        import torch

        from tilecolor.model.nets import for_inference

        key = (self.digest, self.device)
        model = _CACHE.get(key)
        if model is None:
            with _LOCK:
                model = _CACHE.get(key)
                if model is None:
                    if self.threads:
                        torch.set_num_threads(self.threads)
                    model, _ = load_generator(self.checkpoint)
                    model = for_inference(model).to(self.device)
                    _CACHE[key] = model
        return model

    def load(self) -> int:
        """Load (and so fully check) the generator in this process; returns its tile
        multiple. The pipeline runs this on a worker before submitting images, and a
        worker plugin runs it in a thread as each worker starts (cluster.preload)."""
        return int(self._model().spec.multiple)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        model = self._model()
        # OpenMP thread counts are per calling thread, and a Dask worker may run this task
        # on any of its task threads (whose OMP_NUM_THREADS=1 came from the nanny)
        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            if self.device.startswith("cuda"):
                x = x.pin_memory().to(self.device, non_blocking=True)
                x = x.contiguous(memory_format=torch.channels_last)
                dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
                with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                    y = model(x)
                return y.float().contiguous().cpu().numpy()
            # NHWC activations (the weights are channels_last too); (N, 2, T, T) back out
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                y = model(x.contiguous(memory_format=torch.channels_last))
            return y.float().contiguous().numpy()


def make_predictor(checkpoint: str | Path, *, device: str = "cpu", precision: str = "fp32",
                   threads: int | None = None, validate: bool = True) -> GeneratorPredictor:
    """Check a checkpoint on the driver (fails early, with CheckpointError) and describe it.

    ``validate`` loads the weights once here, so a checkpoint whose tensors do not match
    its architecture is reported before any task runs. Without it only the torch-free
    checks run (metadata, SHA-256, safetensors header: :func:`check_weights`) and the
    caller loads the model where it runs (``tilecolor run`` does it on its workers with
    :meth:`GeneratorPredictor.load`, while the cluster starts).
    """
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device must be cpu or cuda, got device={device!r}")
    precision = resolve_precision(device, precision)
    path = resolve(checkpoint)
    if validate:  # load_generator checked the weights against this digest
        model, meta = load_generator(path)
        multiple, digest = model.spec.multiple, meta["sha256"]
    else:
        digest = check_weights(path)
        meta = read_metadata(path)
        multiple = 2 ** int(meta["architecture"].get("depth", 0))
    return GeneratorPredictor(str(path.resolve()), digest, device, precision, threads,
                              multiple, input_planes(meta))


def resolve_precision(device: str, precision: str = "auto") -> Precision:
    """The generator's arithmetic. ``auto`` is bf16 on CUDA and on a CPU with native bf16
    (AVX512_BF16 or AMX, where it is faster than fp32), fp32 on other
    CPUs (where bf16 is emulated and slower). bf16 keeps fp32's range, so it cannot
    overflow where fp16 could; fp16 runs on CUDA only."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be auto, fp32, bf16 or fp16, got "
                          f"precision={precision!r}")
    if precision == Precision.AUTO:
        native = device.startswith("cuda") or cpu_has_native_bf16()
        return Precision.BF16 if native else Precision.FP32
    if precision == Precision.FP16 and not device.startswith("cuda"):
        raise ConfigError("precision fp16 needs device cuda (the CPU path runs fp32 or bf16)")
    return Precision(precision)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def default_threads(workers: int) -> int:
    """torch threads per worker: the machine's cores shared evenly by the worker processes."""
    return max(1, available_cores() // max(1, workers))


def default_batch_size(device: str, requested: int | None = None) -> int:
    """``requested``, or the default tiles per generator call: 8 on CPU (with NHWC
    activations 8 ran ~10 % faster than 16 or 32 on the 2-core dev machine: the activations
    stay in cache), 32 on CUDA: 9.0-9.7k tiles/s in bf16 on the H200 in three runs, while
    64 and 128 gave 12-13k in one run and 2.0-2.7k in others (BENCHMARKS.md)."""
    if requested is not None:
        return requested
    return 8 if device == "cpu" else 32
