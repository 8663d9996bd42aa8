"""Tiling geometry: tile origins, block ownership and footprints. Pure functions of integers.

Per axis (2-D is the product of two axes):

- tiles of size ``tile`` start at ``0, stride, 2*stride, ...`` plus one tile flush with the far
  edge, so every pixel is covered and no tile reads past the image. An axis shorter than a
  tile gets one tile at 0; the engine reflect-pads the image up to the tile size.
- blocks of size ``block`` cut the axis into output chunks ``[k*block, (k+1)*block)``. Block
  ``k`` owns the tile origins inside its chunk, so each tile is computed exactly once. Its
  footprint is ``[k*block, last owned origin + tile)`` clipped to the axis length; footprints
  spill at most ``tile - 1`` pixels into the next chunk, so an output chunk receives
  contributions from its own block and the one before it only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tilecolor.core.errors import ConfigError


def check_geometry(tile: int, stride: int, block: int | None = None) -> None:
    """Raise :class:`ConfigError` unless ``0 < stride <= tile <= block``."""
    if tile <= 0:
        raise ConfigError(f"tile must be positive, got tile={tile}")
    if not 0 < stride <= tile:
        raise ConfigError(f"stride must satisfy 0 < stride <= tile={tile}, got stride={stride}")
    if block is not None and block < tile:
        raise ConfigError(f"block must be at least the tile size {tile}, got block={block}")


def tile_origins(length: int, tile: int, stride: int) -> np.ndarray:
    """Tile start positions along one axis.

    Parameters
    ----------
    length : int
        Axis length in pixels, >= 1.
    tile, stride : int
        Tile size and step, ``0 < stride <= tile``.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
        Strictly increasing origins; the last one is ``max(length - tile, 0)``.
    """
    check_geometry(tile, stride)
    if length < 1:
        raise ConfigError(f"axis length must be >= 1, got {length}")
    if length <= tile:
        return np.zeros(1, dtype=np.int64)
    origins = np.arange(0, length - tile + 1, stride, dtype=np.int64)
    if origins[-1] != length - tile:
        origins = np.append(origins, np.int64(length - tile))
    return origins


@dataclass(frozen=True)
class AxisBlock:
    """One block along one axis.

    ``start:stop`` is the output chunk the block finalizes, ``start:fp_stop`` the footprint
    its tiles write partial sums to, and ``first:last`` (exclusive) the indices of the tile
    origins it owns (``first == last`` when it owns none).
    """

    index: int
    start: int
    stop: int
    fp_stop: int
    first: int
    last: int

    @property
    def fp_len(self) -> int:
        return self.fp_stop - self.start


@lru_cache(maxsize=256)
def axis_blocks(length: int, tile: int, stride: int, block: int) -> tuple[AxisBlock, ...]:
    """Blocks along one axis, with the tiles each owns and its footprint (cached: the
    driver asks for them for every block it submits, O(blocks^2) work uncached, 1 s of
    the 3.7 s submitting a 1-gigapixel image took)."""
    check_geometry(tile, stride, block)
    origins = tile_origins(length, tile, stride)
    blocks = []
    for k in range(math.ceil(length / block)):
        start, stop = k * block, min((k + 1) * block, length)
        first = int(np.searchsorted(origins, start, side="left"))
        last = int(np.searchsorted(origins, stop, side="left"))
        fp_stop = min(int(origins[last - 1]) + tile, length) if last > first else start
        blocks.append(AxisBlock(k, start, stop, max(fp_stop, start), first, last))
    return tuple(blocks)


def footprint_capacity(blocks: Sequence[AxisBlock]) -> int:
    """The longest footprint: the size of one partial-sum chunk along this axis."""
    return max(b.fp_len for b in blocks)


def interior(blocks: Sequence[AxisBlock], k: int) -> slice:
    """The part of output chunk ``k`` that no other block's tiles reach: from the end of
    block ``k - 1``'s footprint to the chunk's end (empty when block ``k`` owns no tile).
    Block ``k`` alone finishes it; only the band before it needs the neighbour's sums."""
    b = blocks[k]
    lo = max(b.start, blocks[k - 1].fp_stop) if k else b.start
    return slice(min(lo, b.stop), b.stop)


def self_contained(blocks: Sequence[AxisBlock], k: int) -> bool:
    """Whether block ``k`` alone finishes all of output chunk ``k`` and adds nothing
    to any other: it owns a tile, its footprint ends with the chunk and the previous
    block's does not reach into it (stride = tile with blocks a multiple of it, for
    example, away from a far edge whose last tile is shifted back)."""
    b = blocks[k]
    return (b.last > b.first and b.fp_stop == b.stop
            and (k == 0 or blocks[k - 1].fp_stop <= b.start))


@dataclass(frozen=True)
class Contribution:
    """Block ``block`` adds its footprint ``src`` (footprint coordinates) to ``dst`` (chunk
    coordinates) of the output chunk."""

    block: int
    src: slice
    dst: slice


def contributions(blocks: Sequence[AxisBlock], chunk: int,
                  span: slice | None = None) -> list[Contribution]:
    """The blocks whose footprints overlap output chunk ``chunk`` (or just ``span`` of it,
    in image coordinates; ``dst`` is then relative to ``span.start``), with the spans."""
    target = blocks[chunk]
    start, stop = (target.start, target.stop) if span is None else (span.start, span.stop)
    out = []
    for b in blocks[max(0, chunk - 1) : chunk + 1]:
        lo, hi = max(b.start, start), min(b.fp_stop, stop)
        if hi > lo:
            out.append(Contribution(b.index, slice(lo - b.start, hi - b.start),
                                    slice(lo - start, hi - start)))
    return out


@dataclass(frozen=True)
class Plan:
    """The 2-D geometry of one image: the product of its two axes."""

    height: int
    width: int
    tile: int
    stride: int
    block: int

    @property
    def rows(self) -> Sequence[AxisBlock]:
        return axis_blocks(self.height, self.tile, self.stride, self.block)

    @property
    def cols(self) -> Sequence[AxisBlock]:
        return axis_blocks(self.width, self.tile, self.stride, self.block)

    @property
    def grid(self) -> tuple[int, int]:
        return math.ceil(self.height / self.block), math.ceil(self.width / self.block)

    @property
    def n_tiles(self) -> int:
        return (len(tile_origins(self.height, self.tile, self.stride))
                * len(tile_origins(self.width, self.tile, self.stride)))

    def tile_pixels_per_pixel(self) -> float:
        """Compute cost: generator input pixels per image pixel."""
        return self.n_tiles * self.tile**2 / (self.height * self.width)
