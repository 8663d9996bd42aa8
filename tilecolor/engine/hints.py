"""Hint fields: a coarse chroma field over the whole image that every tile gets as its
hint planes (:mod:`tilecolor.core.planes`), from the global context pass or a reference image.

A hint field is a (2, h', w') float32 array of ab/110 in the working store covering the
whole image; image pixel ``p`` sits at ``(p + 0.5) / k - 0.5`` in it, with ``k`` (image
pixels per field pixel, per axis) a power of two for the context pass and any positive
number for a reference (:mod:`tilecolor.core.resample`). A map task upsamples (bilinear) only
the part under its footprint, which equals that part of upsampling the whole field.

- **Context pass** (:class:`ContextPass`): ingest adds each block's area-downscaled L* to a
  context copy (``Lc``); one task runs the generator unconditionally (hint planes 0, mask
  0) over the copy with the same tiling and blending as any image, and stores its chroma
  as ``context_ab``.
- **Reference** (:class:`Reference`): ``--hint PATH``, a color image of the same scene at
  any resolution; one task stores its chroma, area-downscaled, as ``hint_ab``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tilecolor.core.blending import Blend
from tilecolor.core.color import AB_SCALE, lightness_to_input, rgb_to_lab
from tilecolor.core.errors import InputError
from tilecolor.core.resample import (
    downsample_mean,
    downsample_means,
    reduced_length,
    source_span,
    upsample_planes,
)
from tilecolor.engine.store import WorkStore
from tilecolor.engine.tiles import NetInputs, Predict, colorize_whole, pad_to_tile
from tilecolor.io.read import ImageInfo, probe
from tilecolor.io.validate import InputPolicy

CONTEXT_COPY = "Lc"  #: the context copy of L* (at ContextPass.step), written by ingest
CONTEXT_AB = "context_ab"  #: the context pass's chroma (2, Hc, Wc), the hint field
REFERENCE_AB = "hint_ab"  #: a reference image's chroma, the hint field in guided mode
DEFAULT_CONTEXT = 256  #: longer side of the context copy (``--context``)
#: The context pass is one task holding its copy (and the planes of its tiles) in memory.
MAX_CONTEXT = 4096
#: A reference may differ from the input's aspect ratio by this much (relative).
ASPECT_TOLERANCE = 0.01


@dataclass(frozen=True)
class HintField:
    """Where a map task finds its hint: store array ``array`` of shape (2, *``shape``),
    with ``scale`` = (k_rows, k_cols) pixels of the grid it is read on per field pixel."""

    array: str
    shape: tuple[int, int]
    scale: tuple[float, float]

    def on_grid(self, factor: int) -> HintField:
        """The same field read on a grid ``factor`` times coarser than the image (the
        render grid of ``render_scale = 1/factor``: its pixel q is centred on image
        coordinate (q + 0.5) * factor - 0.5)."""
        if factor == 1:
            return self
        return replace(self, scale=(self.scale[0] / factor, self.scale[1] / factor))


def hint_planes(store: WorkStore, field: HintField, rows: tuple[int, int],
                cols: tuple[int, int]) -> np.ndarray:
    """(2, rows, cols) float32: the field upsampled (bilinear) to pixels ``rows`` x
    ``cols`` of its grid, reading only the field pixels they need."""
    ylo, yhi = source_span(*rows, field.scale[0], field.shape[0])
    xlo, xhi = source_span(*cols, field.scale[1], field.shape[1])
    src = store.array(field.array)[:, ylo:yhi, xlo:xhi]
    return upsample_planes(src, (ylo, xlo), field.scale, rows, cols, field.shape)


# ---------------------------------------------------------------- the context pass

def context_factor(height: int, width: int, size: int) -> int:
    """The smallest power of two k with ceil(max(height, width) / k) <= ``size``."""
    if size < 1:
        raise ValueError(f"context size must be >= 1, got {size}")
    k = 1
    while math.ceil(max(height, width) / k) > size:
        k *= 2
    return k


@dataclass(frozen=True)
class ContextPass:
    """The global context pass of one image.

    ``factor`` k: the copy is the image's L* area-downscaled by k (longer side at most
    ``size``). Ingest writes it at ``step`` g = gcd(k, block), so that a block holds whole
    cells (g = k unless k exceeds the block or does not divide it); the context task
    reduces it by k/g, weighting the cells by their pixel counts.
    """

    height: int
    width: int
    size: int
    factor: int
    step: int

    @classmethod
    def plan(cls, height: int, width: int, size: int, block: int) -> ContextPass:
        k = context_factor(height, width, size)
        return cls(height, width, size, k, math.gcd(k, block))

    @property
    def shape(self) -> tuple[int, int]:
        return reduced_length(self.height, self.factor), reduced_length(self.width, self.factor)

    @property
    def copy_shape(self) -> tuple[int, int]:
        """The shape of ``Lc`` (cells of ``step`` pixels)."""
        return reduced_length(self.height, self.step), reduced_length(self.width, self.step)

    @property
    def field(self) -> HintField:
        return HintField(CONTEXT_AB, self.shape, (float(self.factor), float(self.factor)))


def add_to_copy(store: WorkStore, ctx: ContextPass, lightness: np.ndarray, y0: int,
                x0: int) -> None:
    """Write the context cells of the L* pixels at (y0, x0) (block-aligned: y0 and x0
    multiples of ``ctx.step``, so no cell straddles two blocks)."""
    g = ctx.step
    cells = downsample_mean(lightness, g)
    store.array(CONTEXT_COPY, "r+")[y0 // g : y0 // g + cells.shape[0],
                                    x0 // g : x0 // g + cells.shape[1]] = cells


def context_lightness(store: WorkStore, ctx: ContextPass) -> np.ndarray:
    """The context copy: (Hc, Wc) float32 L*, the image area-downscaled by ``ctx.factor``."""
    cells = store.array(CONTEXT_COPY)[:]
    return downsample_means(cells, ctx.factor // ctx.step, ctx.step,
                            (ctx.height, ctx.width))


def run_context(store: WorkStore, ctx: ContextPass, tile: int, stride: int, blend: Blend,
                batch_size: int, planes: tuple[str, ...], predict: Predict, *deps) -> dict:
    """The context pass (a task): the generator, unconditionally, over the context copy,
    tiled and blended like any image; stores ``context_ab`` (2, Hc, Wc) ab/110 and marks
    the hint done. Returns the pass's shape and tile count."""
    hc, wc = ctx.shape
    net_in = pad_to_tile(lightness_to_input(context_lightness(store, ctx)), tile)
    inputs = NetInputs(planes, net_in.shape, lightness=net_in)
    ab = colorize_whole(inputs, hc, wc, tile, stride, Blend(blend), batch_size, predict)
    store.put_small(CONTEXT_AB, ab)
    store.mark_done("hint", 0, 0)
    return {"shape": [hc, wc], "factor": ctx.factor}


# ---------------------------------------------------------------- a reference image

@dataclass(frozen=True)
class Reference:
    """Guided mode: the reference image ``info`` (probed) for an image of ``height`` x
    ``width``, its chroma area-downscaled by ``factor`` (longer side about ``size`` to
    2 * ``size``). The field's scale is the image's size over the reference's, times
    ``factor``: pixel centres of image and reference aligned."""

    info: ImageInfo
    height: int
    width: int
    factor: int
    digest: str

    @property
    def shape(self) -> tuple[int, int]:
        return (reduced_length(self.info.height, self.factor),
                reduced_length(self.info.width, self.factor))

    @property
    def field(self) -> HintField:
        return HintField(REFERENCE_AB, self.shape,
                         (self.height * self.factor / self.info.height,
                          self.width * self.factor / self.info.width))


def plan_reference(src: Path, height: int, width: int, reference: Path, size: int,
                   policy: InputPolicy | None = None) -> Reference:
    """Check a reference for image ``src`` (height x width) from its header: readable, in
    color, the same aspect ratio within 1 % (InputError naming both files otherwise)."""
    from tilecolor.model.checkpoint import file_digest

    info = probe(reference, policy, warn=False)
    if not info.is_color:
        raise InputError(src, f"hint {reference} is not a color image (it has "
                              f"{info.channels} channel{'s' * (info.channels > 1)})")
    mismatch = (width / height) / (info.width / info.height) - 1
    if abs(mismatch) > ASPECT_TOLERANCE:
        raise InputError(src, f"hint {reference} is {info.width}x{info.height}, "
                              f"aspect ratio {info.width / info.height:.4f}, the image's "
                              f"{width}x{height} is {width / height:.4f} (more than "
                              f"{ASPECT_TOLERANCE:.0%} apart)")
    factor = max(1, max(info.height, info.width) // max(1, size))
    try:
        digest = file_digest(reference)
    except OSError as e:
        raise InputError(src, f"cannot read hint {reference} ({e.strerror})") from e
    return Reference(info, height, width, factor, digest)


def find_reference(src: Path, hint: Path) -> Path:
    """The reference for input ``src``: ``hint`` itself when it is a file, else the one
    image file in folder ``hint`` with ``src``'s name stem (InputError when there is
    none, or several)."""
    from tilecolor.io.validate import is_candidate

    hint = Path(hint)
    if not hint.is_dir():
        return hint
    found = sorted(p for p in hint.iterdir()
                   if p.stem == src.stem and is_candidate(p.name) and not p.is_dir())
    if not found:
        raise InputError(src, f"no hint for it in {hint} (no image named {src.stem}.*)")
    if len(found) > 1:
        raise InputError(src, f"several hints for it in {hint}: "
                              f"{', '.join(p.name for p in found)}")
    return found[0]


def read_color(info: ImageInfo) -> np.ndarray:
    """A color image as (h, w, 3) float32 sRGB in [0, 1], upright. Raises InputError."""
    path = info.path
    try:
        if info.format == "tiff":
            rgb = _tiff_rgb(info)
        else:
            from PIL import Image, ImageOps

            with Image.open(path) as im:
                rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"),
                                 dtype=np.float32) / 255.0
    except InputError:
        raise
    except Exception as e:
        raise InputError(path, f"cannot decode the hint image ({type(e).__name__}: {e})") \
            from e
    if rgb.shape[:2] != (info.height, info.width):
        raise InputError(path, f"decoded {rgb.shape[:2]} differs from the header's "
                               f"{(info.height, info.width)}")
    return rgb


def _tiff_rgb(info: ImageInfo) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(info.path) as tif:
        page = tif.pages[info.page]
        x = page.asarray()
        if int(page.photometric) == 3:  # palette: 16-bit colormap entries
            return (np.moveaxis(page.colormap, 0, -1)[x] / 65535.0).astype(np.float32)
        if int(page.photometric) != 2 or x.ndim != 3:
            raise InputError(info.path, f"hint TIFF photometric {page.photometric.name} is "
                                        f"not RGB")
    if x.shape[0] in (3, 4) and x.shape[-1] not in (3, 4):  # planar (S, Y, X)
        x = np.moveaxis(x, 0, -1)
    x = x[..., :3]
    if x.dtype.kind == "f":
        return np.clip(np.nan_to_num(x.astype(np.float32)), 0, 1)
    return (x / float(np.iinfo(x.dtype).max)).astype(np.float32)


def run_reference(store: WorkStore, ref: Reference, *deps) -> dict:
    """Store a reference's chroma as the hint field (a task): RGB -> Lab, ab/110,
    area-downscaled by ``ref.factor`` -> ``hint_ab`` (2, h', w'); marks the hint done."""
    lab = rgb_to_lab(read_color(ref.info))
    ab = np.stack([downsample_mean(lab[..., ch] / np.float32(AB_SCALE), ref.factor)
                   for ch in (1, 2)])
    store.put_small(REFERENCE_AB, ab.astype(np.float32))
    store.mark_done("hint", 0, 0)
    return {"shape": list(ab.shape[1:]), "factor": ref.factor}

