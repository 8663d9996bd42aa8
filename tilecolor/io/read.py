"""Image readers: header probes and region reads.

Inputs: TIFF (1/8/16-bit, float, BigTIFF, tiled or striped, any page; read by region through
tifffile's zarr store, never decoded whole), PNG and JPEG (decoded whole; they are not
gigapixel formats, and Pillow's decompression-bomb guard applies to them). Every input is
checked from its header first (:func:`probe`, rules in :mod:`tilecolor.io.validate`); color
inputs are converted to the gray with the same L*.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tilecolor.core.color import rgb_to_gray
from tilecolor.core.errors import InputError, one_line
from tilecolor.io.formats import format_of
from tilecolor.io.validate import (
    InputPolicy,
    check_regular_file,
    check_size,
    identify,
    orient,
    oriented_size,
    png_header,
    samples_to_gray,
    tiff_layout,
)

log = logging.getLogger(__name__)

_PIL_FORMATS = {"png": ["PNG"], "jpeg": ["JPEG"]}  # JPEG's opener also makes MPO


_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # PNG color type -> samples after decoding


@dataclass(frozen=True)
class ImageInfo:
    """What the header says about an input (sizes after EXIF orientation)."""

    path: Path
    format: str
    height: int
    width: int
    dtype: str  #: of the gray that is colorized: "uint8" or "uint16"
    channels: int  #: 1 gray, 2 gray+alpha, 3 RGB or palette, 4 RGBA or CMYK
    page: int = 0  #: TIFF page read
    pages: int = 1
    orientation: int = 1  #: EXIF orientation applied to PNG/JPEG pixels
    notes: tuple[str, ...] = ()  #: warnings (conversions, ignored pages or tags)

    @property
    def is_color(self) -> bool:
        return self.channels >= 3

    @property
    def pixels(self) -> int:
        return self.height * self.width


def sniff(path: Path) -> str:
    """The file's format from its magic bytes (not its name). Raises InputError."""
    return identify(path, _head(path))


def _head(path: Path, n: int = 64) -> bytes:
    check_regular_file(path)
    try:
        with open(path, "rb") as f:
            head = f.read(n)
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})") from e
    if not head:
        raise InputError(path, "empty file (0 bytes)")
    return head


def probe(path: str | Path, policy: InputPolicy | None = None, *,
          warn: bool = True) -> ImageInfo:
    """Read only the header: format, size, bit depth, channels, pages. Raises InputError.

    Parameters
    ----------
    path : the input file.
    policy : pixel limit and TIFF page (default: ``InputPolicy()``, 2**33 pixels, page 0).
    warn : log the info's ``notes`` (color converted, extra pages...) as warnings.
    """
    path = Path(path)
    policy = policy or InputPolicy()
    head = _head(path)
    fmt = identify(path, head)
    try:
        info = _probe_tiff(path, policy) if fmt == "tiff" else \
            _probe_pillow(path, fmt, head, policy)
    except InputError:
        raise
    except Exception as e:  # a corrupt header can raise anything inside the decoders
        raise InputError(path, f"corrupt or unreadable {fmt.upper()} header "
                               f"({type(e).__name__}: {e})") from e
    named = format_of(path.suffix)
    if named != fmt:
        info = _with_note(info, f"named {path.suffix or 'without extension'} but is a "
                                f"{fmt.upper()} file; read as {fmt.upper()}")
    if warn:
        for note in info.notes:
            log.warning("%s", one_line(f"{path}: {note}"))
    return info


def _with_note(info: ImageInfo, note: str) -> ImageInfo:
    from dataclasses import replace

    return replace(info, notes=(*info.notes, note))


def _probe_tiff(path: Path, policy: InputPolicy) -> ImageInfo:
    import tifffile

    size = path.stat().st_size
    with tifffile.TiffFile(path) as tif:
        n = len(tif.pages)
        if n == 0:
            raise InputError(path, "corrupt TIFF header (no image pages)")
        if policy.page >= n:
            raise InputError(path, f"--page {policy.page} asked but the file has {n} page(s)")
        page = tif.pages[policy.page]
        layout = tiff_layout(path, page, size)
        shape, axes = page.shape, page.axes
    h, w = int(shape[axes.index("Y")]), int(shape[axes.index("X")])
    check_size(path, h, w, policy.max_pixels)
    notes = layout.notes
    if n > 1:
        notes = (f"{n} pages; colorizing page {policy.page} only (choose with --page N)",
                 *notes)
    channels = 3 if layout.kind == "palette" else layout.channels
    return ImageInfo(path, "tiff", h, w, layout.out_dtype, channels, policy.page, n,
                     notes=notes)


def _probe_pillow(path: Path, fmt: str, head: bytes, policy: InputPolicy) -> ImageInfo:
    from PIL import Image

    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        try:
            im = Image.open(path, formats=_PIL_FORMATS[fmt])
        except Image.DecompressionBombError as e:
            raise InputError(path, f"refused by the decompression-bomb guard ({e})") from e
        with im:
            (w, h), mode = im.size, im.mode
            frames = int(getattr(im, "n_frames", 1))
            orientation = _exif_orientation(im, fmt, notes)
    for c in caught:  # Pillow's complaints about metadata: the pixels may still be fine
        if issubclass(c.category, Image.DecompressionBombWarning):
            notes.append(f"{w * h} pixels is above Pillow's MAX_IMAGE_PIXELS warning level")
        elif str(c.message).strip() not in notes:
            notes.append(str(c.message).strip())
    if policy.page > 0:
        raise InputError(path, f"--page {policy.page}: only TIFF pages can be chosen "
                               f"({fmt.upper()} files hold one image)")
    if fmt == "png":
        bits, color_type = png_header(path, head)
        if color_type not in _PNG_CHANNELS:
            raise InputError(path, f"corrupt PNG header (color type {color_type})")
        dtype, channels = ("uint16" if bits == 16 else "uint8"), _PNG_CHANNELS[color_type]
        kind = "palette" if color_type == 3 else "RGB"
    elif mode in ("L", "RGB", "YCbCr", "CMYK"):
        dtype, channels = "uint8", {"L": 1, "CMYK": 4}.get(mode, 3)
        kind = "CMYK" if mode == "CMYK" else "RGB"
    else:
        raise InputError(path, f"unsupported JPEG pixel mode {mode!r}")
    if channels >= 3:
        notes.append(f"{kind} image; colorizing its luminance (L*)")
    if channels in (2, 4) and kind != "CMYK":
        notes.append("alpha channel ignored")
    if frames > 1:
        notes.append(f"{frames} frames; colorizing the first")
    w, h = oriented_size(w, h, orientation)
    check_size(path, h, w, policy.max_pixels)
    return ImageInfo(path, fmt, int(h), int(w), dtype, channels, 0, 1, orientation,
                     tuple(notes))


def _exif_orientation(im, fmt: str, notes: list[str]) -> int:
    """The EXIF orientation (1-8) without decoding pixels: a PNG's eXIf chunk counts only
    when it comes before the image data (Pillow would otherwise decode the whole image)."""
    if fmt == "png" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(274, 1)
    except Exception:  # malformed EXIF: the pixels are still fine
        notes.append("unreadable EXIF data ignored")
        return 1
    if not isinstance(value, int) or not 1 <= value <= 8:
        notes.append(f"invalid EXIF orientation {value!r} ignored")
        return 1
    return value


def to_gray(path: Path, pixels: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) pixels -> (H, W) gray of the same L*, same dtype. C = 2 is gray
    plus alpha; C = 4 is RGBA (alpha ignored)."""
    if pixels.ndim == 2:
        return pixels
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 2, 3, 4):
        raise InputError(path, f"unexpected decoded shape {pixels.shape}")
    if pixels.shape[-1] <= 2:
        return pixels[..., 0]
    return rgb_to_gray(pixels[..., :3])


def read_whole(info: ImageInfo) -> np.ndarray:
    """Decode a PNG or JPEG (or small TIFF) as (H, W) gray of dtype ``info.dtype``, upright
    (EXIF orientation applied)."""
    path = info.path
    try:
        if info.format == "tiff":
            return read_tiff_region(path, 0, info.height, 0, info.width, page=info.page)
        if info.format == "png":
            import imagecodecs

            pixels = imagecodecs.png_decode(path.read_bytes())  # keeps 16-bit samples
        else:
            from PIL import Image

            with warnings.catch_warnings():  # already reported as notes by probe()
                warnings.simplefilter("ignore")
                with Image.open(path, formats=_PIL_FORMATS["jpeg"]) as im:
                    pixels = np.asarray(im if im.mode in ("L", "RGB") else im.convert("RGB"))
    except InputError:
        raise
    except Exception as e:
        raise InputError(path, f"cannot decode {info.format.upper()} "
                               f"({type(e).__name__}: {e})") from e
    gray = to_gray(path, orient(pixels, info.orientation))
    if gray.shape != (info.height, info.width) or gray.dtype != info.dtype:
        raise InputError(path, f"decoded {gray.dtype} {gray.shape} differs from the header's "
                               f"{info.dtype} {(info.height, info.width)}")
    return np.ascontiguousarray(gray)


def read_tiff_region(path: Path, y0: int, y1: int, x0: int, x1: int, *,
                     page: int = 0) -> np.ndarray:
    """Rows y0:y1, columns x0:x1 of a TIFF page as (h, w) gray (uint8 or uint16), decoding
    only the tiles or strips that overlap the region. Raises InputError (truncated data,
    NaN or out-of-range float samples...)."""
    import tifffile
    import zarr

    path = Path(path)
    try:
        size = path.stat().st_size
        with tifffile.TiffFile(path) as tif:
            pg = tif.pages[page]
            layout = tiff_layout(path, pg, size)
            with pg.aszarr() as store:
                arr = zarr.open_array(store, mode="r")
                index = tuple(slice(y0, y1) if a == "Y" else slice(x0, x1) if a == "X"
                              else slice(None) for a in layout.axes)
                region = np.asarray(arr[index])
    except InputError:
        raise
    except Exception as e:
        raise InputError(path, f"cannot decode TIFF rows {y0}:{y1}, columns {x0}:{x1} "
                               f"({type(e).__name__}: {e})") from e
    return samples_to_gray(path, layout, region)
