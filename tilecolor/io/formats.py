"""The formats table: what is read and written, under which file names, within which limits.

Every module that needs a format's name, extension or size limit reads it here.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from tilecolor.core.errors import OutputError


class OutputFormat(StrEnum):
    """Output formats (``--format``); ``zarr`` is an OME-Zarr folder."""

    TIFF = "tiff"
    PNG = "png"
    JPEG = "jpeg"
    ZARR = "zarr"


FORMATS = tuple(f.value for f in OutputFormat)
#: An output's extension, where it is not the input's own (:func:`output_path`)
EXTENSIONS = {"tiff": ".tif", "png": ".png", "jpeg": ".jpg", "zarr": ".ome.zarr"}
#: Input extensions and the format each names (the file's magic bytes decide: probe)
INPUT_EXTENSIONS = {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpeg",
                    ".jpeg": "jpeg"}
JPEG_MAX_SIDE = 65500  #: libjpeg's limit on each side


def format_of(suffix: str) -> str | None:
    """The input format an extension names (any case), or None."""
    return INPUT_EXTENSIONS.get(suffix.lower())


def output_path(out_dir: Path, src: Path, fmt: str) -> Path:
    """``out_dir/<stem><ext>``; keeps the input's extension when the format is unchanged.

    ``zarr`` outputs are folders named ``<stem>.ome.zarr`` (``x.ome.tif`` -> ``x.ome.zarr``).
    """
    ext = src.suffix if format_of(src.suffix) == fmt else EXTENSIONS[fmt]
    stem = src.stem
    if fmt == "zarr" and stem.lower().endswith(".ome") and len(stem) > 4:
        stem = stem[:-4]
    name = Path(stem + ext).name
    if name in ("", ".", "..") or "/" in name:
        raise OutputError(f"cannot derive an output name from {src}")
    return out_dir / name


def check_output_size(src: Path, height: int, width: int, fmt: str) -> None:
    """OutputError when the output format cannot hold the image (JPEG: ``JPEG_MAX_SIDE`` a side)."""
    if fmt == "jpeg" and max(height, width) > JPEG_MAX_SIDE:
        raise OutputError(f"{src}: {width} x {height} is too large for JPEG output (at most "
                          f"{JPEG_MAX_SIDE} pixels a side); use --format tiff")
