"""The ingest task: an input's gray copied into the working store, block by block (TIFF) or
whole (PNG/JPEG), with its reduced and context copies where the run needs them."""

from __future__ import annotations

from tilecolor.core.color import (
    gray_to_lightness,
)
from tilecolor.core.resample import downsample_mean
from tilecolor.core.tiling import (
    Plan,
)
from tilecolor.engine.hints import ContextPass, add_to_copy
from tilecolor.engine.store import WorkStore
from tilecolor.io.read import ImageInfo, read_tiff_region, read_whole


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
    k = store.modes.factor
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
