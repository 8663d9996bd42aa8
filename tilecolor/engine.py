"""The Dask graph: ingest -> MAP (one task per block) -> REDUCE (one per output chunk) -> write.

MAP runs ``predict`` over the tiles a block owns, in batches, and sums w * ab over the
block's footprint. The chunk's interior, which no other block's tiles reach, is finished
there: divided by the separable weight sum and composed into RGB with the original L. Only
the bands a neighbour also reaches (less than a tile wide) go to the working store as
partial sums. REDUCE finishes the border of an output chunk (the bands before its interior)
from the partial sums of the blocks that reach it (its own and the ones before it in each
axis, so at most four); with stride = tile and blocks a multiple of it there is none, and
for a TIFF output (blocks of whole TIFF tiles) the map task also encodes the chunk, reading
its gray straight from a TIFF input: such a chunk has no ingest or blend task.
Tasks exchange data through the Zarr store and return only small metadata, so nothing
image-sized passes through Dask's memory or the driver.

The generator's input planes are ``Settings.planes`` (the checkpoint's). A generator that
takes a hint gets one hint field per image (:mod:`tilecolor.hints`): the global context
pass's chroma (one task after ingest, before every map task) or a reference image's.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tilecolor.core.blending import Blend
from tilecolor.core.color import (
    AB_SCALE,
    compiled_kernels,
    compose_planes,
    compose_rgb,
    gray_to_input,
    gray_to_lightness,
    input_table,
    lightness_to_input,
)
from tilecolor.core.errors import ConfigError
from tilecolor.core.planes import L_ONLY, check_planes, takes_hint
from tilecolor.core.resample import downsample_mean, reduced_length, source_span, upsample_bilinear
from tilecolor.core.tiling import (
    Plan,
    check_geometry,
    contributions,
    interior,
    self_contained,
    tile_origins,
)
from tilecolor.hints import (
    DEFAULT_CONTEXT,
    MAX_CONTEXT,
    ContextPass,
    HintField,
    Reference,
    add_to_copy,
    hint_planes,
    run_context,
    run_reference,
)
from tilecolor.io.pyramid import downsample
from tilecolor.io.read import ImageInfo, read_tiff_region, read_whole
from tilecolor.io.tiff import ChunkedTiles, encode_tiles, save_chunk_tiles
from tilecolor.io.write import write_image
from tilecolor.store import STAGES, WorkStore
from tilecolor.tiles import NetInputs, Predict, accumulate, pad_to_tile
from tilecolor.tiles import weight_sum as _weight_sum
from tilecolor.tiles import windows as _windows

#: What a map task's hint comes from: a field already in the store, or a task that makes it
Hint = ContextPass | Reference | HintField


@dataclass(frozen=True)
class Settings:
    """How one image is tiled, blended and run."""

    tile: int = 256
    stride: int = 128
    blend: Blend = Blend.COSINE
    block: int = 2048
    batch_size: int = 16
    resources: dict[str, float] | None = field(default=None, hash=False)
    render_scale: float = 1.0  #: predict chroma at this scale (1/k) and upsample it
    planes: tuple[str, ...] = L_ONLY  #: the generator's input planes (its checkpoint's)
    #: longer side of the context copy (:mod:`tilecolor.hints`); 0: no context pass. Used
    #: only by a generator that takes a hint.
    context: int = DEFAULT_CONTEXT

    def __post_init__(self) -> None:
        object.__setattr__(self, "blend", Blend(self.blend))
        object.__setattr__(self, "planes", check_planes(self.planes))
        if not 0 <= self.context <= MAX_CONTEXT:
            raise ConfigError(f"context must be 0 (off) to {MAX_CONTEXT} (one task holds the "
                              f"context copy), got context={self.context}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got batch_size={self.batch_size}")
        k = round(1 / self.render_scale) if self.render_scale > 0 else 0
        if k < 1 or abs(1 / k - self.render_scale) > 1e-6:
            raise ConfigError(f"render scale must be 1/k for an integer k >= 1 (1, 0.5, "
                              f"0.25...), got render_scale={self.render_scale}")
        if self.block % k:
            raise ConfigError(f"block must be a multiple of 1/render_scale={k}, "
                              f"got block={self.block}")
        check_geometry(self.tile, self.stride, self.block // k)

    @property
    def factor(self) -> int:
        """k: chroma is predicted on a grid k times coarser than the image."""
        return round(1 / self.render_scale)

    def plan(self, height: int, width: int) -> Plan:
        """Full-resolution blocks: ingest, output chunks."""
        return Plan(height, width, self.tile, self.stride, self.block)

    def render_plan(self, height: int, width: int) -> Plan:
        """The grid the generator runs on (the full one unless render_scale < 1); its
        blocks correspond one to one with the full-resolution blocks."""
        k = self.factor
        return Plan(reduced_length(height, k), reduced_length(width, k), self.tile,
                    self.stride, self.block // k)

    def context_pass(self, height: int, width: int) -> ContextPass | None:
        """The image's context pass: for a generator that takes a hint, unless ``context``
        is 0 (a reference image, when given, replaces it: :mod:`tilecolor.pipeline`)."""
        if not takes_hint(self.planes) or self.context == 0:
            return None
        return ContextPass.plan(height, width, self.context, self.block)


# ---------------------------------------------------------------- tasks (run on workers)

def ingest_region(info: ImageInfo, store: WorkStore, plan: Plan, r: int | None,
                  c: int | None, context: ContextPass | None = None) -> int:
    """Copy block (r, c) of the input's gray into ``L``; the whole image when r is None
    (PNG/JPEG are decoded whole anyway). With a ``context`` pass, also its cells of the
    context copy."""
    if r is None or c is None:
        pixels, (y0, x0) = read_whole(info), (0, 0)
    else:
        by, bx = plan.rows[r], plan.cols[c]
        y0, x0 = by.start, bx.start
        pixels = read_tiff_region(info.path, by.start, by.stop, bx.start, bx.stop,
                                  page=info.page)
    store.array("L", "r+")[y0 : y0 + pixels.shape[0], x0 : x0 + pixels.shape[1]] = pixels
    k = int(store.attrs.get("render_factor", 1))
    lightness = gray_to_lightness(pixels) if k > 1 or context is not None else None
    if context is not None:  # blocks are multiples of its step, as of k below
        add_to_copy(store, context, lightness, y0, x0)
    if k > 1:  # blocks are multiples of k, so the reduced cells never straddle two blocks
        small = downsample_mean(lightness, k)
        store.array("Ls", "r+")[y0 // k : y0 // k + small.shape[0],
                                x0 // k : x0 // k + small.shape[1]] = small
    ny, nx = plan.grid
    for rr, cc in ([(r, c)] if r is not None else [(i, j) for i in range(ny) for j in range(nx)]):
        store.mark_done("ingest", rr, cc)
    return int(pixels.size)


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
    attrs = store.attrs
    by, bx = plan.rows[r], plan.cols[c]
    oy = tile_origins(plan.height, plan.tile, plan.stride)[by.first : by.last]
    ox = tile_origins(plan.width, plan.tile, plan.stride)[bx.first : bx.last]
    wy = _windows(plan.height, plan.tile, plan.stride, blend)[by.first : by.last]
    wx = _windows(plan.width, plan.tile, plan.stride, blend)[bx.first : bx.last]
    if len(oy) == 0 or len(ox) == 0:  # a last block can own no tile: the one before covers it
        store.mark_done("map", r, c)
        return {"tiles": 0, "seconds": time.perf_counter() - t0, "generator_seconds": 0.0,
                "generator_cpu_seconds": 0.0}
    inputs = _footprint_inputs(store, attrs, plan, by, bx, source, planes, hint)
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
    whole = finished_by_map(attrs, plan, r, c)
    if iy.stop > iy.start and ix.stop > ix.start:
        rgb = _put_blended(store, attrs, plan, blend, (iy, ix), acc[:, inner[0], inner[1]],
                           None if gray is None else gray[inner], keep=not whole)
        if whole:
            _encode_chunk(store, attrs, plan, r, c, rgb)
            store.mark_done("reduce", r, c)
    _write_bands(store, attrs, acc, r, c, inner)
    store.mark_done("map", r, c)
    return {"tiles": stats.tiles, "seconds": time.perf_counter() - t0,
            "generator_seconds": stats.generator_seconds,
            "generator_cpu_seconds": stats.generator_cpu_seconds}


def _footprint_inputs(store: WorkStore, attrs: dict, plan: Plan, by, bx,
                      source: ImageInfo | None, planes: tuple[str, ...],
                      hint: HintField | None) -> NetInputs:
    """The network input planes over block (by, bx)'s footprint on ``plan``'s grid."""
    footprint = (slice(by.start, by.fp_stop), slice(bx.start, bx.fp_stop))
    gray, table, net_in = None, None, None
    if int(attrs.get("render_factor", 1)) > 1:  # reduced lightness, already L*
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


def finished_by_map(attrs: dict, plan: Plan, r: int, c: int) -> bool:
    """Whether chunk (r, c) is finished and encoded by its block's map task: a TIFF encoded
    chunk by chunk (``attrs`` of the store), chroma at full scale, and no other block
    reaching the chunk. Its RGB never goes through the store, and it has no blend task."""
    return (bool(attrs.get("tiff_tiles")) and int(attrs.get("render_factor", 1)) == 1
            and self_contained(plan.rows, r) and self_contained(plan.cols, c))


def _cuts(origins: np.ndarray, tile: int, length: int) -> bool:
    """Whether tiles at ``origins`` cover [0, length) exactly once."""
    return bool(origins[0] == 0 and origins[-1] + tile == length
                and (np.diff(origins) == tile).all())


def _gather_table(gray: np.ndarray, tile: int) -> np.ndarray | None:
    """The gray level -> network input table when batches can be gathered straight from
    ``gray`` (integer levels, compiled kernels, no axis shorter than a tile), else None.
    That skips a float32 copy of the footprint and a copy of each batch out of it (23 ms
    a 2048^2 block, against 6: BENCHMARKS.md)."""
    kernels = compiled_kernels()
    if kernels is None or gray.dtype not in (np.uint8, np.uint16) or min(gray.shape) < tile:
        return None
    return input_table(gray.dtype)


def _finish(sums: np.ndarray, plan: Plan, blend: Blend, ys: slice, xs: slice) -> np.ndarray:
    """(2, h, w) float32 sum(w * ab) over region (ys, xs) -> (h, w, 2) chroma in Lab units,
    a view of ``sums`` (scaled in place, in float32: a float64 pass cost 60 ms a block)."""
    wy = _weight_sum(plan.height, plan.tile, plan.stride, blend)[ys]
    wx = _weight_sum(plan.width, plan.tile, plan.stride, blend)[xs]
    # two broadcast passes, not an (h, w) outer product: that was a fresh 16 MB array per
    # block, page-faulted in each time (0.19 s of 0.29 s for 16 blocks of 2048^2)
    sums *= (AB_SCALE / wy).astype(np.float32)[:, None]
    sums *= (1.0 / wx).astype(np.float32)
    return np.moveaxis(sums, 0, -1)


def _write_bands(store: WorkStore, attrs: dict, acc: np.ndarray, r: int, c: int,
                 inner: tuple[slice, slice]) -> None:
    """Store the partial sums of the footprint outside the interior ``inner`` (footprint
    coordinates): the rows above and below it, full width, in ``partial_rows``; the
    columns left and right of it, interior rows only, in ``partial_cols``. An empty
    interior along one axis (never for a block that owns a tile) puts all of it in one."""
    fy, fx = store.footprint(attrs)
    (a, b), (left, right) = (inner[0].start, inner[0].stop), (inner[1].start, inner[1].stop)
    fh, fw = acc.shape[1:]
    for name, pieces in (("partial_rows", ((0, a, 0, fw), (b, fh, 0, fw))),
                         ("partial_cols", ((a, b, 0, left), (a, b, right, fw)))):
        pieces = [(y0, y1, x0, x1) for y0, y1, x0, x1 in pieces if y1 > y0 and x1 > x0]
        partial = store.array(name, "r+") if pieces else None
        for y0, y1, x0, x1 in pieces:
            partial[:, r * fy + y0 : r * fy + y1, c * fx + x0 : c * fx + x1] = \
                acc[:, y0:y1, x0:x1]


def reduce_chunk(store: WorkStore, plan: Plan, blend: Blend, r: int, c: int, *deps) -> int:
    """Finish output chunk (r, c) outside its interior: add the partial sums of the blocks
    that reach it, divide, compose. Returns the number of pixels finished."""
    attrs = store.attrs
    by, bx = plan.rows[r], plan.cols[c]
    iy, ix = interior(plan.rows, r), interior(plan.cols, c)
    fy, fx = store.footprint(attrs)
    pixels = 0
    # the rows above the interior (full width), then the columns left of it: bands of
    # the blocks that reach them, stored by _write_bands in partial_rows and partial_cols
    for name, ys, xs in (("partial_rows", slice(by.start, iy.start), slice(bx.start, bx.stop)),
                         ("partial_cols", slice(iy.start, by.stop), slice(bx.start, ix.start))):
        if ys.stop <= ys.start or xs.stop <= xs.start:
            continue
        partial = store.array(name)
        ab = np.zeros((2, ys.stop - ys.start, xs.stop - xs.start), dtype=np.float32)
        for cy in contributions(plan.rows, r, ys):
            for cx in contributions(plan.cols, c, xs):
                ab[:, cy.dst, cx.dst] += partial[
                    :, cy.block * fy + cy.src.start : cy.block * fy + cy.src.stop,
                    cx.block * fx + cx.src.start : cx.block * fx + cx.src.stop]
        _put_blended(store, attrs, plan, blend, (ys, xs), ab)
        pixels += ab.shape[1] * ab.shape[2]
    if attrs.get("tiff_tiles") and int(attrs.get("render_factor", 1)) == 1:
        _encode_chunk(store, attrs, plan, r, c)  # the chunk is final now
    store.mark_done("reduce", r, c)
    return pixels


def _encode_chunk(store: WorkStore, attrs: dict, plan: Plan, r: int, c: int,
                  rgb: np.ndarray | None = None) -> None:
    """Encode finished output chunk (r, c) (its pixels ``rgb``, read from the store when not
    given) as the TIFF's tiles of levels 0 and 1, and store its level-1 pixels, for the
    writer to copy (:class:`tilecolor.io.tiff.ChunkedTiles`). Deflating in the tasks that
    finish the chunks runs on every worker at once; in the writer alone it was one thread
    for the whole image (about 20 MP/s, what a GPU run was held to: BENCHMARKS.md)."""
    by, bx = plan.rows[r], plan.cols[c]
    if rgb is None:
        rgb = store.array("rgb")[by.start : by.stop, bx.start : bx.stop]
    levels = [encode_tiles(rgb)]
    if attrs.get("level1"):
        small = downsample(rgb)
        y0, x0 = by.start // 2, bx.start // 2
        store.array("rgb1", "r+")[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
        levels.append(encode_tiles(small))
    save_chunk_tiles(store.path / "tiles" / f"{r}.{c}.bin", levels)


def _put_blended(store: WorkStore, attrs: dict, plan: Plan, blend: Blend,
                 region: tuple[slice, slice], sums: np.ndarray, gray: np.ndarray | None = None,
                 keep: bool = True) -> np.ndarray | None:
    """Finish the blended sums (2, h, w) of ``region`` on the generator's grid and store
    them: as ``ab_small`` when it is the reduced one (upsampled later by
    :func:`compose_chunk`), as ``ab``, or composed with the original L (``gray``, read from
    the store when not given) into ``rgb``, divided by the weights on the way (one pass,
    :func:`tilecolor.core.color.compose_planes`). Returns the RGB pixels (None otherwise);
    ``keep=False`` leaves them out of the store (the caller encodes them)."""
    ys, xs = region
    reduced = int(attrs.get("render_factor", 1)) > 1
    if reduced or attrs["output"] == "ab":
        store.array("ab_small" if reduced else "ab", "r+")[region] = \
            _finish(sums, plan, blend, ys, xs)
        return None
    wy = _weight_sum(plan.height, plan.tile, plan.stride, blend)[ys]
    wx = _weight_sum(plan.width, plan.tile, plan.stride, blend)[xs]
    out = store.array("rgb", "r+") if keep else store.array("rgb")
    gray = store.array("L")[region] if gray is None else gray
    rgb = compose_planes(gray, sums[0], sums[1], out.dtype,
                         (AB_SCALE / wy).astype(np.float32), (1.0 / wx).astype(np.float32))
    if keep:
        out[region] = rgb
    return rgb


def _put_chroma(store: WorkStore, output: str, region: tuple[slice, slice], ab: np.ndarray,
                gray: np.ndarray | None = None) -> np.ndarray | None:
    """Store full-resolution chroma of ``region``: as ``ab`` (``output`` "ab": tests, eval)
    or composed with the original L (``gray``, read from the store when not given) into
    ``rgb``; returns the RGB pixels (None for ``ab``)."""
    if output == "ab":
        store.array("ab", "r+")[region] = ab
        return None
    out = store.array("rgb", "r+")
    gray = store.array("L")[region] if gray is None else gray
    rgb = compose_rgb(gray, ab, out.dtype)
    out[region] = rgb
    return rgb


def compose_chunk(store: WorkStore, plan: Plan, small: Plan, k: int, r: int, c: int,
                  *deps) -> int:
    """Upsample the blended reduced chroma under full-resolution chunk (r, c) and compose
    it with the original L (render_scale < 1 only)."""
    by, bx = plan.rows[r], plan.cols[c]
    ylo, yhi = source_span(by.start, by.stop, k, small.height)
    xlo, xhi = source_span(bx.start, bx.stop, k, small.width)
    src = store.array("ab_small")[ylo:yhi, xlo:xhi]
    ab = upsample_bilinear(src, (ylo, xlo), k, (by.start, by.stop), (bx.start, bx.stop),
                           (small.height, small.width))
    attrs = store.attrs
    rgb = _put_chroma(store, attrs["output"],
                      (slice(by.start, by.stop), slice(bx.start, bx.stop)), ab)
    if attrs.get("tiff_tiles"):
        _encode_chunk(store, attrs, plan, r, c, rgb)
    store.mark_done("compose", r, c)
    return int(ab.shape[0] * ab.shape[1])


def _submit_hint(feeder: _Feeder, store: WorkStore, settings: Settings, predict: Predict,
                 hint: Hint | None, ingests: list, token: str, options: dict
                 ) -> tuple[tuple | None, HintField | None]:
    """Submit the task that makes the image's hint field, unless the store has it; returns
    its key (None when there is none to wait for) and the field."""
    if hint is None or isinstance(hint, HintField):
        return None, hint
    if store.blocks_done("hint").all():  # a finished context pass is never recomputed
        return None, hint.field
    if isinstance(hint, ContextPass):  # after every ingest, on a generator worker
        key = (f"context-{token}",)
        feeder.add(key, run_context, (store, hint, settings.tile, settings.stride,
                                      settings.blend, settings.batch_size, settings.planes,
                                      predict), ingests,
                   dict(options, resources=settings.resources))
    else:
        key = (f"hint-{token}",)
        feeder.add(key, run_reference, (store, hint), [], options)
    return key, hint.field


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
    attrs = store.attrs
    encoded = fmt == "tiff" and attrs.get("tiff_tiles")

    def write(source, wait_rows=None) -> str:
        chunked = ChunkedTiles(store.path / "tiles", rgb.shape[:2], int(attrs["block"]),
                               store.array("rgb1") if attrs.get("level1") else None,
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


# ---------------------------------------------------------------- graph (on the driver)

@dataclass
class ImageGraph:
    """The futures of one image (only the stages not already done). ``reduces`` ends with
    the compose tasks when chroma is rendered at reduced scale: waiting on all of it means
    the output array is complete.

    Submitted with ``defer=True``, the generator tasks go to the scheduler only as
    :meth:`feed` releases them, in block order, each with the tasks that depend on it
    alone; ``maps`` and ``reduces`` grow as they are submitted, and :attr:`held` says how
    many generator tasks are still to come.
    """

    ingests: list
    maps: list
    reduces: list
    final: object
    variables: list = field(default_factory=list)  #: what the writer waits on
    feeder: _Feeder | None = field(default=None, repr=False)

    @property
    def futures(self) -> list:
        return [*self.ingests, *self.maps, *self.reduces,
                *([self.final] if self.final is not None else [])]

    @property
    def held(self) -> int:
        """Generator tasks not yet submitted (:meth:`feed` submits them)."""
        return len(self.feeder.maps) if self.feeder is not None else 0

    @property
    def unsubmitted(self) -> int:
        """Tasks not yet submitted: the held generator tasks and those waiting for them."""
        return len(self.feeder.specs) if self.feeder is not None else 0

    def feed(self, n: int | None = None) -> list:
        """Submit the next ``n`` generator tasks (all of them when None) and the tasks that
        were waiting only for them; returns the new futures."""
        if self.feeder is None:
            return []
        new = self.feeder.release(n)
        self.maps += [f for f, is_map in new if is_map]
        self.reduces += [f for f, is_map in new if not is_map]
        return [f for f, _ in new]

    def release(self, client) -> None:
        """Drop the scheduler's Variables for this image (call once it is finished)."""
        from distributed import Variable

        self.feeder = None  # a failed image submits nothing more
        for name in self.variables:
            Variable(name, client=client).delete()
        self.variables = []


class _Feeder:
    """Tasks submitted once the tasks they depend on are: the generator tasks in the order
    they were added, as :meth:`release` lets them go, and every other task as soon as the
    last of its dependencies was submitted (or at once, where it has none left to wait
    for). ``then(future)`` runs as each task is submitted (the writer's Variables)."""

    def __init__(self, client) -> None:
        self.client = client
        self.futures: dict = {}  #: key -> future, every task submitted so far
        self.maps: deque = deque()  #: generator tasks' keys, not submitted yet
        self.specs: dict = {}  #: key -> (fn, args, deps, kwargs, then, is_map)
        self.waiting: dict = {}  #: key of a task that waits -> dependencies not submitted
        self.dependents: dict = {}  #: key -> keys of the tasks waiting for it

    def add(self, key, fn, args: tuple, deps: list, kwargs: dict, *, is_map: bool = False,
            then: Callable | None = None) -> list:
        """Add a task that depends on the tasks ``deps`` (keys; their futures are passed
        after ``args``); returns what was submitted right away ((future, is_map) pairs)."""
        self.specs[key] = (fn, args, deps, kwargs, then, is_map)
        missing = {d for d in deps if d not in self.futures}
        if is_map:
            self.maps.append(key)
            if missing:  # the engine's maps depend on ingests only, submitted at once
                raise ValueError(f"generator task {key} depends on {sorted(missing)}, "
                                 f"not submitted")
            return []
        if not missing:
            return self._submit(key)
        self.waiting[key] = missing
        for d in missing:
            self.dependents.setdefault(d, []).append(key)
        return []

    def release(self, n: int | None = None) -> list:
        new = []
        while self.maps and (n is None or n > 0):
            new += self._submit(self.maps.popleft())
            n = None if n is None else n - 1
        return new

    def _submit(self, key) -> list:
        fn, args, deps, kwargs, then, is_map = self.specs.pop(key)
        future = self.client.submit(fn, *args, *(self.futures[d] for d in deps), key=key,
                                    **kwargs)
        self.futures[key] = future
        if then is not None:
            then(future)
        new = [(future, is_map)]
        for waiter in self.dependents.pop(key, ()):
            missing = self.waiting[waiter]
            missing.discard(key)
            if not missing:
                del self.waiting[waiter]
                new += self._submit(waiter)
        return new


def submit_image(client, info: ImageInfo, store: WorkStore, settings: Settings,
                 predict: Predict, *, dest: Path | None = None, fmt: str | None = None,
                 retries: int = 1, rank: int = 0, defer: bool = False,
                 hint: Hint | None = None) -> ImageGraph:
    """Submit ingest, map, reduce and (if ``dest``) write tasks for one image.

    ``hint`` (for a generator whose ``settings.planes`` take one): a :class:`ContextPass`
    (ingest also builds the context copy; one ``context`` task after ingest makes the field),
    a :class:`Reference` (one ``hint`` task stores its chroma) or a :class:`HintField`
    already in the store. Every map task waits for the field; a field already made (the
    store's ``hint_done``) is not made again. None: hint planes 0.

    Returns the futures; the caller waits on them. Keys carry readable prefixes
    (``ingest``, ``colorize_block``, ``blend_chunk``, ``write_output``) so the dashboard's
    task stream shows what runs. Blocks run in row-major order (the streaming writer
    follows them row by row), and the images of a batch in ``rank`` order.

    ``defer=True`` submits no generator task yet: :meth:`ImageGraph.feed` does, a few at a
    time (:func:`tilecolor.pipeline.run_jobs` keeps each worker's generator slot and the
    next task busy). Dask hands a task that needs a resource to a worker the moment it is
    submitted, and moves it later only from a worker running more tasks than it has
    threads: submitted all at once, the blocks were dealt out evenly, and the worker that
    also ran the writer, or sat on the slower core, still had one or two blocks to go when
    the other ran out (0.2-4.4 s at 268 MP on 2 cores, BENCHMARKS.md).
    """
    plan = settings.plan(info.height, info.width)
    small, k = settings.render_plan(info.height, info.width), settings.factor
    ny, nx = plan.grid
    first = -rank * (ny * nx + 1)

    def order(r: int, c: int) -> int:  # Dask runs higher priorities first
        return first - (r * nx + c)

    token = uuid.uuid4().hex[:12]
    blend = settings.blend
    ingested, done, reduced, composed = (store.blocks_done(stage) for stage in STAGES)
    # chunks their own block finishes (and encodes) in its map task: no blend task, and
    # for a TIFF input no ingest task either (the map task reads its region itself)
    attrs = store.attrs
    by_map = {(r, c) for r in range(ny) for c in range(nx)
              if finished_by_map(attrs, small, r, c)}
    feeder = _Feeder(client)
    variables: dict[tuple[int, int], str] = {}  # chunk -> the writer's Variable for it
    if dest is not None:
        from distributed import Variable

    def then(r: int, c: int) -> Callable | None:
        """What to do once the task that completes chunk (r, c) is submitted."""
        if dest is None:
            return None
        variables[(r, c)] = f"tilecolor-{token}-{r}-{c}"
        return lambda future: Variable(variables[(r, c)], client=client).set(future)

    if not takes_hint(settings.planes):
        hint = None
    context = hint if isinstance(hint, ContextPass) else None
    if context is not None:  # every block adds to the context copy: all are ingested
        by_map_read = set()
    else:
        by_map_read = by_map
    ingest: dict[tuple[int, int], tuple] = {}  # block -> its ingest task's key
    ingest_futures = []
    if info.format == "tiff":  # read by region, block by block, in parallel
        for r, c in np.argwhere(~ingested).tolist():
            if (r, c) in by_map_read:
                continue
            ingest[(r, c)] = key = (f"ingest-{token}", r, c)
            ingest_futures += [f for f, _ in feeder.add(
                key, ingest_region, (info, store, plan, r, c, context), [],
                dict(retries=retries, priority=order(r, c)))]
    elif not ingested.all():
        key = (f"ingest-{token}", 0, 0)
        ingest_futures += [f for f, _ in feeder.add(
            key, ingest_region, (info, store, plan, None, None, context), [],
            dict(retries=retries, priority=first))]
        ingest = {(r, c): key for r in range(ny) for c in range(nx)}
    hint_key, field = _submit_hint(feeder, store, settings, predict, hint,
                                   list(dict.fromkeys(ingest.values())), token,
                                   dict(retries=retries, priority=first + 1))
    if hint_key is not None:
        ingest_futures.append(feeder.futures[hint_key])
    maps = {}
    for r in range(ny):
        for c in range(nx):
            if done[r, c]:
                continue  # a finished block is a durable fact: never recomputed
            # the footprint may reach into the next chunk row/column (< tile pixels)
            down = (r, r + 1) if small.rows[r].fp_stop > small.rows[r].stop else (r,)
            right = (c, c + 1) if small.cols[c].fp_stop > small.cols[c].stop else (c,)
            deps = list(dict.fromkeys(ingest[(rr, cc)] for rr in down for cc in right
                                      if (rr, cc) in ingest))
            if hint_key is not None:
                deps.append(hint_key)
            direct = info.format == "tiff" and (r, c) in by_map_read and not ingested[r, c]
            maps[(r, c)] = key = (f"colorize_block-{token}", r, c)
            feeder.add(key, map_block, (store, small, blend, r, c, settings.batch_size,
                                        predict), deps,
                       dict(source=info if direct else None, resources=settings.resources,
                            retries=retries, priority=order(r, c), planes=settings.planes,
                            hint=None if field is None else field.on_grid(k)),
                       is_map=True, then=then(r, c) if (r, c) in by_map else None)
    reduces = {}
    submitted = []
    for r in range(ny):
        for c in range(nx):
            if reduced[r, c] or (r, c) in by_map:
                continue
            deps = [maps[(cy.block, cx.block)] for cy in contributions(small.rows, r)
                    for cx in contributions(small.cols, c) if (cy.block, cx.block) in maps]
            if (r, c) in maps:  # also a block that owns no tile: the image ends after it
                deps.append(maps[(r, c)])
            if k == 1 and (r, c) in ingest:  # composes RGB from L
                deps.append(ingest[(r, c)])
            reduces[(r, c)] = key = (f"blend_chunk-{token}", r, c)
            submitted += feeder.add(key, reduce_chunk, (store, small, blend, r, c), deps,
                                    dict(retries=retries, priority=order(r, c)),
                                    then=then(r, c) if k == 1 else None)
    if k > 1:  # upsample the reduced chroma under the full-resolution L, chunk by chunk
        for r in range(ny):
            for c in range(nx):
                if composed[r, c]:
                    continue
                deps = [reduces[(rr, cc)] for rr in (r - 1, r, r + 1) for cc in (c - 1, c, c + 1)
                        if (rr, cc) in reduces]
                if (r, c) in ingest:
                    deps.append(ingest[(r, c)])
                submitted += feeder.add((f"compose_chunk-{token}", r, c), compose_chunk,
                                        (store, plan, small, k, r, c), deps,
                                        dict(retries=retries, priority=order(r, c)),
                                        then=then(r, c))
    final = None
    if dest is not None:
        # no dependencies: the writer starts now and waits row by row (see write_output)
        pending = PendingRows({})
        for (r, _), name in sorted(variables.items()):
            pending.rows.setdefault(r, []).append(name)
        final = client.submit(write_output, store, dest, fmt, pending, settings.block,
                              key=f"write_output-{token}", retries=retries,
                              priority=first + 1)
    graph = ImageGraph(ingest_futures, [], [f for f, _ in submitted], final,
                       list(variables.values()), feeder)
    if not defer:
        graph.feed()
    return graph
