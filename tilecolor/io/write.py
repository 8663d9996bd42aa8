"""Writing an output image: a file, or an OME-Zarr folder, written under a hidden temporary
name and renamed (:mod:`tilecolor.io.atomic`), so a reader never sees half an output;
pyramidal TIFF and OME-Zarr are streamed (:mod:`tilecolor.io.tiff`,
:mod:`tilecolor.io.omezarr`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from tilecolor.core.errors import OutputError
from tilecolor.io.atomic import remove, replace
from tilecolor.io.formats import EXTENSIONS, JPEG_MAX_SIDE
from tilecolor.io.omezarr import write_ome_zarr
from tilecolor.io.tiff import write_tiff


def write_image(rgb, dest: Path, fmt: str, *, scratch: Path | None = None,
                tmp_dir: Path | None = None, chunked=None) -> Path:
    """Write an (H, W, 3) array-like atomically (TIFF and OME-Zarr stream it in strips).

    Parameters
    ----------
    rgb : (H, W, 3) uint8 or uint16 pixels; a zarr array is read strip by strip (PNG and
        JPEG read it whole).
    dest : the output file (``zarr``: the output folder); an existing one is replaced.
    fmt : one of :data:`FORMATS`.
    scratch : folder for the TIFF pyramid's temporary levels (default: beside ``dest``).
    tmp_dir : where the file is written before it is renamed to ``dest`` (default: beside
        it; must be on the same file system). The engine uses the image's working store, so
        a run killed while streaming leaves nothing beside the outputs.
    chunked : a TIFF's levels 0 and 1 already encoded (:class:`tilecolor.io.tiff.ChunkedTiles`).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    where = tmp_dir or dest.parent
    # the prefix is cut so that a long (but valid) output name still leaves a valid temp name
    prefix, suffix = f".{dest.name[:64]}.", ".part"
    if fmt == "zarr":
        tmp = Path(tempfile.mkdtemp(dir=where, prefix=prefix, suffix=suffix))
    else:
        fd, tmp_name = tempfile.mkstemp(dir=where, prefix=prefix, suffix=suffix)
        os.close(fd)
        tmp = Path(tmp_name)
    try:
        _write(rgb, tmp, fmt, dest, scratch, chunked)
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp/mkdtemp make 0600/0700; outputs get the usual mode
        tmp.chmod((0o777 if tmp.is_dir() else 0o666) & ~umask)
        replace(tmp, dest)
    except BaseException:
        remove(tmp)
        raise
    return dest


def _write(rgb, path: Path, fmt: str, dest: Path, scratch: Path | None,
           chunked=None) -> None:
    h, w = rgb.shape[:2]
    dtype = np.dtype(rgb.dtype)
    if fmt == "tiff":
        write_tiff(rgb, path, scratch, name=dest.name, chunked=chunked)
    elif fmt == "zarr":
        write_ome_zarr(rgb, path, name=dest.name.removesuffix(EXTENSIONS["zarr"]))
    elif fmt == "png":
        import imagecodecs

        path.write_bytes(imagecodecs.png_encode(np.asarray(rgb[:]), level=6))
    elif fmt == "jpeg":
        from PIL import Image

        pixels = np.asarray(rgb[:])
        if dtype == np.uint16:
            pixels = (pixels >> 8).astype(np.uint8)
        if max(h, w) > JPEG_MAX_SIDE:
            raise OutputError(f"{path}: {w}x{h} is too large for JPEG; use --format tiff")
        Image.fromarray(pixels, "RGB").save(path, format="JPEG", quality=95, subsampling=0)
    else:
        raise OutputError(f"unknown output format {fmt!r}")
