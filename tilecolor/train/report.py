"""What a training run shows: validation scores and loss curves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tilecolor.core.color import AB_SCALE
from tilecolor.train import crops


def plot_losses(path: Path, history: list[dict[str, float]]) -> None:
    """One panel per logged quantity against step, as a PNG."""
    from PIL import Image, ImageDraw

    keys = [k for k in ("l1_ab", "val_ab_l1", "val_de", "val_de_hinted", "g_gan", "d")
            if any(k in h for h in history)]
    width, height, pad = 720, 160, 24
    img = Image.new("RGB", (width, height * max(len(keys), 1)), "white")
    draw = ImageDraw.Draw(img)
    for row, key in enumerate(keys):
        pts = [(h["step"], h[key]) for h in history if key in h]
        x0, x1 = pts[0][0], max(pts[-1][0], pts[0][0] + 1)
        lo, hi = min(v for _, v in pts), max(v for _, v in pts)
        hi = hi if hi > lo else lo + 1e-9
        left, top, right, bottom = pad, row * height + pad, width - pad, (row + 1) * height - pad
        draw.rectangle((left, top, right, bottom), outline="gray")
        xy = [(left + (s - x0) / (x1 - x0) * (right - left),
               bottom - (v - lo) / (hi - lo) * (bottom - top)) for s, v in pts]
        draw.line(xy if len(xy) > 1 else xy * 2, fill="navy", width=2)
        draw.text((left, top - 14), f"{key}: last {pts[-1][1]:.4g}  min {lo:.4g}  max {hi:.4g}",
                  fill="black")
        draw.text((left, bottom + 2), f"step {x0}", fill="gray")
        draw.text((right - 60, bottom + 2), f"{pts[-1][0]}", fill="gray")
    img.save(path)


@torch.no_grad()
def evaluate(generator: nn.Module, val: crops.ValidationSet, device: torch.device,
             amp: Callable, hinted: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Eval-mode predictions for the fixed validation crops (unconditional) and their
    scores: mean CIEDE2000 against the truth next to the gray image's (``val_de``,
    ``val_de_gray``), ab-L1 in Lab units, and for a hinted generator the same with the
    truth's 16x low-passed chroma as the hint (``val_de_hinted``) beside that hint
    itself under the true L (``val_de_bilinear``, the naive answer to beat)."""
    was_training = generator.training
    generator.eval()

    def run(hint: torch.Tensor | None) -> torch.Tensor:
        x = val.lightness if hint is None else torch.cat([val.lightness, hint], dim=1)
        with amp():
            return torch.cat([generator(b.to(device)).float().cpu() for b in x.split(8)])

    pred = run(torch.zeros_like(val.hints) if hinted else None)
    guided = run(val.hints) if hinted else None
    generator.train(was_training)
    de, de_gray = crops.ciede2000_vs_gray(val.lightness, pred, val.ab, val.valid)
    valid = val.valid.expand_as(val.ab)
    metrics = {"val_de": de, "val_de_gray": de_gray,
               "val_ab_l1": float((pred - val.ab).abs()[valid].mean() * AB_SCALE),
               "val_gray_ab_l1": float(val.ab.abs()[valid].mean() * AB_SCALE)}
    if guided is not None:
        metrics["val_de_hinted"] = crops.ciede2000_vs_gray(val.lightness, guided, val.ab,
                                                           val.valid)[0]
        metrics["val_de_bilinear"] = crops.ciede2000_vs_gray(val.lightness, val.hints[:, :2],
                                                             val.ab, val.valid)[0]
    return pred, metrics
