"""Nothing lost: where outputs may go, which output paths are safe to write, and whether the
disk can hold a run before it starts.

Rules (documented in the README's "Nothing lost" section):

- Outputs never go into an input folder unless asked (``--allow-output-in-input``): the
  default output is ``<input>-colorized`` beside the input folder.
- An output path that is a symlink is refused, not followed; an output that is (a link to)
  an input file is refused; output names are plain names inside the output folder.
- Working-store and manifest names are cut (with a hash) so a long input name stays a valid
  file name.
- The disk check is an estimate from the headers, made before any work starts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tilecolor.core.errors import ConfigError, OutputError
from tilecolor.core.tiling import Plan, footprint_capacity
from tilecolor.io.tiff import tiff_tiles

JPEG_BYTES_PER_PIXEL = 1.0  #: quality 95, 4:4:4: typically 0.3-0.8 bytes per pixel
_NAME_BYTES = 180  #: longest work name kept as is (plus ".done.json.tmp" < 255 bytes)


def input_folders(inputs: Iterable[Path], given: Iterable[Path] = ()) -> set[Path]:
    """Resolved folders the inputs are listed in, plus any folder given as an input.

    An input that is a symlink counts in the folder that holds the link, not its target's:
    the target's folder is not one the run reads (and an output over the target itself is
    refused image by image, :func:`check_dest`).
    """
    folders = {Path(p).parent.resolve() for p in inputs}
    return folders | {Path(g).resolve() for g in given if Path(g).is_dir()}


def check_output_dir(out_dir: Path, folders: Iterable[Path], *, allow_inside: bool = False
                     ) -> None:
    """ConfigError if ``out_dir`` is an input folder or inside one (unless allowed).

    Outputs inside an input folder would be mixed with the originals, and a rerun would
    take them for inputs.
    """
    if allow_inside:
        return
    out = Path(out_dir).resolve()
    for folder in folders:
        if out == folder or folder in out.parents:
            raise ConfigError(f"--output {out_dir} is {'the' if out == folder else 'inside the'}"
                              f" input folder {folder}; choose another folder or pass "
                              f"--allow-output-in-input")


def file_ids(paths: Iterable[Path]) -> set[tuple[int, int]]:
    """(device, inode) of each existing path: identifies inputs through links and renames."""
    ids = set()
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        ids.add((st.st_dev, st.st_ino))
    return ids


def check_dest(src: Path, dest: Path, out_dir: Path, protected: set[tuple[int, int]]) -> None:
    """OutputError unless ``dest`` is a plain name in ``out_dir`` that is not a symlink and
    not an input file (``protected``: their :func:`file_ids`)."""
    if dest.parent != out_dir or dest.name in ("", ".", ".."):
        raise OutputError(f"{src}: output name {dest.name!r} escapes the output folder")
    if dest.is_symlink():
        raise OutputError(f"{src}: output {dest} is a symlink; refusing to follow it "
                          f"(remove it or choose another --output)")
    if file_ids([dest]) & protected:
        raise OutputError(f"{src}: output {dest} is an input file; refusing to overwrite it")


def work_name(src: Path) -> str:
    """Name of an input's working store and manifest (without suffix): the input's name, or
    for a very long one its first 100 bytes plus a hash (file names are <= 255 bytes)."""
    raw = os.fsencode(src.name)
    if len(raw) <= _NAME_BYTES:
        return src.name
    return f"{os.fsdecode(raw[:100])}-{hashlib.sha256(raw).hexdigest()[:16]}"


# ---------------------------------------------------------------- disk space

@dataclass(frozen=True)
class DiskEstimate:
    """Bytes a run needs: working stores (removed after each image) and outputs (kept)."""

    work: int
    output: int

    @property
    def total(self) -> int:
        return self.work + self.output


def estimate_image(height: int, width: int, itemsize: int, tile: int, stride: int,
                   block: int, fmt: str) -> DiskEstimate:
    """Upper estimate of one image's working store and output, uncompressed.

    Working store: ``L`` (itemsize bytes/px) + partial sums (2 float32 per pixel of every
    block footprint, about 8 bytes/px * (1 + (tile - stride)/block)^2) + ``rgb``
    (3 * itemsize bytes/px); a TIFF whose tiles the tasks encode
    (:func:`tilecolor.io.tiff.tiff_tiles`) also holds levels 0 and 1 encoded (at most
    3 * itemsize * 5/4) and level 1's pixels (3 * itemsize / 4): 4.5 * itemsize bytes/px
    more. Output: 3 * itemsize bytes/px (TIFF, PNG; both compress), or
    ``JPEG_BYTES_PER_PIXEL`` for JPEG.

    >>> estimate_image(1000, 1000, 1, 256, 256, 1000, "tiff")
    DiskEstimate(work=12000000, output=3000000)
    >>> estimate_image(1000, 1000, 1, 256, 256, 1024, "tiff")
    DiskEstimate(work=16500000, output=3000000)
    """
    plan = Plan(height, width, tile, stride, block)
    rows, cols = plan.rows, plan.cols
    partial = 8 * len(rows) * footprint_capacity(rows) * len(cols) * footprint_capacity(cols)
    pixels = height * width
    output = int(pixels * JPEG_BYTES_PER_PIXEL) if fmt == "jpeg" else 3 * itemsize * pixels
    encoded = int(4.5 * itemsize * pixels) if tiff_tiles(fmt, block) else 0
    return DiskEstimate(itemsize * pixels + partial + 3 * itemsize * pixels + encoded, output)


def estimate_batch(images: Iterable[DiskEstimate], inflight: int) -> DiskEstimate:
    """A batch's peak need: every output plus the ``inflight`` largest working stores (a
    store is removed when its image is done; at most ``inflight`` images run at once)."""
    images = list(images)
    largest = sorted((i.work for i in images), reverse=True)[: max(inflight, 1)]
    return DiskEstimate(sum(largest), sum(i.output for i in images))


def human(n: float) -> str:
    """Bytes as ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_disk(path: Path, need: DiskEstimate) -> int:
    """Free bytes where ``path`` is (or would be created); OutputError if fewer than
    ``need.total``."""
    where = Path(path).resolve()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if free < need.total:
        raise OutputError(f"not enough disk space in {where}: this run needs about "
                          f"{human(need.total)} (working stores {human(need.work)}, outputs "
                          f"{human(need.output)}) but {human(free)} is free")
    return free
