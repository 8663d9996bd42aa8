"""The write task: the finished ``rgb`` array streamed to the output file, row of chunks by
row of chunks as the tasks that finish them complete."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tilecolor.engine.store import WorkStore
from tilecolor.io.tiff import ChunkedTiles
from tilecolor.io.write import write_image


class PendingRows:
    """Block row -> names of the ``distributed.Variable`` s holding the futures of the
    tasks that still have to finish it (a future passed as an argument would make the
    writer wait for all of them before it starts; Variables survive a retried writer)."""

    def __init__(self, rows: dict[int, list[str]]) -> None:
        self.rows = rows


def write_output(store: WorkStore, dest: Path, fmt: str,
                 pending: PendingRows | None = None, block: int = 0) -> str:
    """Stream the ``rgb`` array to ``dest`` (atomically); a TIFF's reduced levels are
    staged in the store's ``pyramid`` group, which is removed once written.

    ``pending`` maps a block row (``block`` pixels high) to the tasks that still have to
    finish it (blend or compose): the writer then starts with the image and writes each row
    of output chunks as soon as it is done, while the generator works on the rows below,
    instead of after the whole image (TIFF and OME-Zarr; PNG and JPEG are written whole at
    the end). It waits outside the worker's thread pool (``worker_client`` secedes), and a
    failed chunk task fails the writer with that task's error.
    """
    rgb = store.array("rgb")
    modes = store.modes
    encoded = fmt == "tiff" and modes.tiff_tiles

    def write(source, wait_rows=None) -> str:
        chunked = ChunkedTiles(store.path / "tiles", rgb.shape[:2], modes.block,
                               store.array("rgb1") if modes.level1 else None,
                               wait_rows) if encoded else None
        write_image(source, Path(dest), fmt, scratch=store.path / "pyramid",
                    tmp_dir=store.path, chunked=chunked)
        return str(dest)

    if pending is None or not pending.rows:
        return write(rgb)
    from distributed import Variable, worker_client

    with worker_client() as client:
        def wait_rows(first: int, last: int) -> None:
            for row in range(first, last + 1):
                for name in pending.rows.pop(row, ()):
                    Variable(name, client=client).get().result()

        return write(_RowsWhenReady(rgb, block, wait_rows), wait_rows)


class _RowsWhenReady:
    """A read-only view of an (H, W, 3) array whose ``[y0:y1]`` first waits until the block
    rows it covers are finished."""

    def __init__(self, array, block: int, wait_rows: Callable[[int, int], None]) -> None:
        self.array, self.block, self.wait_rows = array, block, wait_rows
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, key):
        rows = key[0] if isinstance(key, tuple) else key
        if isinstance(rows, slice) and rows.step in (None, 1):
            start, stop, _ = rows.indices(self.shape[0])
            if stop > start:
                self.wait_rows(start // self.block, (stop - 1) // self.block)
        else:  # anything else reads the whole array
            self.wait_rows(0, -(-self.shape[0] // self.block) - 1)
        return self.array[key]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)
