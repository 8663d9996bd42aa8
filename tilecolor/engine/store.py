"""The per-image working Zarr store.

Layout (one group per input image)::

    L         (H, W)                   the input's gray, chunked block x block
    partial_rows, partial_cols (2, nby*Fy, nbx*Fx)
                                       float32 sum(w * ab) over the bands of block (r, c)'s
                                       footprint that a neighbour's tiles also reach (its
                                       interior is finished by its own map task): the rows
                                       above and below the interior rows, full width, in
                                       ``partial_rows`` (chunks of PARTIAL_CHUNK rows), the
                                       columns left and right of the interior, interior rows
                                       only, in ``partial_cols`` (chunks of PARTIAL_CHUNK
                                       columns). Block (r, c) alone writes [r*Fy, r*Fy+fh) x
                                       [c*Fx, c*Fx+fw) of each (one writer per chunk).
    Ls, ab_small (h/k, w/k[, 2])       reduced L* and blended chroma (render_scale 1/k < 1)
    Lc        (H/g, W/g)               the context copy's L* in cells of g pixels, written
                                       by ingest block by block (context pass only:
                                       :class:`tilecolor.engine.hints.ContextPass`)
    context_ab, hint_ab (2, h', w')    the hint field every map task reads: the context
                                       pass's chroma, or a reference's (ab/110, one chunk)
    hint_done (1, 1) uint8             the hint field is written (the context pass is
                                       never recomputed on resume)
    ingest_done, map_done, reduce_done, compose_done  (nby, nbx) uint8
                                       explicit records of finished blocks per stage (a
                                       chunk equal to the fill value is never written, so
                                       "chunk exists" cannot be the done marker; zarr
                                       writes each chunk file atomically)
    rgb       (H, W, 3)                final pixels (or ``ab`` (H, W, 2) float32 Lab units)
    tiles/{r}.{c}.bin, rgb1 (H/2, W/2, 3)
                                       a TIFF output's tiles of levels 0 and 1, encoded by the
                                       task that finishes chunk (r, c), and its level-1
                                       pixels (``tiff_tiles`` stores only: the writer then
                                       copies bytes, :class:`tilecolor.io.tiff.ChunkedTiles`)
    pyramid/1, pyramid/2 ...           a TIFF output's reduced levels while it is written
                                       (by :func:`tilecolor.io.tiff.write_tiff`), then removed

The weight sum is not stored: it is separable and recomputed from the geometry.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from tilecolor.core.tiling import Plan, footprint_capacity
from tilecolor.io.atomic import write_atomic
from tilecolor.io.omezarr import WRITE_ALL
from tilecolor.io.pyramid import pyramid_shapes
from tilecolor.io.tiff import OUTPUT_TILE, chunk_aligned

# Scratch data is written once and read once or twice, on the critical path: lz4 for the
# gray input (faster than zarr's default zstd); no codec for the float32 partial sums nor
# for the RGB result, which lz4 barely shrinks at several times the cost of storing them
# raw (benchmarks/store_io.py). The disk estimate counts them raw.
_FAST = BloscCodec(cname="lz4", clevel=1, shuffle="shuffle")


STAGES = ("ingest", "map", "reduce", "compose")


#: Bumped when the meaning of the arrays changes: a store of another layout is not resumed.
LAYOUT = 5
#: Width of the partial sums' chunks across a band (bands are less than a tile wide).
PARTIAL_CHUNK = 64


def output_chunks(block: int) -> tuple[int, int]:
    """(rows, columns) of an output (or reduced chroma) array's chunks: one TIFF tile row
    high (when blocks are multiples of it) and a block wide, so a block's interior (map
    task) and its border bands (blend task) share few chunks (a shared chunk is written
    twice) and the writer's strips of 256 rows read whole chunks. Against 1024 wide, half
    the files (zarr's cost per chunk is about 1 ms) and half the deletion at the end."""
    return (256 if block % 256 == 0 else block), block


def _rounded(length: int, chunk: int) -> int:
    return -(-length // chunk) * chunk


class Output(StrEnum):
    """What a store's finished pixels are: RGB composed with L, or chroma (tests, eval)."""

    RGB = "rgb"
    AB = "ab"


@dataclass(frozen=True)
class Modes:
    """How an image's tasks use its working store, decided on the driver when the store is
    planned (:meth:`of`) and handed to every task with the store's handle. The store's
    attrs record the same values, for resume checks only: no task reads them back."""

    block: int  #: full-resolution block side (the writer's rows of chunks)
    factor: int = 1  #: chroma rendered on a grid ``factor`` times coarser (render_scale 1/k)
    output: Output = Output.RGB
    tiff_tiles: bool = False  #: the tasks finishing each chunk encode its TIFF tiles
    level1: bool = False  #: ... and its level-1 (half-size) pixels and tiles
    footprint: tuple[int, int] = (0, 0)  #: (Fy, Fx): where block (r, c)'s partial sums start

    @classmethod
    def of(cls, plan: Plan, render: Plan | None = None, output: str = "rgb",
           tiff_tiles: bool = False) -> Modes:
        """The modes of a store for ``plan`` (``render``: the generator's grid, when chroma
        is rendered at reduced scale) with ``output`` pixels and, for a TIFF output,
        ``tiff_tiles``."""
        render = render or plan
        fy, fx = footprint_capacity(render.rows), footprint_capacity(render.cols)
        qy, qx = min(PARTIAL_CHUNK, fy), min(PARTIAL_CHUNK, fx)
        # a block's partial sums start on a chunk edge
        return cls(block=plan.block, factor=plan.block // render.block, output=Output(output),
                   tiff_tiles=tiff_tiles,
                   level1=tiff_tiles and len(pyramid_shapes(plan.height, plan.width)) > 1,
                   footprint=(_rounded(fy, qy), _rounded(fx, qx)))


class WorkStore:
    """Handle on a working store and its :class:`Modes`; cheap to pickle (the path and
    the modes)."""

    def __init__(self, path: str | Path, modes: Modes | None = None) -> None:
        self.path = Path(path)
        self._modes = modes

    def __reduce__(self):
        return (WorkStore, (str(self.path), self._modes))

    @property
    def modes(self) -> Modes:
        """The modes the driver planned this store with."""
        if self._modes is None:
            raise ValueError(f"working store {self.path} was opened without its modes")
        return self._modes

    @classmethod
    def create(cls, path: str | Path, plan: Plan, dtype: str, *, output: str = "rgb",
               attrs: dict[str, Any] | None = None, render: Plan | None = None,
               tiff_tiles: bool = False,
               context_copy: tuple[int, int, int] | None = None) -> WorkStore:
        """Create (replacing any previous content) the arrays for one image.

        ``render`` is the generator's grid when chroma is rendered at reduced scale
        (``Settings.render_plan``); its blocks match ``plan``'s one to one. ``tiff_tiles``:
        the tasks that finish each output chunk also encode its TIFF tiles (levels 0 and 1;
        needs ``rgb`` output and blocks a multiple of ``2 * OUTPUT_TILE``).
        ``context_copy`` = (height, width, cells per block side) of the context copy ``Lc``
        (:attr:`tilecolor.engine.hints.ContextPass.copy_shape`), or None without a context pass.
        """

        if output not in tuple(Output):
            raise ValueError(f"output must be 'rgb' or 'ab', got {output!r}")
        output = Output(output)
        if tiff_tiles and (output != "rgb" or not chunk_aligned(plan.block)):
            raise ValueError(f"tiff_tiles needs rgb output and a block that is a multiple of "
                             f"{2 * OUTPUT_TILE}, got {output!r} and {plan.block}")
        path = Path(path)
        group = zarr.open_group(str(path), mode="w")
        render = render or plan
        k = plan.block // render.block
        rows, cols = render.rows, render.cols
        modes = Modes.of(plan, render, output, tiff_tiles)
        fy, fx = modes.footprint
        qy, qx = min(PARTIAL_CHUNK, fy), min(PARTIAL_CHUNK, fx)
        h, w, b = plan.height, plan.width, plan.block
        group.create_array("L", shape=(h, w), chunks=(min(b, h), min(b, w)), dtype=dtype,
                           fill_value=0, compressors=_FAST)
        if k > 1:
            hs, ws, bs = render.height, render.width, render.block
            group.create_array("Ls", shape=(hs, ws), chunks=(min(bs, hs), min(bs, ws)),
                               dtype="float32", fill_value=0.0, compressors=_FAST)
            cy, cx = output_chunks(bs)
            group.create_array("ab_small", shape=(hs, ws, 2),
                               chunks=(min(cy, hs), min(cx, ws), 2), dtype="float32",
                               fill_value=0.0, compressors=_FAST)
        for name, chunks in (("partial_rows", (2, qy, fx)), ("partial_cols", (2, fy, qx))):
            group.create_array(name, shape=(2, len(rows) * fy, len(cols) * fx),
                               chunks=chunks, dtype="float32", fill_value=0.0,
                               compressors=None)
        if context_copy is not None:
            hc, wc, bc = context_copy
            group.create_array("Lc", shape=(hc, wc), chunks=(min(bc, hc), min(bc, wc)),
                               dtype="float32", fill_value=0.0, compressors=_FAST)
        for stage in STAGES:
            group.create_array(f"{stage}_done", shape=(len(rows), len(cols)), chunks=(1, 1),
                               dtype="uint8", fill_value=0)
        group.create_array("hint_done", shape=(1, 1), chunks=(1, 1), dtype="uint8",
                           fill_value=0)
        cy, cx = output_chunks(b)
        if output == "rgb":
            group.create_array("rgb", shape=(h, w, 3), chunks=(min(cy, h), min(cx, w), 3),
                               dtype=dtype, fill_value=0, compressors=None)
        else:
            group.create_array("ab", shape=(h, w, 2), chunks=(min(cy, h), min(cx, w), 2),
                               dtype="float32", fill_value=0.0)
        shapes = pyramid_shapes(h, w)
        if modes.level1:
            (h1, w1), (cy, cx) = shapes[1], output_chunks(b // 2)
            group.create_array("rgb1", shape=(h1, w1, 3), chunks=(min(cy, h1), min(cx, w1), 3),
                               dtype=dtype, fill_value=0, compressors=None)
        if tiff_tiles:
            (path / "tiles").mkdir()
        group.attrs.update({"footprint": [fy, fx], "output": str(output), "render_factor": k,
                            "layout": LAYOUT, "block": b, "tiff_tiles": tiff_tiles,
                            "level1": modes.level1,
                            **(attrs or {})})
        return cls(path, modes)

    def array(self, name: str, mode: str = "r") -> zarr.Array:
        array = zarr.open_array(str(self.path / name), mode=mode)
        return array.with_config(WRITE_ALL) if mode != "r" else array

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(zarr.open_group(str(self.path), mode="r").attrs)

    def put_small(self, name: str, values: np.ndarray) -> None:
        """Store a small array whole, as one chunk (replacing any previous one)."""
        values = np.ascontiguousarray(values)
        array = zarr.open_group(str(self.path), mode="r+").create_array(
            name, shape=values.shape, chunks=values.shape, dtype=values.dtype,
            fill_value=0, overwrite=True)
        array.with_config(WRITE_ALL)[...] = values

    def blocks_done(self, stage: str = "map") -> np.ndarray:
        """(nby, nbx) bool: which blocks finished ``stage``."""
        return self.array(f"{stage}_done")[:] > 0

    def mark_done(self, stage: str, r: int, c: int) -> None:
        self.array(f"{stage}_done", "r+")[r, c] = 1

    def exists(self) -> bool:
        return (self.path / "zarr.json").is_file()

    #: the file :meth:`set_threads` writes (not part of the Zarr hierarchy)
    THREADS = "torch-threads"

    def set_threads(self, n: int) -> None:
        """Tell this image's running generator tasks to use ``n`` torch threads from their
        next batch on (the driver's hint once cores fell idle: see
        :func:`tilecolor.batch.run.run_jobs`)."""
        write_atomic(self.path / self.THREADS, f"{int(n)}\n")

    def threads(self) -> int | None:
        """The hint :meth:`set_threads` left, or None."""
        try:
            return int((self.path / self.THREADS).read_text())
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        """Delete the store. Its files are unlinked by several threads first: once written
        back to disk, each unlink waits on the file system (ext4 frees the extents), and
        the removal is on the run's critical path."""
        from concurrent.futures import ThreadPoolExecutor

        files = [os.path.join(d, f) for d, _, names in os.walk(self.path) for f in names]
        if len(files) > 64:
            with ThreadPoolExecutor(8, thread_name_prefix="tilecolor-rm") as pool:
                pool.map(_unlink, files)  # leaving the block waits for every unlink
        shutil.rmtree(self.path, ignore_errors=True)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)

