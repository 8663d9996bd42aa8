"""Tiled, deflated (Big)TIFF outputs with the reduced levels as SubIFDs of page 0, streamed
(:mod:`tilecolor.io.pyramid`); and a TIFF's tiles encoded chunk by chunk by the tasks that
finish the chunks (:func:`encode_tiles`, :func:`save_chunk_tiles`), which the writer then
copies as bytes (:class:`ChunkedTiles`).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from tilecolor.io.atomic import write_atomic
from tilecolor.io.pyramid import StripPyramid, ceil_div, pushed, pyramid_shapes, tiles

OUTPUT_TILE = 256  #: tile side of TIFF outputs (tifffile wants multiples of 16)


#: deflate level 1 with horizontal differencing: about 2x faster than zlib's default level 6
#: and 20-30 % smaller on photos (numbers in the README); predictor 2 is baseline libtiff
TIFF_CODEC = {"compression": "zlib", "compressionargs": {"level": 1}, "predictor": True,
              "maxworkers": 2}


def write_tiff(rgb, path: Path, scratch: Path | None = None, *, name: str | None = None,
               chunked: ChunkedTiles | None = None) -> None:
    """Write a tiled, compressed (Big)TIFF with the reduced levels as SubIFDs of page 0
    (a pyramidal OME-TIFF: minimal OME-XML in the first page's description).

    Parameters
    ----------
    rgb : (H, W, 3) uint8 or uint16 array-like, read in strips of ``OUTPUT_TILE`` rows
        (only its shape and dtype are used with ``chunked``).
    path : the file to write.
    scratch : folder for the reduced levels' encoded tiles (:class:`_EncodedLevels`,
        written while level 0 streams); default a hidden folder beside ``path``. Removed
        when done.
    name : the final file name (``path`` may be a temporary one); seeds the OME UUID.
    chunked : levels 0 and 1 already encoded chunk by chunk (:class:`ChunkedTiles`, by the
        tasks that finish each chunk, in parallel): they are copied in TIFF order, and the
        levels below are made from its level-1 pixels. The file is byte for byte the one
        written from ``rgb``.
    """
    import tifffile

    shapes = pyramid_shapes(*rgb.shape[:2])
    dtype = np.dtype(rgb.dtype)
    first = 2 if chunked is not None else 1  # the first level encoded here, from pixels
    if scratch is None and len(shapes) > first:
        scratch = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name[:64]}.",
                                        suffix=".levels"))
    levels = None
    try:
        levels = _EncodedLevels(scratch, shapes, dtype, first) if len(shapes) > first else None
        pyramid = StripPyramid(shapes, OUTPUT_TILE, levels.sink if levels else _ignore)
        if chunked is not None:
            def level1(r: int) -> None:  # block row r's level-1 pixels down the pyramid
                if levels is not None:
                    for strip in chunked.level1_strips(r):
                        pyramid.push(1, strip)

            sources = [chunked.tiles(0, after_wait=level1), chunked.tiles(1)]
        else:
            sources = [tiles(pushed(rgb, pyramid), OUTPUT_TILE)]
        padded = sum(ceil_div(h, OUTPUT_TILE) * ceil_div(w, OUTPUT_TILE) for h, w in shapes)
        big = padded * OUTPUT_TILE**2 * 3 * dtype.itemsize > 2**31
        # OME-XML is what makes Bio-Formats (QuPath, Fiji) take the SubIFDs for a pyramid
        with tifffile.TiffWriter(path, bigtiff=big, ome=True) as tif:
            for k, (h, w) in enumerate(shapes):
                source = sources[k] if k < len(sources) else levels.encoded(k)
                tif.write(source, shape=(h, w, 3), dtype=dtype,
                          tile=(OUTPUT_TILE, OUTPUT_TILE), photometric="rgb",
                          metadata=None if k else {"UUID": _stable_uuid(rgb, name or path.name)},
                          subifds=(len(shapes) - 1 if k == 0 else None),
                          subfiletype=(1 if k else 0),
                          buffersize=OUTPUT_TILE * w * 3 * dtype.itemsize, **TIFF_CODEC)
    finally:
        if levels is not None:
            levels.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _ignore(level: int, y: int, strip: np.ndarray) -> None:
    pass


class _EncodedLevels:
    """The reduced levels of a TIFF, encoded while level 0 streams.

    Each strip a level receives (one row of tiles) is cut into tiles, which are encoded
    as tifffile encodes them (zero-padded to the tile, horizontal differencing, deflate at
    ``TIFF_CODEC``'s level) and appended to one scratch file per level; the level is then
    written from those bytes (tifffile copies encoded tiles as they are), so no level is
    left to compress after level 0. Tests check the levels pixel for pixel.
    """

    def __init__(self, scratch: Path, shapes: list[tuple[int, int]], dtype: np.dtype,
                 first: int = 1) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self.files = {k: open(scratch / f"level{k}.bin", "w+b")
                      for k in range(first, len(shapes))}
        self.sizes: dict[int, list[int]] = {k: [] for k in self.files}

    def sink(self, level: int, y: int, strip: np.ndarray) -> None:
        if level not in self.files:
            return
        f, sizes = self.files[level], self.sizes[level]
        for data in encode_tiles(np.asarray(strip, dtype=self.dtype)):
            sizes.append(len(data))
            f.write(data)

    def encoded(self, level: int) -> Iterator[bytes]:
        f = self.files[level]
        f.seek(0)
        for size in self.sizes[level]:
            yield f.read(size)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def chunk_aligned(block: int) -> bool:
    """Whether blocks of ``block`` pixels hold whole TIFF tiles of levels 0 and 1, so each
    chunk's tiles can be encoded on its own (:class:`ChunkedTiles`)."""
    return block % (2 * OUTPUT_TILE) == 0


def tiff_tiles(fmt: str, block: int) -> bool:
    """Whether the tasks that finish each chunk encode its TIFF tiles (the writer then copies
    bytes): TIFF outputs whose blocks hold whole tiles of levels 0 and 1."""
    return fmt == "tiff" and chunk_aligned(block)


@functools.cache
def _tile_encoder() -> Callable[[np.ndarray], bytes]:
    import tifffile

    predict = tifffile.TIFF.PREDICTORS[2 if TIFF_CODEC["predictor"] else 1]
    compress = tifffile.TIFF.COMPRESSORS[tifffile.COMPRESSION.ADOBE_DEFLATE]
    level = TIFF_CODEC["compressionargs"]["level"]
    return lambda tile: compress(predict(tile, axis=-2), level=level)


def encode_tiles(pixels: np.ndarray, tile: int = OUTPUT_TILE) -> list[bytes]:
    """The row-major tiles of (h, w, 3) ``pixels`` encoded as :func:`write_tiff`'s tifffile
    encodes them: zero-padded to ``tile`` x ``tile``, horizontal differencing, deflate at
    ``TIFF_CODEC``'s level."""
    encode = _tile_encoder()
    out = []
    for y in range(0, pixels.shape[0], tile):
        for x in range(0, pixels.shape[1], tile):
            t = pixels[y : y + tile, x : x + tile]
            if t.shape[:2] != (tile, tile):
                t = np.pad(t, ((0, tile - t.shape[0]), (0, tile - t.shape[1]), (0, 0)))
            out.append(encode(np.ascontiguousarray(t)))
    return out


def save_chunk_tiles(path: Path, levels: list[list[bytes]]) -> None:
    """Write one chunk's encoded tiles, level by level, to ``path`` (atomically): a header
    of little-endian uint64 (its length n, then the number of levels, the tile count of
    each, every tile's size), then the tiles' bytes in that order."""
    head = [len(levels), *map(len, levels), *(len(b) for level in levels for b in level)]
    header = np.array([len(head), *head], dtype="<u8").tobytes()
    write_atomic(path, [header, *(b for level in levels for b in level)])


class _ChunkFile:
    """Reads ranges of one chunk's tiles from a :func:`save_chunk_tiles` file."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "rb")
        n = int(np.frombuffer(self.f.read(8), "<u8")[0])
        head = np.frombuffer(self.f.read(8 * n), "<u8").astype(np.int64)
        counts = head[1 : 1 + head[0]]
        sizes = head[1 + head[0] :]
        ends = np.cumsum(sizes) + 8 * (n + 1)
        self.starts = np.concatenate([[8 * (n + 1)], ends[:-1]])
        self.sizes, self.first = sizes, np.concatenate([[0], np.cumsum(counts)])

    def read(self, level: int, first: int, count: int) -> list[bytes]:
        i = int(self.first[level]) + first
        self.f.seek(int(self.starts[i]))
        data = self.f.read(int(self.sizes[i : i + count].sum()))
        cuts = np.concatenate([[0], np.cumsum(self.sizes[i : i + count])]).tolist()
        return [data[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]

    def close(self) -> None:
        self.f.close()


class ChunkedTiles:
    """An image's TIFF levels 0 and 1, encoded chunk by chunk into ``folder`` (one
    :func:`save_chunk_tiles` file ``{r}.{c}.bin`` per chunk of ``block`` x ``block``
    pixels, levels 0 then 1), and its level-1 pixels (``level1``, an array-like).

    ``block`` must be a multiple of twice ``OUTPUT_TILE``, so that the tiles of both levels
    never straddle two chunks. ``wait_rows(first, last)`` returns once those block rows are
    final.
    """

    def __init__(self, folder: Path, shape: tuple[int, int], block: int, level1=None,
                 wait_rows: Callable[[int, int], None] | None = None) -> None:
        if not chunk_aligned(block):
            raise ValueError(f"block must be a multiple of {2 * OUTPUT_TILE}, got {block}")
        self.folder, self.block, self.level1 = Path(folder), block, level1
        self.height, self.width = shape
        self.wait_rows = wait_rows or (lambda first, last: None)

    def _tiles_per_chunk(self, length: int, level: int) -> list[int]:
        """Tiles across each chunk along an axis of ``length`` pixels, at ``level``."""
        sides = [min(self.block, length - s) for s in range(0, length, self.block)]
        return [ceil_div(ceil_div(side, 2**level), OUTPUT_TILE) for side in sides]

    def tiles(self, level: int, after_wait: Callable[[int], None] | None = None
              ) -> Iterator[bytes]:
        """Level ``level``'s encoded tiles in TIFF order (row-major over the image),
        block row by block row as each becomes final; ``after_wait(r)`` runs once block
        row r is."""
        rows = self._tiles_per_chunk(self.height, level)
        cols = self._tiles_per_chunk(self.width, level)
        for r, n_rows in enumerate(rows):
            self.wait_rows(r, r)
            if after_wait is not None:
                after_wait(r)
            files = [_ChunkFile(self.folder / f"{r}.{c}.bin") for c in range(len(cols))]
            try:
                for i in range(n_rows):
                    for f, n in zip(files, cols, strict=True):
                        yield from f.read(level, i * n, n)
            finally:
                for f in files:
                    f.close()

    def level1_strips(self, r: int) -> Iterator[np.ndarray]:
        """Block row r of level 1, in strips of ``OUTPUT_TILE`` rows."""
        half = self.block // 2
        stop = min((r + 1) * half, self.level1.shape[0])
        for y in range(r * half, stop, OUTPUT_TILE):
            yield np.asarray(self.level1[y : min(y + OUTPUT_TILE, stop)])


def _stable_uuid(rgb, name: str) -> str:
    """The OME-XML UUID, derived from the output's name, shape and dtype instead of drawn at
    random, so the same result is written as the same bytes (a resumed run is checked byte
    for byte) without reading any pixels twice."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL,
                          f"tilecolor:{name}:{tuple(rgb.shape)}:{np.dtype(rgb.dtype)}"))
