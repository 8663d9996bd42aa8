"""Geometry checked exhaustively on small sizes: coverage, bounds, ownership, contributions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tilecolor.core.errors import ConfigError
from tilecolor.core.tiling import (
    Plan,
    axis_blocks,
    contributions,
    footprint_capacity,
    interior,
    tile_origins,
)

CASES = [(length, tile, stride) for length in range(1, 70) for tile in (1, 4, 7, 16)
         for stride in sorted({1, 2, 3, tile // 2 or 1, tile - 1 or 1, tile}) if stride <= tile]


@pytest.mark.parametrize("tile,stride", sorted({(t, s) for _, t, s in CASES}))
def test_origins_cover_every_pixel_and_stay_inside(tile, stride):
    for length in range(1, 70):
        o = tile_origins(length, tile, stride)
        assert o[0] == 0 and np.all(np.diff(o) > 0)
        assert o[-1] == max(length - tile, 0)
        if length >= tile:
            assert o[-1] + tile == length  # never reads past the image
        # all but the flush last tile sit on the stride grid
        assert np.all(o[:-1] % stride == 0)
        covered = np.zeros(max(length, tile), bool)
        for start in o:
            covered[start : start + tile] = True
        assert covered[:length].all()
        # no two tiles closer than the stride except the flush one
        assert np.all(np.diff(o)[:-1] == stride)


def test_origins_examples():
    assert tile_origins(10, 4, 3).tolist() == [0, 3, 6]
    assert tile_origins(11, 4, 3).tolist() == [0, 3, 6, 7]
    assert tile_origins(3, 4, 2).tolist() == [0]
    assert tile_origins(4096, 256, 256).tolist() == list(range(0, 3841, 256))


@pytest.mark.parametrize("bad", [dict(tile=4, stride=0), dict(tile=4, stride=5),
                                 dict(tile=0, stride=1)])
def test_bad_geometry_names_the_value(bad):
    with pytest.raises(ConfigError, match="stride|tile"):
        tile_origins(10, **bad)


@pytest.mark.parametrize("length,tile,stride,block", [
    (length, tile, stride, block)
    for length, (tile, stride), block in itertools.product(
        range(1, 90, 3), [(4, 1), (4, 3), (8, 8), (8, 5), (16, 4), (7, 7), (7, 2)],
        [16, 17, 24, 32])
    if block >= tile])
def test_blocks_own_each_tile_once_and_chunks_get_all_contributions(length, tile, stride,
                                                                     block):
    origins = tile_origins(length, tile, stride)
    blocks = axis_blocks(length, tile, stride, block)
    owned = [i for b in blocks for i in range(b.first, b.last)]
    assert owned == list(range(len(origins)))  # each tile exactly once, in order
    cap = footprint_capacity(blocks)
    assert cap <= block + tile
    for b in blocks:
        assert b.start == b.index * block and b.stop == min(b.start + block, length)
        assert b.fp_stop <= length and b.fp_len <= cap
        for i in range(b.first, b.last):
            assert b.start <= origins[i] < b.stop  # origin inside the block
            assert origins[i] + min(tile, length) <= b.fp_stop  # tile inside the footprint
    # every pixel of a chunk receives exactly the blocks whose tiles touch it
    for k, chunk in enumerate(blocks):
        seen = {}
        for c in contributions(blocks, k):
            assert c.src.stop - c.src.start == c.dst.stop - c.dst.start
            for p in range(c.dst.start, c.dst.stop):
                seen.setdefault(chunk.start + p, set()).add(c.block)
        inner = interior(blocks, k)
        assert chunk.start <= inner.start <= inner.stop == chunk.stop
        assert (inner.stop > inner.start) == (chunk.last > chunk.first)  # owns a tile
        for p in range(chunk.start, chunk.stop):
            touching = {j for j, b in enumerate(blocks)
                        for i in range(b.first, b.last) if origins[i] <= p < origins[i] + tile}
            assert touching <= seen.get(p, set())
            # the interior is exactly what only this block's tiles reach
            assert (p >= inner.start) == (touching == {k}), (k, p, touching)
        # contributions to a span of the chunk: the same blocks, clipped to the span
        span = slice(chunk.start, inner.start)
        for c in contributions(blocks, k, span):
            assert 0 <= c.dst.start < c.dst.stop <= span.stop - span.start
            assert c.src.start - c.dst.start == span.start - blocks[c.block].start


def test_plan_cost_matches_paper_ratio():
    # stride 32 on 256-px tiles costs ~ (256/32)^2 = 64 tile pixels per image pixel
    assert Plan(4096, 4096, 256, 32, 2048).tile_pixels_per_pixel() == pytest.approx(
        (121 * 256 / 4096) ** 2)
    assert Plan(4096, 4096, 256, 256, 2048).tile_pixels_per_pixel() == 1.0


@pytest.mark.parametrize("length,tile,stride,block", [
    (4096, 256, 256, 1024), (4100, 256, 256, 1024), (1000, 256, 256, 512),
    (4096, 256, 128, 1024), (300, 256, 256, 256), (200, 256, 256, 512),
    (2100, 256, 256, 2048), (1100, 64, 64, 512), (1300, 64, 32, 512)])
def test_self_contained_chunks_are_exactly_those_no_other_block_touches(length, tile, stride,
                                                                      block):
    """self_contained(blocks, k) against the definition: block k owns a tile, its
    footprint stays inside chunk k, and no other block's footprint reaches chunk k."""
    from tilecolor.core.tiling import self_contained

    blocks = axis_blocks(length, tile, stride, block)
    for b in blocks:
        others = [o for o in blocks if o.index != b.index and o.fp_stop > o.start
                  and o.start < b.stop and o.fp_stop > b.start]
        want = b.last > b.first and b.fp_stop <= b.stop and not others
        assert self_contained(blocks, b.index) == want, (b, others)
