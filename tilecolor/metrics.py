"""Image quality metrics of a colorization against the truth: pure functions, uint8 RGB in.

- ``psnr``, ``ssim``: on RGB, data range 255 (scikit-image). PSNR of identical images is inf.
- ``ciede2000``: mean CIEDE2000 color difference of the Lab images (scikit-image's rgb2lab).
- ``ab_rmse``: sqrt(mean(da*^2 + db*^2)), Lab units; for the gray baseline it is the truth's
  chroma RMS.
- ``colorfulness``: Hasler & Suesstrunk (2003), on 0-255 RGB; 0 for a gray image.
"""

from __future__ import annotations

import math

import numpy as np

METRICS = ("psnr", "ssim", "ciede2000", "ab_rmse", "colorfulness", "colorfulness_ratio")


def _check_pair(pred: np.ndarray, truth: np.ndarray) -> None:
    if pred.shape != truth.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"need two RGB images of the same shape, got {pred.shape} and "
                         f"{truth.shape}")


def psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    """PSNR in dB of uint8 RGB images (data range 255); ``inf`` when they are identical."""
    _check_pair(pred, truth)
    err = np.mean((pred.astype(np.float64) - truth.astype(np.float64)) ** 2)
    if err == 0:
        return math.inf
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(truth, pred, data_range=255))


def ssim(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean SSIM of uint8 RGB images over the three channels (data range 255)."""
    _check_pair(pred, truth)
    from skimage.metrics import structural_similarity

    if min(pred.shape[:2]) < 7:  # skimage's 7x7 window needs at least that much image
        raise ValueError(f"SSIM needs images of at least 7x7 pixels, got {pred.shape[:2]}")
    return float(structural_similarity(truth, pred, data_range=255, channel_axis=-1))


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> CIE Lab float64 (scikit-image, D65)."""
    from skimage.color import rgb2lab

    return rgb2lab(np.asarray(rgb))


def ciede2000(pred_lab: np.ndarray, truth_lab: np.ndarray, *, rows: int = 512) -> float:
    """Mean CIEDE2000 difference of two Lab images, computed ``rows`` rows at a time (the
    formula's temporaries are many full-size float64 arrays)."""
    from skimage.color import deltaE_ciede2000

    if pred_lab.shape != truth_lab.shape:
        raise ValueError(f"shapes differ: {pred_lab.shape} and {truth_lab.shape}")
    total = 0.0
    for y in range(0, pred_lab.shape[0], rows):
        total += float(deltaE_ciede2000(truth_lab[y:y + rows], pred_lab[y:y + rows],
                                        channel_axis=-1).sum())
    return total / (pred_lab.shape[0] * pred_lab.shape[1])


def ab_rmse(pred_lab: np.ndarray, truth_lab: np.ndarray) -> float:
    """RMS of the per-pixel (a*, b*) error vector length, in Lab units."""
    if pred_lab.shape != truth_lab.shape:
        raise ValueError(f"shapes differ: {pred_lab.shape} and {truth_lab.shape}")
    d = pred_lab[..., 1:].astype(np.float64) - truth_lab[..., 1:].astype(np.float64)
    return float(np.sqrt(np.mean(np.sum(d * d, axis=-1))))


def chroma_rms(lab: np.ndarray) -> float:
    """sqrt(mean(a*^2 + b*^2)): the ab RMSE of a gray prediction against ``lab``."""
    ab = lab[..., 1:].astype(np.float64)
    return float(np.sqrt(np.mean(np.sum(ab * ab, axis=-1))))


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colorfulness of an RGB image in 0-255 units:
    sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2), rg = R - G,
    yb = (R + G) / 2 - B. Float input is taken in [0, 1]."""
    rgb = np.asarray(rgb)
    x = rgb[..., :3].astype(np.float64)
    if rgb.dtype.kind == "f":
        x = x * 255.0
    elif rgb.dtype != np.uint8:
        x = x * (255.0 / np.iinfo(rgb.dtype).max)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(math.sqrt(rg.std() ** 2 + yb.std() ** 2)
                 + 0.3 * math.sqrt(rg.mean() ** 2 + yb.mean() ** 2))


def ratio(a: float, b: float) -> float | None:
    """a / b, or None when b is 0."""
    return a / b if b > 0 else None


def compare(pred: np.ndarray, truth: np.ndarray, truth_lab: np.ndarray | None = None,
            truth_colorfulness: float | None = None) -> dict[str, float | None]:
    """Every metric of ``pred`` against ``truth`` (uint8 RGB of the same shape)."""
    _check_pair(pred, truth)
    truth_lab = to_lab(truth) if truth_lab is None else truth_lab
    tc = colorfulness(truth) if truth_colorfulness is None else truth_colorfulness
    pred_lab = to_lab(pred)
    c = colorfulness(pred)
    return {"psnr": psnr(pred, truth), "ssim": ssim(pred, truth),
            "ciede2000": ciede2000(pred_lab, truth_lab), "ab_rmse": ab_rmse(pred_lab, truth_lab),
            "colorfulness": c, "colorfulness_ratio": ratio(c, tc)}


def mean_metrics(rows: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Per-metric mean over images (PSNR: inf if any image is inf)."""
    out: dict[str, float | None] = {}
    for key in rows[0] if rows else ():
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out
