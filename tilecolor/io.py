"""Image readers and writers: header probes, region reads, streamed atomic outputs.

Inputs: TIFF (8/16-bit, BigTIFF, tiled or striped; read by region through tifffile's zarr
store, never decoded whole), PNG and JPEG (decoded whole; they are not gigapixel formats).
Color inputs are converted to the gray with the same L*. Outputs are written to a hidden
temporary name beside the target and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tilecolor.color import rgb_to_gray
from tilecolor.errors import InputError, OutputError

log = logging.getLogger(__name__)

FORMATS = ("tiff", "png", "jpeg")
EXTENSIONS = {"tiff": ".tif", "png": ".png", "jpeg": ".jpg"}
_MAGIC = ((b"II*\x00", "tiff"), (b"MM\x00*", "tiff"), (b"II+\x00", "tiff"), (b"MM\x00+", "tiff"),
          (b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"))
OUTPUT_TILE = 256  #: tile side of TIFF outputs (tifffile wants multiples of 16)


@dataclass(frozen=True)
class ImageInfo:
    """What the header says about an input."""

    path: Path
    format: str
    height: int
    width: int
    dtype: str  #: "uint8" or "uint16"
    channels: int  #: 1 gray, 3 RGB, 4 RGBA

    @property
    def is_color(self) -> bool:
        return self.channels >= 3

    @property
    def pixels(self) -> int:
        return self.height * self.width


def sniff(path: Path) -> str:
    """The file's format from its magic bytes (not its name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})") from e
    if not head:
        raise InputError(path, "empty file (0 bytes)")
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    raise InputError(path, "not a TIFF, PNG or JPEG file (unrecognized header)")


def _check_dtype(path: Path, dtype: np.dtype) -> str:
    if dtype not in (np.uint8, np.uint16):
        raise InputError(path, f"unsupported sample type {dtype} (need 8- or 16-bit integers)")
    return str(np.dtype(dtype))


def probe(path: str | Path) -> ImageInfo:
    """Read only the header: format, size, bit depth, channels. Raises InputError."""
    path = Path(path)
    fmt = sniff(path)
    try:
        if fmt == "tiff":
            return _probe_tiff(path)
        return _probe_pillow(path, fmt)
    except InputError:
        raise
    except Exception as e:  # a corrupt header can raise anything inside the decoders
        raise InputError(path, f"corrupt or unreadable {fmt.upper()} header ({e})") from e


def _probe_tiff(path: Path) -> ImageInfo:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape, axes = series.shape, series.axes
        dtype = _check_dtype(path, series.dtype)
        if len(tif.series) > 1 or len(series.shape) > 3:
            log.warning("%s: several pages or series; using the first image", path)
    if axes.endswith("YXS") and shape[-1] in (3, 4):
        channels, (h, w) = shape[-1], shape[-3:-1]
    elif axes.endswith("YX"):
        channels, (h, w) = 1, shape[-2:]
    else:
        raise InputError(path, f"unsupported TIFF layout axes={axes!r} shape={shape}")
    return ImageInfo(path, "tiff", int(h), int(w), dtype, int(channels))


def _probe_pillow(path: Path, fmt: str) -> ImageInfo:
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        dtype, channels = "uint16", 1
    elif mode in ("L", "1"):
        dtype, channels = "uint8", 1
    elif mode in ("RGB", "RGBA", "P", "PA", "LA", "CMYK", "YCbCr"):
        dtype, channels = "uint8", 3
    else:
        raise InputError(path, f"unsupported {fmt.upper()} pixel mode {mode!r}")
    return ImageInfo(path, fmt, int(h), int(w), dtype, channels)


def to_gray(path: Path, pixels: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) pixels -> (H, W) gray of the same L*, same dtype."""
    if pixels.ndim == 2:
        return pixels
    if pixels.shape[-1] == 1:
        return pixels[..., 0]
    return rgb_to_gray(pixels[..., :3])


def read_whole(info: ImageInfo) -> np.ndarray:
    """Decode a PNG or JPEG (or small TIFF) as (H, W) gray of dtype ``info.dtype``."""
    path = info.path
    try:
        if info.format == "tiff":
            return read_tiff_region(path, 0, info.height, 0, info.width)
        if info.format == "png":
            import imagecodecs

            pixels = imagecodecs.png_decode(path.read_bytes())
        else:
            from PIL import Image, ImageOps

            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)
                if im.mode not in ("L", "RGB"):
                    im = im.convert("RGB")
                pixels = np.asarray(im)
    except InputError:
        raise
    except Exception as e:
        raise InputError(path, f"cannot decode {info.format.upper()} ({e})") from e
    gray = to_gray(path, pixels)
    if gray.shape != (info.height, info.width):
        raise InputError(path, f"decoded size {gray.shape} differs from the header's "
                               f"{(info.height, info.width)}")
    return gray.astype(info.dtype, copy=False)


def read_tiff_region(path: Path, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Rows y0:y1, columns x0:x1 of the first TIFF image as (h, w) gray, decoding only the
    tiles or strips that overlap the region."""
    import tifffile
    import zarr

    try:
        with tifffile.imread(path, aszarr=True, series=0, level=0) as store:
            arr = zarr.open_array(store, mode="r")
            region = np.asarray(arr[..., y0:y1, x0:x1, :] if arr.ndim == 3
                                and arr.shape[-1] in (3, 4) else arr[..., y0:y1, x0:x1])
    except Exception as e:
        raise InputError(path, f"cannot decode TIFF region ({e})") from e
    while region.ndim > 3 or (region.ndim == 3 and region.shape[-1] not in (3, 4)):
        region = region[0]  # first page of a multi-page stack
    return to_gray(path, region)


def output_path(out_dir: Path, src: Path, fmt: str) -> Path:
    """``out_dir/<stem><ext>``; keeps the input's extension when the format is unchanged."""
    ext = src.suffix if src.suffix.lower() in {".tif", ".tiff", ".png", ".jpg", ".jpeg"} \
        and sniff_ext(src.suffix) == fmt else EXTENSIONS[fmt]
    name = Path(src.stem + ext).name
    if name in ("", ".", "..") or "/" in name:
        raise OutputError(f"cannot derive an output name from {src}")
    return out_dir / name


def sniff_ext(suffix: str) -> str | None:
    return {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpeg",
            ".jpeg": "jpeg"}.get(suffix.lower())


def _strips(rgb, rows: int) -> Iterator[np.ndarray]:
    for y in range(0, rgb.shape[0], rows):
        yield np.asarray(rgb[y : y + rows])


def _tiles(rgb, tile: int) -> Iterator[np.ndarray]:
    """Row-major TIFF tiles, padded at the right and bottom edges."""
    h, w = rgb.shape[:2]
    for strip in _strips(rgb, tile):
        if strip.shape[0] < tile:
            strip = np.pad(strip, ((0, tile - strip.shape[0]), (0, 0), (0, 0)))
        for x in range(0, w, tile):
            t = strip[:, x : x + tile]
            if t.shape[1] < tile:
                t = np.pad(t, ((0, 0), (0, tile - t.shape[1]), (0, 0)))
            yield t


def write_image(rgb, dest: Path, fmt: str) -> Path:
    """Write an (H, W, 3) array-like (a zarr array is read strip by strip) atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write(rgb, tmp, fmt)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _write(rgb, path: Path, fmt: str) -> None:
    h, w = rgb.shape[:2]
    dtype = np.dtype(rgb.dtype)
    if fmt == "tiff":
        import tifffile

        big = h * w * 3 * dtype.itemsize > 2**31
        tifffile.imwrite(path, _tiles(rgb, OUTPUT_TILE), shape=(h, w, 3), dtype=dtype,
                         tile=(OUTPUT_TILE, OUTPUT_TILE), photometric="rgb",
                         compression="zlib", bigtiff=big, metadata=None)
    elif fmt == "png":
        import imagecodecs

        path.write_bytes(imagecodecs.png_encode(np.asarray(rgb[:]), level=6))
    elif fmt == "jpeg":
        from PIL import Image

        pixels = np.asarray(rgb[:])
        if dtype == np.uint16:
            pixels = (pixels >> 8).astype(np.uint8)
        if max(h, w) > 65500:
            raise OutputError(f"{path}: {w}x{h} is too large for JPEG; use --format tiff")
        Image.fromarray(pixels, "RGB").save(path, format="JPEG", quality=95, subsampling=0)
    else:
        raise OutputError(f"unknown output format {fmt!r}")
