"""Shared fixtures: a tiny random generator checkpoint, real LocalClusters, image files."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from tilecolor.model.checkpoint import save_generator
from tilecolor.model.nets import GeneratorSpec, UNetGenerator


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A small random-init generator (tile multiple of 16) with trained-looking BN stats."""
    import torch

    torch.manual_seed(0)
    model = UNetGenerator(GeneratorSpec(width=4, depth=4, max_width=16))
    # give batch norm non-trivial running statistics, as a trained model has
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 1, 64, 64) * 2 - 1)
    return save_generator(tmp_path_factory.mktemp("ckpt") / "tiny", model.eval(), tile=64,
                          stride=32)


@pytest.fixture(scope="session")
def hinted_checkpoint(tmp_path_factory) -> Path:
    """A small random-init generator of the four planes L, hint a, hint b, hint mask."""
    import torch

    from tilecolor.core.planes import HINTED

    torch.manual_seed(1)
    model = UNetGenerator(GeneratorSpec(width=4, depth=4, max_width=16, in_channels=4))
    return save_generator(tmp_path_factory.mktemp("ckpt") / "hinted", model.eval(), tile=64,
                          stride=32, planes=HINTED)


@pytest.fixture(scope="session")
def client2():
    """A real LocalCluster with two worker processes."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        yield client


@pytest.fixture(scope="session")
def client1():
    """A real LocalCluster with one worker process."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        yield client


def smooth_image(h: int, w: int, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    """A gray image with structure at several scales (noise alone hides tiling bugs)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = (0.5 + 0.25 * np.sin(x / 7.0 + seed) * np.cos(y / 11.0)
           + 0.15 * np.sin((x + 2 * y) / 29.0) + 0.1 * rng.random((h, w)))
    maxval = np.iinfo(dtype).max
    return np.clip(img * maxval, 0, maxval).astype(dtype)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_cluster(address: str, security=None, timeout: float = 60) -> None:
    """Block until a scheduler at ``address`` answers and has a worker."""
    from distributed import Client

    deadline = time.monotonic() + timeout
    while True:
        try:
            with Client(address, security=security, timeout="5s") as c:
                c.wait_for_workers(1, timeout=timeout)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def write_input(directory: Path, img: np.ndarray, fmt: str = "tiff") -> Path:
    """``img`` as ``directory/in.tif`` (tiled 16 px where it fits) or ``in.png``."""
    import tifffile
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ("in.tif" if fmt == "tiff" else "in.png")
    if fmt == "tiff":
        tifffile.imwrite(path, img, tile=(16, 16) if min(img.shape) >= 16 else None)
    else:
        Image.fromarray(img).save(path)
    return path
