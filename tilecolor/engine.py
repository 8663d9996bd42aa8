"""The Dask graph: ingest -> MAP (one task per block) -> REDUCE (one per output chunk) -> write.

MAP runs ``predict`` over the tiles a block owns, in batches, and writes sum(w * ab) over the
block's footprint to the working store. REDUCE adds the partial sums of the blocks whose
footprints cover an output chunk (its own block and the ones before it in each axis, so at
most four), divides by the separable weight sum and composes RGB with the original L. Tasks
exchange data through the Zarr store and return only small metadata, so nothing image-sized
passes through Dask's memory or the driver.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from tilecolor.blending import Blend, axis_weight_sum, axis_windows
from tilecolor.color import AB_SCALE, compose_rgb, gray_to_lightness, lightness_to_input
from tilecolor.errors import ConfigError
from tilecolor.io import ImageInfo, read_tiff_region, read_whole, write_image
from tilecolor.store import STAGES, WorkStore
from tilecolor.tiling import Plan, check_geometry, contributions, tile_origins

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Settings:
    """How one image is tiled, blended and run."""

    tile: int = 256
    stride: int = 128
    blend: Blend = Blend.COSINE
    block: int = 2048
    batch_size: int = 16
    resources: dict[str, float] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        check_geometry(self.tile, self.stride, self.block)
        object.__setattr__(self, "blend", Blend(self.blend))
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got batch_size={self.batch_size}")

    def plan(self, height: int, width: int) -> Plan:
        return Plan(height, width, self.tile, self.stride, self.block)


@lru_cache(maxsize=64)
def _windows(length: int, tile: int, stride: int, blend: Blend) -> np.ndarray:
    return axis_windows(length, tile, stride, blend)


@lru_cache(maxsize=64)
def _weight_sum(length: int, tile: int, stride: int, blend: Blend) -> np.ndarray:
    return axis_weight_sum(length, tile, stride, blend)


# ---------------------------------------------------------------- tasks (run on workers)

def ingest_region(info: ImageInfo, store: WorkStore, plan: Plan, r: int | None,
                  c: int | None) -> int:
    """Copy block (r, c) of the input's gray into ``L``; the whole image when r is None
    (PNG/JPEG are decoded whole anyway)."""
    if r is None or c is None:
        pixels, (y0, x0) = read_whole(info), (0, 0)
    else:
        by, bx = plan.rows[r], plan.cols[c]
        y0, x0 = by.start, bx.start
        pixels = read_tiff_region(info.path, by.start, by.stop, bx.start, bx.stop,
                                  page=info.page)
    store.array("L", "r+")[y0 : y0 + pixels.shape[0], x0 : x0 + pixels.shape[1]] = pixels
    ny, nx = plan.grid
    for rr, cc in ([(r, c)] if r is not None else [(i, j) for i in range(ny) for j in range(nx)]):
        store.mark_done("ingest", rr, cc)
    return int(pixels.size)


def map_block(store: WorkStore, plan: Plan, blend: Blend, r: int, c: int, batch_size: int,
              predict: Predict, *deps) -> dict:
    """Run the generator on every tile block (r, c) owns; write its weighted partial sums."""
    t0 = time.perf_counter()
    by, bx = plan.rows[r], plan.cols[c]
    oy = tile_origins(plan.height, plan.tile, plan.stride)[by.first : by.last]
    ox = tile_origins(plan.width, plan.tile, plan.stride)[bx.first : bx.last]
    wy = _windows(plan.height, plan.tile, plan.stride, blend)[by.first : by.last]
    wx = _windows(plan.width, plan.tile, plan.stride, blend)[bx.first : bx.last]
    if len(oy) == 0 or len(ox) == 0:  # a last block can own no tile: the one before covers it
        store.mark_done("map", r, c)
        return {"tiles": 0, "seconds": time.perf_counter() - t0}
    gray = store.array("L")[by.start : by.fp_stop, bx.start : bx.fp_stop]
    net_in = lightness_to_input(gray_to_lightness(gray))
    # (fh, fw); an axis shorter than a tile is reflect-padded up to it (only whole-image axes)
    pad = ((0, max(0, plan.tile - net_in.shape[0])), (0, max(0, plan.tile - net_in.shape[1])))
    if pad[0][1] or pad[1][1]:
        net_in = np.pad(net_in, pad, mode="reflect")
    acc = np.zeros((2, *net_in.shape), dtype=np.float32)  # (2, fh, fw) sum(w * ab)
    t = plan.tile
    coords = [(int(y) - by.start, int(x) - bx.start, i, j)
              for i, y in enumerate(oy) for j, x in enumerate(ox)]
    for k in range(0, len(coords), batch_size):
        chunk = coords[k : k + batch_size]
        batch = np.stack([net_in[y : y + t, x : x + t] for y, x, _, _ in chunk])[:, None]
        pred = np.asarray(predict(batch), dtype=np.float32)  # (n, 2, t, t) ab / 110
        if pred.shape != (len(chunk), 2, t, t):
            raise ValueError(f"predict returned shape {pred.shape}, expected "
                             f"{(len(chunk), 2, t, t)}")
        for (y, x, i, j), p in zip(chunk, pred, strict=True):
            acc[:, y : y + t, x : x + t] += p * (wy[i][:, None] * wx[j][None, :])
    fh, fw = by.fp_len, bx.fp_len
    fy, fx = store.footprint()
    store.array("partial", "r+")[:, r * fy : r * fy + fh, c * fx : c * fx + fw] = acc[:, :fh, :fw]
    store.mark_done("map", r, c)
    return {"tiles": len(coords), "seconds": time.perf_counter() - t0}


def reduce_chunk(store: WorkStore, plan: Plan, blend: Blend, r: int, c: int, *deps) -> int:
    """Blend output chunk (r, c): add the overlapping partial sums, divide, compose."""
    by, bx = plan.rows[r], plan.cols[c]
    fy, fx = store.footprint()
    partial = store.array("partial")
    ab = np.zeros((2, by.stop - by.start, bx.stop - bx.start), dtype=np.float32)
    for cy in contributions(plan.rows, r):
        for cx in contributions(plan.cols, c):
            ys = slice(cy.block * fy + cy.src.start, cy.block * fy + cy.src.stop)
            xs = slice(cx.block * fx + cx.src.start, cx.block * fx + cx.src.stop)
            ab[:, cy.dst, cx.dst] += partial[:, ys, xs]
    wsum = np.outer(_weight_sum(plan.height, plan.tile, plan.stride, blend)[by.start : by.stop],
                    _weight_sum(plan.width, plan.tile, plan.stride, blend)[bx.start : bx.stop])
    ab = np.moveaxis(ab / wsum, 0, -1) * AB_SCALE  # (h, w, 2) in Lab units
    region = (slice(by.start, by.stop), slice(bx.start, bx.stop))
    if store.attrs["output"] == "ab":
        store.array("ab", "r+")[region] = ab
    else:
        out = store.array("rgb", "r+")
        out[region] = compose_rgb(store.array("L")[region], ab, out.dtype)
    store.mark_done("reduce", r, c)
    return int(ab.shape[0] * ab.shape[1])


def write_output(store: WorkStore, dest: Path, fmt: str, *deps) -> str:
    """Stream the finished ``rgb`` array to ``dest`` (atomically)."""
    write_image(store.array("rgb"), Path(dest), fmt)
    return str(dest)


# ---------------------------------------------------------------- graph (on the driver)

@dataclass
class ImageGraph:
    """The futures of one image (only the stages not already done)."""

    ingests: list
    maps: list
    reduces: list
    final: object

    @property
    def futures(self) -> list:
        return [*self.ingests, *self.maps, *self.reduces,
                *([self.final] if self.final is not None else [])]


def submit_image(client, info: ImageInfo, store: WorkStore, settings: Settings,
                 predict: Predict, *, dest: Path | None = None, fmt: str | None = None,
                 retries: int = 1) -> ImageGraph:
    """Submit ingest, map, reduce and (if ``dest``) write tasks for one image.

    Returns the futures; the caller waits on them. Keys carry readable prefixes
    (``ingest``, ``colorize_block``, ``blend_chunk``, ``write_output``) so the dashboard's
    task stream shows what runs.
    """
    plan = settings.plan(info.height, info.width)
    ny, nx = plan.grid
    token = uuid.uuid4().hex[:12]
    blend = settings.blend
    ingested, done, reduced = (store.blocks_done(stage) for stage in STAGES)
    ingest: dict[tuple[int, int], object] = {}
    if info.format == "tiff":  # read by region, block by block, in parallel
        for r, c in np.argwhere(~ingested).tolist():
            ingest[(r, c)] = client.submit(ingest_region, info, store, plan, r, c,
                                           key=(f"ingest-{token}", r, c), retries=retries)
    elif not ingested.all():
        whole = client.submit(ingest_region, info, store, plan, None, None,
                              key=(f"ingest-{token}", 0, 0), retries=retries)
        ingest = {(r, c): whole for r in range(ny) for c in range(nx)}
    maps = {}
    for r in range(ny):
        for c in range(nx):
            if done[r, c]:
                continue  # a finished block is a durable fact: never recomputed
            # the footprint reaches into the next chunk row/column (at most tile - 1 pixels)
            deps = {ingest[(rr, cc)] for rr in (r, r + 1) for cc in (c, c + 1)
                    if (rr, cc) in ingest}
            maps[(r, c)] = client.submit(
                map_block, store, plan, blend, r, c, settings.batch_size, predict, *deps,
                key=(f"colorize_block-{token}", r, c), resources=settings.resources,
                retries=retries)
    reduces = []
    for r in range(ny):
        for c in range(nx):
            if reduced[r, c]:
                continue
            deps = [maps[(cy.block, cx.block)] for cy in contributions(plan.rows, r)
                    for cx in contributions(plan.cols, c) if (cy.block, cx.block) in maps]
            if (r, c) in ingest:  # composes RGB from L
                deps.append(ingest[(r, c)])
            reduces.append(client.submit(reduce_chunk, store, plan, blend, r, c, *deps,
                                         key=(f"blend_chunk-{token}", r, c), retries=retries))
    final = None
    if dest is not None:
        final = client.submit(write_output, store, dest, fmt, *reduces,
                              key=f"write_output-{token}", retries=retries)
    ingests = list({id(f): f for f in ingest.values()}.values())
    return ImageGraph(ingests, list(maps.values()), reduces, final)
