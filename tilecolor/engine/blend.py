"""Finishing output chunks: blended sums divided by the weights and composed with L
(:func:`put_blended`), the REDUCE task that adds the partial sums of the blocks reaching a
chunk's border (:func:`reduce_chunk`), the compose task that upsamples reduced-scale chroma
(:func:`compose_chunk`), and a TIFF chunk's tiles encoded once it is final."""

from __future__ import annotations

import numpy as np

from tilecolor.core.blending import Blend
from tilecolor.core.color import (
    AB_SCALE,
    compose_planes,
    compose_rgb,
)
from tilecolor.core.resample import source_span, upsample_bilinear
from tilecolor.core.tiling import (
    Plan,
    contributions,
    interior,
    self_contained,
)
from tilecolor.engine.store import Modes, Output, WorkStore
from tilecolor.engine.tiles import weight_sum as _weight_sum
from tilecolor.io.pyramid import downsample
from tilecolor.io.tiff import encode_tiles, save_chunk_tiles


def finished_by_map(modes: Modes, plan: Plan, r: int, c: int) -> bool:
    """Whether chunk (r, c) is finished and encoded by its block's map task: a TIFF encoded
    chunk by chunk (the store's ``modes``), chroma at full scale, and no other block
    reaching the chunk. Its RGB never goes through the store, and it has no blend task."""
    return (modes.tiff_tiles and modes.factor == 1
            and self_contained(plan.rows, r) and self_contained(plan.cols, c))


def _finish(sums: np.ndarray, plan: Plan, blend: Blend, ys: slice, xs: slice) -> np.ndarray:
    """(2, h, w) float32 sum(w * ab) over region (ys, xs) -> (h, w, 2) chroma in Lab units,
    a view of ``sums`` (scaled in place, in float32)."""
    wy = _weight_sum(plan.height, plan.tile, plan.stride, blend)[ys]
    wx = _weight_sum(plan.width, plan.tile, plan.stride, blend)[xs]
    # two broadcast passes, not an (h, w) outer product: no fresh block-sized array
    sums *= (AB_SCALE / wy).astype(np.float32)[:, None]
    sums *= (1.0 / wx).astype(np.float32)
    return np.moveaxis(sums, 0, -1)


def reduce_chunk(store: WorkStore, plan: Plan, blend: Blend, r: int, c: int, *deps) -> int:
    """Finish output chunk (r, c) outside its interior: add the partial sums of the blocks
    that reach it, divide, compose. Returns the number of pixels finished."""
    modes = store.modes
    by, bx = plan.rows[r], plan.cols[c]
    iy, ix = interior(plan.rows, r), interior(plan.cols, c)
    fy, fx = modes.footprint
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
        put_blended(store, plan, blend, (ys, xs), ab)
        pixels += ab.shape[1] * ab.shape[2]
    if modes.tiff_tiles and modes.factor == 1:
        encode_chunk(store, plan, r, c)  # the chunk is final now
    store.mark_done("reduce", r, c)
    return pixels


def encode_chunk(store: WorkStore, plan: Plan, r: int, c: int,
                  rgb: np.ndarray | None = None) -> None:
    """Encode finished output chunk (r, c) (its pixels ``rgb``, read from the store when not
    given) as the TIFF's tiles of levels 0 and 1, and store its level-1 pixels, for the
    writer to copy (:class:`tilecolor.io.tiff.ChunkedTiles`). Deflating in the tasks that
    finish the chunks runs on every worker at once, not in one writer thread."""
    by, bx = plan.rows[r], plan.cols[c]
    if rgb is None:
        rgb = store.array("rgb")[by.start : by.stop, bx.start : bx.stop]
    levels = [encode_tiles(rgb)]
    if store.modes.level1:
        small = downsample(rgb)
        y0, x0 = by.start // 2, bx.start // 2
        store.array("rgb1", "r+")[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
        levels.append(encode_tiles(small))
    save_chunk_tiles(store.path / "tiles" / f"{r}.{c}.bin", levels)


def put_blended(store: WorkStore, plan: Plan, blend: Blend,
                 region: tuple[slice, slice], sums: np.ndarray, gray: np.ndarray | None = None,
                 keep: bool = True) -> np.ndarray | None:
    """Finish the blended sums (2, h, w) of ``region`` on the generator's grid and store
    them: as ``ab_small`` when it is the reduced one (upsampled later by
    :func:`compose_chunk`), as ``ab``, or composed with the original L (``gray``, read from
    the store when not given) into ``rgb``, divided by the weights on the way (one pass,
    :func:`tilecolor.core.color.compose_planes`). Returns the RGB pixels (None otherwise);
    ``keep=False`` leaves them out of the store (the caller encodes them)."""
    ys, xs = region
    reduced = store.modes.factor > 1
    if reduced or store.modes.output == Output.AB:
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


def _put_chroma(store: WorkStore, output: Output, region: tuple[slice, slice], ab: np.ndarray,
                gray: np.ndarray | None = None) -> np.ndarray | None:
    """Store full-resolution chroma of ``region``: as ``ab`` (``output`` "ab": tests, eval)
    or composed with the original L (``gray``, read from the store when not given) into
    ``rgb``; returns the RGB pixels (None for ``ab``)."""
    if output == Output.AB:
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
    rgb = _put_chroma(store, store.modes.output,
                      (slice(by.start, by.stop), slice(bx.start, bx.stop)), ab)
    if store.modes.tiff_tiles:
        encode_chunk(store, plan, r, c, rgb)
    store.mark_done("compose", r, c)
    return int(ab.shape[0] * ab.shape[1])
