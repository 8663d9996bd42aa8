"""Training crops made on the training device: multi-scale crops of Lab photo pyramids,
and hints made from the truth's chroma.

The decoded photos are converted to Lab once and kept, with a pyramid of 2x area
downscales, as float16 tensors on the device that trains (on a GPU the loader never makes
it wait). A crop is drawn at a random scale: anything from a ``crop``-sized part of the
photo at native resolution to the whole photo downscaled until its longer side fits the
crop (reflect-padded at the bottom/right, as the engine pads a small image), so the model
sees the scales users give it and the context pass (a whole image at C px) is in
distribution.

Every random choice comes from ``np.random.default_rng((seed, shard, step))``: the batch a
shard sees at a step is a pure function of those integers on any device, so DDP ranks,
gradient accumulation and a resumed run all see the same data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tilecolor.core.color import AB_SCALE, L_SCALE, rgb_to_lab
from tilecolor.model.data import Photo

STRIP = 512  #: rows per Lab conversion (bounds the float32 temporaries)


def photo_lab(photo: Photo) -> torch.Tensor:
    """The whole photo as Lab, (3, H, W) float16 (L in [0, 100], a and b in Lab units)."""
    h, w = photo.shape
    out = torch.empty((3, h, w), dtype=torch.float16)
    for y in range(0, h, STRIP):
        rows = min(STRIP, h - y)
        lab = rgb_to_lab(photo.read(y, 0, rows, w))  # (rows, w, 3) float32
        out[:, y:y + rows] = torch.from_numpy(np.ascontiguousarray(lab.transpose(2, 0, 1)))
    return out


def pyramid(lab: torch.Tensor, crop: int) -> list[torch.Tensor]:
    """``lab`` and its 2x area downscales, down to the first level whose longer side fits
    ``crop``; each (3, h, w) float16."""
    levels = [lab]
    while max(levels[-1].shape[1:]) > crop and min(levels[-1].shape[1:]) >= 2:
        levels.append(F.avg_pool2d(levels[-1][None].float(), 2, ceil_mode=True)[0].half())
    return levels


def reflect_pad(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad (C, h, w) at the bottom/right to (C, height, width) by reflection, repeating it
    where the pad is longer than the image (numpy's ``mode="reflect"``, as the engine)."""
    while x.shape[1] < height or x.shape[2] < width:
        ph = min(height - x.shape[1], x.shape[1] - 1)
        pw = min(width - x.shape[2], x.shape[2] - 1)
        x = F.pad(x[None].float(), (0, max(pw, 0), 0, max(ph, 0)), mode="reflect")[0].to(
            x.dtype)
    return x


@dataclass(frozen=True)
class CropPolicy:
    """How crops and hints are drawn (the training config's knobs)."""

    crop: int = 256
    whole: float = 0.2  #: share of crops that are the whole photo downscaled
    max_zoom_out: float = 0.0  #: cap on the downscale factor; 0: the whole shorter side
    hint_drop: float = 0.4  #: share of crops with no hint (mask 0): the unconditional mode
    hint_min: int = 4  #: the hint's low-pass factor is drawn from [hint_min, hint_max]
    hint_max: int = 64
    hint_perturb: float = 0.3  #: share of hints with hue/saturation/blur changes
    hint_partial: float = 0.1  #: share of hints masked over part of the crop


class PhotoBank:
    """Lab pyramids of the training photos on ``device``; draws batches of crops."""

    def __init__(self, photos: list[Photo], policy: CropPolicy,
                 device: torch.device | str = "cpu") -> None:
        self.policy, self.device = policy, torch.device(device)
        self.levels = [[lv.to(self.device) for lv in pyramid(photo_lab(p), policy.crop)]
                       for p in photos]
        self.names = [p.path.name for p in photos]

    def _crop(self, levels: list[torch.Tensor], rng: np.random.Generator) -> torch.Tensor:
        t, policy = self.policy.crop, self.policy
        h, w = levels[0].shape[1:]
        if rng.random() < policy.whole:  # the whole photo, longer side in (t/2, t]
            side = int(rng.integers(t // 2 + 1, t + 1))
            d = max(h, w) / side
        else:
            d_max = min(h, w) / t
            if policy.max_zoom_out:
                d_max = min(d_max, policy.max_zoom_out)
            d = math.exp(rng.uniform(0.0, math.log(max(d_max, 1.0))))
        j = min(int(math.floor(math.log2(max(d, 1.0)))), len(levels) - 1)
        src = levels[j]
        sh, sw = src.shape[1:]
        rest = d / 2**j  # in [1, 2) but for the whole-photo draws
        ch, cw = min(sh, max(1, round(t * rest))), min(sw, max(1, round(t * rest)))
        y = int(rng.integers(0, sh - ch + 1))
        x = int(rng.integers(0, sw - cw + 1))
        region = src[:, y:y + ch, x:x + cw].float()
        oh, ow = min(t, max(1, round(ch / rest))), min(t, max(1, round(cw / rest)))
        if (oh, ow) != (ch, cw):
            region = F.interpolate(region[None], size=(oh, ow), mode="bilinear",
                                   antialias=True, align_corners=False)[0]
        if rng.random() < 0.5:
            region = region.flip(-1)
        return reflect_pad(region, t, t)

    def batch(self, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` crops: (lightness (n, 1, T, T) in [-1, 1], ab (n, 2, T, T) in ~[-1, 1])."""
        picks = rng.integers(0, len(self.levels), size=n)
        lab = torch.stack([self._crop(self.levels[i], rng) for i in picks])
        return lab[:, :1] / L_SCALE - 1.0, lab[:, 1:] / AB_SCALE


def lowpass(ab: torch.Tensor, factor: float) -> torch.Tensor:
    """(n, 2, T, T) area-downscaled by ``factor`` and upsampled bilinearly (pixel centres
    aligned): the coarse color field the context pass or a small reference gives."""
    t = ab.shape[-1]
    small = F.adaptive_avg_pool2d(ab, max(1, round(t / factor)))
    return F.interpolate(small, size=ab.shape[-2:], mode="bilinear", align_corners=False)


def make_hints(ab: torch.Tensor, rng: np.random.Generator, policy: CropPolicy
               ) -> torch.Tensor:
    """Hint planes (n, 3, T, T) = (hint a, hint b, mask) made from the truth's ``ab``."""
    n, _, t, _ = ab.shape
    hints = torch.zeros((n, 3, t, t), dtype=ab.dtype, device=ab.device)
    for i in range(n):
        if rng.random() < policy.hint_drop:
            continue
        factor = math.exp(rng.uniform(math.log(policy.hint_min), math.log(policy.hint_max)))
        hint = lowpass(ab[i:i + 1], factor)[0]
        if rng.random() < policy.hint_perturb:
            angle = math.radians(rng.normal(0.0, 12.0))
            gain = rng.uniform(0.6, 1.25)
            c, s = math.cos(angle) * gain, math.sin(angle) * gain
            hint = torch.stack([c * hint[0] - s * hint[1], s * hint[0] + c * hint[1]])
            hint = lowpass(hint[None], rng.uniform(1.0, 4.0))[0]
        mask = torch.ones((t, t), dtype=ab.dtype, device=ab.device)
        if rng.random() < policy.hint_partial:
            y0, x0 = rng.integers(0, t, size=2)
            y1, x1 = y0 + rng.integers(t // 4, t + 1), x0 + rng.integers(t // 4, t + 1)
            mask[y0:y1, x0:x1] = 0
        hints[i, :2] = hint * mask
        hints[i, 2] = mask
    return hints


@dataclass
class ValidationSet:
    """Fixed crops of the held-out photos for choosing checkpoints.

    Per photo: the whole photo with its longer side at ``crop`` (what the context pass
    sees) and centre crops at zoom-out 1 and 4 where the photo is large enough. ``valid``
    marks the pixels that are image, not reflect padding; ``hints`` are the truth's chroma
    low-passed 16x (guided mode). Shapes (n, 1|2|3, T, T).
    """

    lightness: torch.Tensor
    ab: torch.Tensor
    valid: torch.Tensor
    hints: torch.Tensor
    kinds: list[str]


def validation_set(photos: list[Photo], crop: int) -> ValidationSet:
    items, kinds = [], []
    for p in photos:
        levels = pyramid(photo_lab(p), crop)
        h, w = levels[0].shape[1:]
        whole = levels[-1].float()
        scale = crop / max(whole.shape[1:])
        size = (max(1, round(whole.shape[1] * scale)), max(1, round(whole.shape[2] * scale)))
        whole = F.interpolate(whole[None], size=size, mode="bilinear", antialias=True,
                              align_corners=False)[0]
        items.append((reflect_pad(whole, crop, crop), size))
        kinds.append("whole")
        for zoom in (1, 4):
            if min(h, w) < crop * zoom:
                continue
            j = int(math.log2(zoom))
            src = levels[j].float()
            sh, sw = src.shape[1:]
            y, x = (sh - crop) // 2, (sw - crop) // 2
            items.append((src[:, y:y + crop, x:x + crop], (crop, crop)))
            kinds.append(f"zoom{zoom}")
    lab = torch.stack([x for x, _ in items])
    valid = torch.zeros((len(items), 1, crop, crop), dtype=torch.bool)
    for i, (_, (vh, vw)) in enumerate(items):
        valid[i, :, :vh, :vw] = True
    ab = lab[:, 1:] / AB_SCALE
    hints = torch.cat([lowpass(ab, 16.0), torch.ones_like(ab[:, :1])], dim=1)
    return ValidationSet(lab[:, :1] / L_SCALE - 1.0, ab, valid, hints, kinds)


def ciede2000_vs_gray(lightness: torch.Tensor, pred: torch.Tensor, truth: torch.Tensor,
                      valid: torch.Tensor) -> tuple[float, float]:
    """Mean CIEDE2000 of the prediction and of the gray image (a = b = 0) against the
    truth, over the valid pixels; inputs in network units."""
    from skimage.color import deltaE_ciede2000

    def lab(ab: torch.Tensor) -> np.ndarray:
        x = torch.cat([(lightness + 1) * L_SCALE, ab * AB_SCALE], dim=1)
        return x.permute(0, 2, 3, 1).double().numpy()[valid[:, 0].numpy()]

    t = lab(truth)
    return (float(deltaE_ciede2000(lab(pred), t).mean()),
            float(deltaE_ciede2000(lab(torch.zeros_like(truth)), t).mean()))
