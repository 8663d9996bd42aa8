"""OME-Zarr outputs (NGFF 0.4, zarr format 2): a multiscale RGB image, streamed
(:mod:`tilecolor.io.pyramid`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tilecolor.io.pyramid import StripPyramid, pyramid_shapes, strips

ZARR_CHUNK = 512  #: y and x chunk side of OME-Zarr outputs (one channel per chunk)


#: Zarr array config for arrays written with real data: skip zarr's check for chunks equal
#: to the fill value, a pass over each chunk that costs as much as the write itself.
WRITE_ALL = {"write_empty_chunks": True}


def write_ome_zarr(rgb, path: Path, name: str = "image") -> None:
    """Write an OME-Zarr (NGFF 0.4, zarr format 2) multiscale RGB image into folder ``path``.

    Arrays ``0``, ``1``, ... of shape (3, h_k, w_k) (axes c, y, x), chunks (1, 512, 512),
    Blosc (zstd level 1, bit shuffle); the ``omero`` block shows channels 0-2 as red, green
    and blue over the dtype's full range.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 or uint16 array-like, read in strips of ``ZARR_CHUNK`` rows.
    path : the folder to create (replaced if it exists).
    name : the image's name in the metadata.
    """
    import numcodecs
    import zarr

    shapes = pyramid_shapes(*rgb.shape[:2])
    dtype = np.dtype(rgb.dtype)
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    # on photos: 10x faster than zstd-5 with byte shuffle, and a slightly better ratio
    codec = numcodecs.Blosc(cname="zstd", clevel=1, shuffle=numcodecs.Blosc.BITSHUFFLE)
    arrays = [group.create_array(str(k), shape=(3, h, w), dtype=dtype, fill_value=0,
                                 chunks=(1, min(ZARR_CHUNK, h), min(ZARR_CHUNK, w)),
                                 compressors=codec,
                                 chunk_key_encoding={"name": "v2", "separator": "/"}
                                 ).with_config(WRITE_ALL)
              for k, (h, w) in enumerate(shapes)]

    def sink(level: int, y: int, strip: np.ndarray) -> None:
        arrays[level][:, y : y + strip.shape[0]] = np.moveaxis(strip, -1, 0)

    pyramid = StripPyramid(shapes, ZARR_CHUNK, sink)
    for strip in strips(rgb, ZARR_CHUNK):
        pyramid.push(0, strip)
    group.attrs.update(ome_metadata(name, len(shapes), dtype))


def ome_metadata(name: str, n_levels: int, dtype: np.dtype) -> dict:
    """NGFF 0.4 ``multiscales`` and ``omero`` attributes of an RGB image with axes c, y, x."""
    top = int(np.iinfo(dtype).max) if np.dtype(dtype).kind in "ui" else 1
    datasets = [{"path": str(k), "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, float(2**k), float(2**k)]}]}
        for k in range(n_levels)]
    channels = [{"label": label, "color": color, "active": True, "coefficient": 1.0,
                 "family": "linear", "inverted": False,
                 "window": {"start": 0, "end": top, "min": 0, "max": top}}
                for label, color in (("red", "FF0000"), ("green", "00FF00"),
                                     ("blue", "0000FF"))]
    return {
        "multiscales": [{
            "version": "0.4", "name": name,
            "axes": [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"},
                     {"name": "x", "type": "space"}],
            "datasets": datasets, "type": "mean",
            "metadata": {"description": "2x2 mean per channel, rounded half up",
                         "writer": "tilecolor"}}],
        "omero": {"version": "0.4", "name": name, "channels": channels,
                  "rdefs": {"model": "color", "defaultZ": 0, "defaultT": 0}},
    }
