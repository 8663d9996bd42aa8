"""Header checks on inputs: what a file is, whether tilecolor can use it, and how its samples
become the gray image it colorizes.

Everything here works on a few header bytes or a parsed TIFF page (no pixel data is
decoded), except :func:`samples_to_gray` and :func:`orient`, which convert decoded regions.

Decisions, documented in the README's "Inputs" section:

- Formats are recognized by their magic bytes, not their names. Files named like other
  image formats (``.bmp``, ``.gif``, ``.webp``...) are listed and rejected as "unsupported
  format", so a batch summary accounts for every image in the folder.
- Samples: 1-bit (scaled to 0/255), 8- and 16-bit unsigned (2-15 bits scaled to the full
  range), and float. Float samples are taken in [0, 1] and mapped to uint16 at ingest;
  NaN, inf or values outside [0, 1] are an error naming the value (never silently clipped).
  Signed integers are rejected.
- Color (RGB, RGBA, palette, CMYK, YCbCr-JPEG TIFF) is converted to the gray of the same L*
  with a warning; alpha is ignored. CMYK is converted without an ICC profile.
- Multi-page TIFF: page 0 (or ``--page N``) with a warning. The TIFF Orientation tag is
  ignored with a warning (pixels are read as stored); JPEG/PNG EXIF orientation is applied.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tilecolor.core.color import rgb_to_gray
from tilecolor.core.errors import ConfigError, InputError
from tilecolor.io.formats import INPUT_EXTENSIONS

DEFAULT_MAX_PIXELS = 2**33  #: gigapixel scans pass; a forged 10^10-pixel header does not
UNSUPPORTED = {".bmp": "BMP", ".dib": "BMP", ".gif": "GIF", ".webp": "WebP",
               ".jp2": "JPEG 2000", ".j2k": "JPEG 2000", ".jpx": "JPEG 2000",
               ".jpf": "JPEG 2000", ".heic": "HEIF", ".heif": "HEIF", ".avif": "AVIF",
               ".jxl": "JPEG XL", ".psd": "PSD", ".exr": "OpenEXR", ".pbm": "Netpbm",
               ".pgm": "Netpbm", ".ppm": "Netpbm", ".pnm": "Netpbm", ".ico": "ICO",
               ".tga": "TGA", ".svg": "SVG", ".dcm": "DICOM"}
_MAGIC = ((b"II*\x00", "tiff"), (b"MM\x00*", "tiff"), (b"II+\x00", "tiff"),
          (b"MM\x00+", "tiff"), (b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"))
_OTHER = ((0, b"BM", "BMP"), (0, b"GIF87a", "GIF"), (0, b"GIF89a", "GIF"),
          (8, b"WEBP", "WebP"), (4, b"jP  ", "JPEG 2000"), (0, b"\xffO\xffQ", "JPEG 2000"),
          (4, b"ftypavif", "AVIF"), (4, b"ftyphei", "HEIF"), (4, b"ftypmif1", "HEIF"),
          (0, b"\xff\x0a", "JPEG XL"), (4, b"JXL ", "JPEG XL"), (0, b"8BPS", "PSD"),
          (0, b"v/1\x01", "OpenEXR"), (0, b"%PDF", "PDF"), (0, b"PK\x03\x04", "ZIP"),
          (0, b"\x1f\x8b", "gzip"), (0, b"\x00\x00\x01\x00", "ICO"))


@dataclass(frozen=True)
class InputPolicy:
    """What inputs are accepted: the pixel limit and which TIFF page to colorize."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    page: int = 0

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise ConfigError(f"max pixels must be >= 1, got max_pixels={self.max_pixels}")
        if self.page < 0:
            raise ConfigError(f"page must be >= 0, got page={self.page}")


def is_candidate(name: str) -> bool:
    """Whether a folder entry named ``name`` is listed as an input (read or rejected)."""
    suffix = os.path.splitext(name)[1].lower()
    return not name.startswith(".") and (suffix in INPUT_EXTENSIONS or suffix in UNSUPPORTED)


def check_regular_file(path: Path) -> int:
    """The file's size; InputError unless it is a regular file (a FIFO would block reads)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})") from e
    if not stat.S_ISREG(st.st_mode):
        raise InputError(path, "not a regular file")
    if st.st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    return st.st_size


def identify(path: Path, head: bytes) -> str:
    """``"tiff"``, ``"png"`` or ``"jpeg"`` from the first bytes, else an InputError that
    says what the file is (another image format, text, unknown)."""
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    for offset, magic, name in _OTHER:
        if head[offset : offset + len(magic)] == magic:
            return _unsupported(path, name)
    ext = UNSUPPORTED.get(path.suffix.lower())
    if ext:
        return _unsupported(path, ext)
    if _looks_like_text(head):
        raise InputError(path, "not a TIFF, PNG or JPEG file (it looks like text)")
    raise InputError(path, "not a TIFF, PNG or JPEG file (unrecognized header)")


def _looks_like_text(head: bytes) -> bool:
    printable = sum(32 <= b < 127 or b in (9, 10, 13) or b >= 128 for b in head)
    return bool(head) and b"\x00" not in head and printable >= 0.95 * len(head)


def _unsupported(path: Path, name: str) -> str:
    raise InputError(path, f"unsupported format {name} (tilecolor reads TIFF, PNG and JPEG)")


def check_size(path: Path, height: int, width: int, max_pixels: int) -> None:
    """InputError for an empty image or one above ``max_pixels`` (``--max-pixels``)."""
    if height < 1 or width < 1:
        raise InputError(path, f"empty image ({width} x {height} pixels)")
    if height * width > max_pixels:
        raise InputError(path, f"{width} x {height} = {height * width} pixels exceeds "
                               f"--max-pixels {max_pixels}")


# ---------------------------------------------------------------- TIFF pages

_KINDS = {0: "inverted", 1: "gray", 2: "rgb", 3: "palette", 5: "cmyk", 6: "rgb"}
_PHOTOMETRIC = {4: "MASK", 8: "CIELAB", 9: "ICCLAB", 10: "ITULAB", 32803: "CFA",
                32844: "LOGL", 32845: "LOGLUV", 34892: "LINEAR_RAW"}


@dataclass(frozen=True, eq=False)
class TiffLayout:
    """How one TIFF page's decoded samples become gray.

    ``axes`` is the page's ("YX", "YXS" or "SYX"); ``out_dtype`` is what the working store
    holds (uint8 or uint16); ``lut`` maps palette indices to gray.
    """

    kind: str  #: gray, inverted, rgb, palette or cmyk
    axes: str
    dtype: str
    out_dtype: str
    bits: int
    channels: int
    lut: np.ndarray | None = None
    notes: tuple[str, ...] = field(default=())


def tiff_layout(path: Path, page, file_size: int) -> TiffLayout:
    """Check a parsed ``tifffile.TiffPage`` (header only) and describe its conversion.

    Raises InputError for what cannot be read: unknown photometric, signed samples, missing
    codec, 3-D pages, and truncation (strips or tiles past the end of the file).
    """
    from tifffile import TIFF

    notes: list[str] = []
    photometric, spp = int(page.photometric), int(page.samplesperpixel)
    if getattr(page, "imagedepth", 1) > 1:
        raise InputError(path, f"3-D TIFF pages (ImageDepth {page.imagedepth}) are unsupported")
    if page.axes not in ("YX", "YXS", "SYX"):
        raise InputError(path, f"unsupported TIFF page layout axes={page.axes!r}")
    kind = _KINDS.get(photometric)
    if kind is None:
        name = _PHOTOMETRIC.get(photometric, str(photometric))
        raise InputError(path, f"unsupported TIFF photometric interpretation {name}")
    if photometric == 6 and int(page.compression) not in (6, 7):
        raise InputError(path, "YCbCr TIFF without JPEG compression is unsupported")
    if kind == "cmyk" and (spp < 4 or page.tags.valueof(332, 1) != 1):
        raise InputError(path, "separated (ink) TIFF that is not CMYK is unsupported")
    dtype = np.dtype(page.dtype) if page.dtype is not None else None
    if dtype is None or not (dtype == np.bool_ or dtype in (np.uint8, np.uint16)
                             or dtype.kind == "f"):
        raise InputError(path, f"unsupported sample type {dtype} (bits {page.bitspersample}, "
                               f"format {int(page.sampleformat)}); need 1/8/16-bit unsigned "
                               f"integers or float")
    out = "uint16" if dtype == np.uint16 or dtype.kind == "f" else "uint8"
    try:
        TIFF.DECOMPRESSORS[page.compression]
    except (KeyError, ValueError) as e:
        raise InputError(path, f"unsupported TIFF compression {page.compression!r}") from e
    _check_extent(path, page, file_size)
    lut = None
    if kind == "palette":
        lut, out = _palette_lut(path, page, dtype), "uint8"
    need = {"rgb": 3, "cmyk": 4}.get(kind, 1)
    if spp < need:
        raise InputError(path, f"{kind.upper()} TIFF with {spp} samples per pixel")
    if kind in ("rgb", "palette", "cmyk"):
        notes.append(f"{kind.upper()} image; colorizing its luminance (L*)")
    if spp > need:
        notes.append(f"{spp - need} extra sample(s) per pixel (alpha) ignored")
    if page.tags.valueof(274, 1) != 1:
        notes.append(f"TIFF Orientation tag {page.tags.valueof(274)} ignored "
                     f"(pixels are read as stored)")
    return TiffLayout(kind, page.axes, dtype.name, out, int(page.bitspersample), spp, lut,
                      tuple(notes))


def _check_extent(path: Path, page, file_size: int) -> None:
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    if offsets.size != counts.size:
        raise InputError(path, f"corrupt TIFF: {offsets.size} strip/tile offsets but "
                               f"{counts.size} byte counts")
    used = counts > 0
    if used.any():
        end = int((offsets[used] + counts[used]).max())
        if end > file_size or int(offsets[used].min()) < 0:
            raise InputError(path, f"truncated TIFF: pixel data ends at byte {end} but the "
                                   f"file has {file_size} bytes")


def _palette_lut(path: Path, page, dtype: np.dtype) -> np.ndarray:
    colormap = page.colormap
    if colormap is None or dtype.kind != "u":
        raise InputError(path, "palette TIFF without a usable colormap")
    cm = np.asarray(colormap, dtype=np.uint16)
    cm8 = (cm >> 8 if cm.max() > 255 else cm).astype(np.uint8)  # some writers store 8 bits
    return rgb_to_gray(cm8.T[None])[0]  # (n_colors,) uint8


def _to_channels_last(region: np.ndarray, axes: str) -> np.ndarray:
    if axes == "SYX":
        return np.moveaxis(region, 0, -1)
    return region


def samples_to_gray(path: Path, layout: TiffLayout, region: np.ndarray) -> np.ndarray:
    """Decoded samples of a page region (in ``layout.axes`` order) -> (h, w) gray of
    ``layout.out_dtype``. InputError for NaN, inf or float values outside [0, 1]."""
    x = _to_channels_last(np.asarray(region), layout.axes)
    if layout.kind == "palette":
        idx = x[..., 0] if x.ndim == 3 else x
        return np.take(layout.lut, idx, mode="clip")
    if x.dtype.kind == "f":
        x = _float_to_uint16(path, x)
    elif x.dtype == np.bool_:
        x = x.astype(np.uint8) * np.uint8(255)
    elif layout.bits < x.dtype.itemsize * 8 and layout.bits > 1:
        top = (1 << layout.bits) - 1  # 2..15-bit samples: stretch to the full range
        maxval = np.iinfo(x.dtype).max
        x = np.rint(np.minimum(x, top).astype(np.float64) * (maxval / top)).astype(x.dtype)
    maxval = np.iinfo(x.dtype).max
    if layout.kind == "gray":
        return x[..., 0] if x.ndim == 3 else x
    if layout.kind == "inverted":
        return maxval - (x[..., 0] if x.ndim == 3 else x)
    if layout.kind == "cmyk":
        cmy, k = x[..., :3].astype(np.float64), x[..., 3:4].astype(np.float64)
        rgb = (maxval - cmy) * (maxval - k) / maxval
        return rgb_to_gray(np.rint(rgb).astype(x.dtype))
    return rgb_to_gray(x[..., :3])


def _float_to_uint16(path: Path, x: np.ndarray) -> np.ndarray:
    finite = np.isfinite(x)
    if not finite.all():
        bad = x[~finite][0]
        raise InputError(path, f"float samples contain {bad} (NaN or inf); "
                               f"tilecolor needs finite values in [0, 1]")
    if x.size == 0:
        return x.astype(np.uint16)
    lo, hi = float(x.min()), float(x.max())
    tol = 1e-6  # rounding noise around the ends of the range
    if lo < -tol or hi > 1 + tol:
        raise InputError(path, f"float samples outside [0, 1] (found {lo:g} to {hi:g}); "
                               f"rescale the image to [0, 1] or save it as 16-bit")
    return np.rint(np.clip(x, 0.0, 1.0) * 65535.0).astype(np.uint16)


# ---------------------------------------------------------------- PNG / JPEG

def png_header(path: Path, head: bytes) -> tuple[int, int]:
    """(bit depth, color type) from a PNG's IHDR chunk (the first 33 bytes)."""
    if len(head) < 29 or head[12:16] != b"IHDR":
        raise InputError(path, "corrupt PNG header (no IHDR chunk)")
    return head[24], head[25]


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W[, C]) pixels as stored -> upright, for EXIF orientation 1-8 (as Pillow's
    ``ImageOps.exif_transpose``). Other values are taken as 1."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(pixels, -1)
    if orientation == 7:
        return pixels.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(pixels, 1)
    return pixels


def oriented_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) after :func:`orient`."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
