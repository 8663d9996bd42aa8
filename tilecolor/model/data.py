"""Training data: a folder of color photos, its split, and the photos themselves.

JPEG and PNG photos are decoded whole; TIFFs are read by region through tifffile's Zarr
view. :mod:`tilecolor.crops` turns them into Lab pyramids and draws the training crops.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from tilecolor.core.color import AB_SCALE, L_SCALE, lab_to_rgb
from tilecolor.core.errors import ConfigError, InputError
from tilecolor.io.formats import INPUT_EXTENSIONS, format_of


def list_photos(directory: str | Path) -> list[Path]:
    """The photos in ``directory`` (not recursive), sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"data directory {directory} does not exist")
    paths = sorted(p for p in directory.iterdir()
                   if p.is_file() and format_of(p.suffix) is not None)
    if not paths:
        raise ConfigError(f"no photos ({', '.join(INPUT_EXTENSIONS)}) in {directory}")
    return paths


def split_photos(paths: list[Path], val_count: int) -> tuple[list[Path], list[Path]]:
    """Split sorted ``paths`` into (train, val); val is ``val_count`` photos evenly spaced
    through the sorted names, so that every name prefix (source) tends to be represented."""
    n = len(paths)
    if not 1 <= val_count < n:
        raise ConfigError(f"need 1 <= val_count < number of photos ({n}), "
                          f"got val_count={val_count}")
    val_idx = {int((k + 0.5) * n / val_count) for k in range(val_count)}
    return ([p for i, p in enumerate(paths) if i not in val_idx],
            [p for i, p in enumerate(paths) if i in val_idx])


def fingerprint(paths: list[Path]) -> str:
    """SHA-256 over the sorted (file name, byte size) pairs: identifies a training set."""
    items = sorted((p.name, p.stat().st_size) for p in paths)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


class Photo:
    """One color photo, readable by region: ``read(y, x, h, w) -> (h, w, 3)`` in [0, 1]."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tiff = format_of(path.suffix) == "tiff"
        self._array: np.ndarray | None = None
        self._zarr = None
        self._pid = -1
        if self._tiff:
            import tifffile

            try:
                with tifffile.TiffFile(path) as tif:
                    series = tif.series[0]
                    shape, axes, dtype = series.shape, series.axes, series.dtype
            except (OSError, ValueError, tifffile.TiffFileError) as e:
                raise InputError(path, f"cannot read TIFF ({e})") from e
            if axes not in ("YX", "YXS") or (axes == "YXS" and shape[2] not in (3, 4)):
                raise InputError(path, f"need a gray or RGB(A) TIFF, got axes {axes} {shape}")
            self.shape = (int(shape[0]), int(shape[1]))
            self.maxval = float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0
        else:
            from PIL import Image, ImageOps, UnidentifiedImageError

            try:
                with Image.open(path) as im:
                    rgb = ImageOps.exif_transpose(im).convert("RGB")
            except (OSError, UnidentifiedImageError) as e:
                raise InputError(path, f"cannot decode image ({e})") from e
            self._array = np.asarray(rgb)  # (H, W, 3) uint8, decoded once
            self.shape = self._array.shape[:2]
            self.maxval = 255.0

    def read(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        if self._array is not None:
            region = self._array[y:y + h, x:x + w]
        else:
            if self._pid != os.getpid():  # a file handle is per process (DataLoader workers)
                import tifffile
                import zarr

                self._zarr = zarr.open(tifffile.imread(self.path, aszarr=True, series=0,
                                                       level=0), mode="r")
                self._pid = os.getpid()
            region = np.asarray(self._zarr[y:y + h, x:x + w])
            if region.ndim == 2:  # gray TIFF
                region = np.repeat(region[..., None], 3, axis=2)
            region = region[..., :3]
        return region.astype(np.float32) / np.float32(self.maxval)


def from_network(lightness: torch.Tensor, ab: torch.Tensor) -> np.ndarray:
    """Network units (lightness (1, H, W) in [-1, 1], ab (2, H, W)) -> uint8 RGB (H, W, 3)."""
    lab = torch.cat([(lightness + 1) * L_SCALE, ab * AB_SCALE]).permute(1, 2, 0).numpy()
    return np.rint(lab_to_rgb(lab) * 255).astype(np.uint8)


def sample_grid(lightness: torch.Tensor, pred: torch.Tensor, truth: torch.Tensor):
    """A PIL image, one row per crop: input gray | predicted color | true color."""
    from PIL import Image

    rows = [np.concatenate([from_network(x, torch.zeros_like(t)), from_network(x, p),
                            from_network(x, t)], axis=1)
            for x, p, t in zip(lightness, pred, truth, strict=True)]
    return Image.fromarray(np.concatenate(rows, axis=0))


def load_photos(paths: list[Path], crop: int) -> list[Photo]:
    photos = [Photo(p) for p in paths]
    for ph in photos:
        if min(ph.shape) < crop:
            raise InputError(ph.path, f"{ph.shape[1]}x{ph.shape[0]} is smaller than the "
                                      f"{crop}x{crop} training crop")
    return photos
