"""The MAP task: the generator run on every tile a block owns, in batches, summing w * ab over
the block's footprint.

The chunk's interior, which no other block's tiles reach, is finished here (divided by the
separable weight sum and composed into RGB with the original L); the bands a neighbour also
reaches (less than a tile wide) go to the working store as partial sums for
:mod:`tilecolor.engine.blend`. For a TIFF output whose chunk no other block reaches, the
task also encodes the chunk, reading its gray straight from a TIFF input.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from tilecolor.core.blending import Blend
from tilecolor.core.color import (
    compiled_kernels,
    gray_to_input,
    input_table,
    lightness_to_input,
)
from tilecolor.core.planes import L_ONLY, takes_hint
from tilecolor.core.tiling import (
    Plan,
    interior,
    tile_origins,
)
from tilecolor.engine.blend import encode_chunk, finished_by_map, put_blended
from tilecolor.engine.hints import HintField, hint_planes
from tilecolor.engine.store import Modes, WorkStore
from tilecolor.engine.tiles import NetInputs, Predict, accumulate, pad_to_tile
from tilecolor.engine.tiles import windows as _windows
from tilecolor.io.read import ImageInfo, read_tiff_region

#: Seconds between a map task's looks for the driver's thread hint (a file read: a CPU
#: batch takes ~0.5 s, a CUDA one a few ms, and the store may sit on a network file system)
HINT_EVERY = 0.25


def map_block(store: WorkStore, plan: Plan, blend: Blend, r: int, c: int, batch_size: int,
              predict: Predict, *deps, source: ImageInfo | None = None,
              planes: tuple[str, ...] = L_ONLY, hint: HintField | None = None) -> dict:
    """Run the generator on every tile block (r, c) owns; finish the chunk's interior and
    write the partial sums of the bands its neighbours also reach. The gray comes from the
    working store's ``L``, or straight from the input TIFF ``source`` where given (a chunk
    nothing else reads it for: no ingest task). Each tile's input is ``planes``; the hint
    planes come from ``hint`` (a field on this plan's grid: :meth:`HintField.on_grid`),
    or are 0 without one. A :class:`GeneratorPredictor` is switched to more torch threads
    from the next batch on once the store holds that hint (:meth:`WorkStore.set_threads`:
    cores fell idle at the end of the run)."""
    t0 = time.perf_counter()
    modes = store.modes
    by, bx = plan.rows[r], plan.cols[c]
    oy = tile_origins(plan.height, plan.tile, plan.stride)[by.first : by.last]
    ox = tile_origins(plan.width, plan.tile, plan.stride)[bx.first : bx.last]
    wy = _windows(plan.height, plan.tile, plan.stride, blend)[by.first : by.last]
    wx = _windows(plan.width, plan.tile, plan.stride, blend)[bx.first : bx.last]
    if len(oy) == 0 or len(ox) == 0:  # a last block can own no tile: the one before covers it
        store.mark_done("map", r, c)
        return {"tiles": 0, "seconds": time.perf_counter() - t0, "generator_seconds": 0.0,
                "generator_cpu_seconds": 0.0}
    inputs = _footprint_inputs(store, modes, plan, by, bx, source, planes, hint)
    shape = inputs.shape
    # where the owned tiles cut the footprint exactly (stride = tile), each sum is a single
    # tile's value: written, not added to zeros (a 32 MB fill and a read less per block)
    cut = _cuts(oy - by.start, plan.tile, shape[0]) and _cuts(ox - bx.start, plan.tile,
                                                               shape[1])
    acc, stats = accumulate(inputs, oy - by.start, ox - bx.start, wy, wx, plan.tile,
                            batch_size, predict, cut=cut, refresh=_thread_hint(store, predict))
    gray = inputs.gray
    acc = acc[:, : by.fp_len, : bx.fp_len]
    iy, ix = interior(plan.rows, r), interior(plan.cols, c)
    inner = (slice(iy.start - by.start, iy.stop - by.start),
             slice(ix.start - bx.start, ix.stop - bx.start))
    whole = finished_by_map(modes, plan, r, c)
    if iy.stop > iy.start and ix.stop > ix.start:
        rgb = put_blended(store, plan, blend, (iy, ix), acc[:, inner[0], inner[1]],
                           None if gray is None else gray[inner], keep=not whole)
        if whole:
            encode_chunk(store, plan, r, c, rgb)
            store.mark_done("reduce", r, c)
    _write_bands(store, acc, r, c, inner)
    store.mark_done("map", r, c)
    return {"tiles": stats.tiles, "seconds": time.perf_counter() - t0,
            "generator_seconds": stats.generator_seconds,
            "generator_cpu_seconds": stats.generator_cpu_seconds}


def _footprint_inputs(store: WorkStore, modes: Modes, plan: Plan, by, bx,
                      source: ImageInfo | None, planes: tuple[str, ...],
                      hint: HintField | None) -> NetInputs:
    """The network input planes over block (by, bx)'s footprint on ``plan``'s grid."""
    footprint = (slice(by.start, by.fp_stop), slice(bx.start, bx.fp_stop))
    gray, table, net_in = None, None, None
    if modes.factor > 1:  # reduced lightness, already L*
        net_in = lightness_to_input(store.array("Ls")[footprint])
    else:
        gray = (store.array("L")[footprint] if source is None else
                read_tiff_region(source.path, by.start, by.fp_stop, bx.start, bx.fp_stop,
                                 page=source.page))
        table = _gather_table(gray, plan.tile)
        if table is None:
            net_in = gray_to_input(gray)
    if net_in is not None:  # an axis shorter than a tile is reflect-padded up to it
        net_in = pad_to_tile(net_in, plan.tile)
    planes_hint = None
    if hint is not None and takes_hint(planes):
        planes_hint = pad_to_tile(hint_planes(store, hint, (by.start, by.fp_stop),
                                              (bx.start, bx.fp_stop)), plan.tile)
    shape = net_in.shape if net_in is not None else gray.shape
    return NetInputs(planes, shape, gray=gray, table=table, lightness=net_in,
                     hint=planes_hint)


def _thread_hint(store: WorkStore, predict: Predict):
    """For a :class:`GeneratorPredictor` with a thread count: a function that, at most
    every HINT_EVERY seconds, swaps it for one with the driver's larger thread hint."""
    if not getattr(predict, "threads", None):  # a GeneratorPredictor's, None for others
        return None
    looked = -HINT_EVERY

    def refresh(current: Predict) -> Predict:
        nonlocal looked
        if time.perf_counter() - looked < HINT_EVERY:  # not every GPU batch
            return current
        looked = time.perf_counter()
        if (hint := store.threads()) and hint > current.threads:
            return replace(current, threads=hint)  # cores fell idle
        return current

    return refresh


def _cuts(origins: np.ndarray, tile: int, length: int) -> bool:
    """Whether tiles at ``origins`` cover [0, length) exactly once."""
    return bool(origins[0] == 0 and origins[-1] + tile == length
                and (np.diff(origins) == tile).all())


def _gather_table(gray: np.ndarray, tile: int) -> np.ndarray | None:
    """The gray level -> network input table when batches can be gathered straight from
    ``gray`` (integer levels, compiled kernels, no axis shorter than a tile), else None.
    That skips a float32 copy of the footprint and a copy of each batch out of it."""
    kernels = compiled_kernels()
    if kernels is None or gray.dtype not in (np.uint8, np.uint16) or min(gray.shape) < tile:
        return None
    return input_table(gray.dtype)


def _write_bands(store: WorkStore, acc: np.ndarray, r: int, c: int,
                 inner: tuple[slice, slice]) -> None:
    """Store the partial sums of the footprint outside the interior ``inner`` (footprint
    coordinates): the rows above and below it, full width, in ``partial_rows``; the
    columns left and right of it, interior rows only, in ``partial_cols``. An empty
    interior along one axis (never for a block that owns a tile) puts all of it in one."""
    fy, fx = store.modes.footprint
    (a, b), (left, right) = (inner[0].start, inner[0].stop), (inner[1].start, inner[1].stop)
    fh, fw = acc.shape[1:]
    for name, pieces in (("partial_rows", ((0, a, 0, fw), (b, fh, 0, fw))),
                         ("partial_cols", ((a, b, 0, left), (a, b, right, fw)))):
        pieces = [(y0, y1, x0, x1) for y0, y1, x0, x1 in pieces if y1 > y0 and x1 > x0]
        partial = store.array(name, "r+") if pieces else None
        for y0, y1, x0, x1 in pieces:
            partial[:, r * fy + y0 : r * fy + y1, c * fx + x0 : c * fx + x1] = \
                acc[:, y0:y1, x0:x1]
