"""The generator over the tiles of one region: gather each tile's input planes, call
``predict`` in batches, sum w * ab. Shared by the map task (one block's footprint) and the
context pass (a whole small image), so both tile and blend the same way.

The input planes are those :mod:`tilecolor.core.planes` names, in the checkpoint's order: ``L``
from the region's gray levels (or its lightness), the hint's a and b from a hint field
already upsampled to the region's pixels (:mod:`tilecolor.engine.hints`), the mask 1 where that
field is given. Without a hint the hint planes and the mask are 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tilecolor.core.blending import Blend, axis_weight_sum, axis_windows
from tilecolor.core.color import compiled_kernels
from tilecolor.core.planes import HINT_A, HINT_B, HINT_MASK, L, check_planes
from tilecolor.core.tiling import tile_origins

Predict = Callable[[np.ndarray], np.ndarray]


@lru_cache(maxsize=64)
def windows(length: int, tile: int, stride: int, blend: Blend) -> np.ndarray:
    """(n_tiles, tile) float32 blend windows along an axis (cached)."""
    return axis_windows(length, tile, stride, blend)


@lru_cache(maxsize=64)
def weight_sum(length: int, tile: int, stride: int, blend: Blend) -> np.ndarray:
    """(length,) float32 sum of the windows along an axis (cached)."""
    return axis_weight_sum(length, tile, stride, blend)


@dataclass
class NetInputs:
    """The generator's input planes over a region of ``shape`` (h, w) pixels (an axis
    shorter than a tile already reflect-padded to it).

    The lightness plane comes from integer ``gray`` levels through ``table`` (the compiled
    gather, no float copy of the region) or from ``lightness`` (float32, network units).
    ``hint`` is (2, h, w) float32 ab/110 or None (no hint: hint planes and mask 0).
    """

    planes: tuple[str, ...]
    shape: tuple[int, int]
    gray: np.ndarray | None = None
    table: np.ndarray | None = None
    lightness: np.ndarray | None = None
    hint: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.planes = check_planes(self.planes)
        if (self.table is None) == (self.lightness is None):
            raise ValueError("give the lightness plane as gray levels with a table, or as "
                             "lightness, not both")
        if self.hint is not None and self.hint.shape != (2, *self.shape):
            raise ValueError(f"hint of shape {self.hint.shape} for a region of {self.shape}")

    def batch(self, ys: Sequence[int], xs: Sequence[int], tile: int) -> np.ndarray:
        """(n, P, tile, tile) float32: the planes of the tiles at (ys[i], xs[i])."""
        out = np.empty((len(ys), len(self.planes), tile, tile), np.float32)
        for q, name in enumerate(self.planes):
            if name == L and self.table is not None:
                compiled_kernels().gather(self.gray, self.table, np.asarray(ys, np.int64),
                                          np.asarray(xs, np.int64), out, q)
                continue
            if name == HINT_MASK or (self.hint is None and name in (HINT_A, HINT_B)):
                out[:, q] = 1.0 if name == HINT_MASK and self.hint is not None else 0.0
                continue
            source = self.lightness if name == L else self.hint[0 if name == HINT_A else 1]
            for n, (y, x) in enumerate(zip(ys, xs, strict=True)):
                out[n, q] = source[y : y + tile, x : x + tile]
        return out


def pad_to_tile(plane: np.ndarray, tile: int) -> np.ndarray:
    """Reflect-pad the last two axes of ``plane`` up to ``tile`` where shorter (only
    whole-image axes are: a footprint is otherwise at least a tile)."""
    pad = [(0, 0)] * (plane.ndim - 2) + [(0, max(0, tile - plane.shape[-2])),
                                          (0, max(0, tile - plane.shape[-1]))]
    return np.pad(plane, pad, mode="reflect") if pad[-2][1] or pad[-1][1] else plane


@dataclass
class TileStats:
    """What running the tiles cost: tiles, seconds and CPU seconds inside ``predict``."""

    tiles: int = 0
    generator_seconds: float = 0.0
    generator_cpu_seconds: float = 0.0


def accumulate(inputs: NetInputs, oy: np.ndarray, ox: np.ndarray, wy: np.ndarray,
               wx: np.ndarray, tile: int, batch_size: int, predict: Predict, *,
               cut: bool = False, refresh: Callable[[Predict], Predict] | None = None
               ) -> tuple[np.ndarray, TileStats]:
    """sum(w * ab) over ``inputs.shape`` of the tiles at origins ``oy`` x ``ox`` (region
    coordinates), weighted by their windows ``wy`` x ``wx``.

    ``cut``: the tiles cover the region exactly once (stride = tile), so each sum is one
    tile's value, written rather than added to zeros. ``refresh`` may swap ``predict``
    before each batch (more torch threads once cores fell idle). Returns the (2, h, w)
    float32 sums and the cost.
    """
    acc = (np.empty if cut else np.zeros)((2, *inputs.shape), dtype=np.float32)
    # tiles whose window is 1 everywhere (uniform blend; cosine where tiles do not overlap)
    # skip the multiplication: a pass over every predicted value, the result unchanged
    flat_y, flat_x = (wy == 1).all(axis=1), (wx == 1).all(axis=1)
    coords = [(int(y), int(x), i, j) for i, y in enumerate(oy) for j, x in enumerate(ox)]
    stats = TileStats(len(coords))
    for first in range(0, len(coords), batch_size):
        part = coords[first : first + batch_size]
        if refresh is not None:
            predict = refresh(predict)
        batch = inputs.batch([y for y, _, _, _ in part], [x for _, x, _, _ in part], tile)
        t1, c1 = time.perf_counter(), time.thread_time()
        pred = np.require(predict(batch), np.float32, "W")  # (n, 2, t, t) ab / 110
        stats.generator_seconds += time.perf_counter() - t1
        stats.generator_cpu_seconds += time.thread_time() - c1
        if pred.shape != (len(part), 2, tile, tile):
            raise ValueError(f"predict returned shape {pred.shape}, expected "
                             f"{(len(part), 2, tile, tile)}")
        for (y, x, i, j), p in zip(part, pred, strict=True):
            if not (flat_y[i] and flat_x[j]):
                p *= wy[i][:, None] * wx[j][None, :]
            if cut:
                acc[:, y : y + tile, x : x + tile] = p
            else:
                acc[:, y : y + tile, x : x + tile] += p
    return acc, stats


def colorize_whole(inputs: NetInputs, height: int, width: int, tile: int, stride: int,
                   blend: Blend, batch_size: int, predict: Predict) -> np.ndarray:
    """Every tile of a whole (small) image, blended: (2, height, width) float32 ab/110.

    The same tiles, windows and weight sums as the engine's blocks, in one region
    (``inputs`` covers the image, padded to a tile where an axis is shorter).
    """
    oy, ox = tile_origins(height, tile, stride), tile_origins(width, tile, stride)
    acc, _ = accumulate(inputs, oy, ox, windows(height, tile, stride, blend),
                        windows(width, tile, stride, blend), tile, batch_size, predict)
    acc = acc[:, :height, :width]
    acc *= (1.0 / weight_sum(height, tile, stride, blend)).astype(np.float32)[:, None]
    acc *= (1.0 / weight_sum(width, tile, stride, blend)).astype(np.float32)
    return acc
