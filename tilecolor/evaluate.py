"""Evaluate a checkpoint on color photos: gray in, colorized through the tiled engine, compared.

Each truth photo (uint8 RGB) is turned into the gray image with the same L*
(:func:`tilecolor.core.color.rgb_to_gray`), written as a PNG and colorized by the same path
as ``tilecolor run`` (:func:`tilecolor.colorize`, on one LocalCluster for every row), so the
numbers include tiling and blending. The output is compared with the truth, and so is the
gray baseline (the gray with a* = b* = 0), which any useful model must beat.

Metrics: :mod:`tilecolor.metrics`.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tilecolor.io.atomic import write_atomic
from tilecolor.metrics import chroma_rms, colorfulness, compare, mean_metrics, ratio, to_lab

log = logging.getLogger("tilecolor")

THUMB_HEIGHT = 384


# ---------------------------------------------------------------- images

def load_truth(path: Path, max_side: int | None = None) -> np.ndarray:
    """A photo as uint8 RGB (EXIF orientation applied), Lanczos-downsized so that its longer
    side is at most ``max_side`` (never upsized)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        if max_side and max(im.size) > max_side:
            scale = max_side / max(im.size)
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(size, Image.Resampling.LANCZOS)
        return np.asarray(im)


def _thumb(rgb: np.ndarray, height: int):
    from PIL import Image

    im = Image.fromarray(rgb)
    if im.height != height:
        width = max(1, round(im.width * height / im.height))
        im = im.resize((width, height), Image.Resampling.LANCZOS)
    return im


def contact_sheet(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                  height: int = THUMB_HEIGHT, gap: int = 4):
    """A PIL image, one row per image: gray | model | truth, each ``height`` px high, with
    the image name and column titles written on the gray panel."""
    from PIL import Image, ImageDraw

    panels = [[_thumb(a, height) for a in (gray, model, truth)] for _, gray, model, truth in rows]
    width = max(sum(p.width for p in row) + 2 * gap for row in panels)
    sheet = Image.new("RGB", (width, len(rows) * (height + gap) - gap), "white")
    draw = ImageDraw.Draw(sheet)
    for i, ((name, *_), row) in enumerate(zip(rows, panels, strict=True)):
        x, y = 0, i * (height + gap)
        for title, panel in zip(("gray", "model", "truth"), row, strict=True):
            sheet.paste(panel, (x, y))
            label = f"{name}: {title}" if title == "gray" else title
            left, top, right, bottom = draw.textbbox((x + 3, y + 2), label)
            draw.rectangle((x, y, right + 3, bottom + 3), fill="black")
            draw.text((x + 3, y + 2), label, fill="white")
            x += panel.width + gap
    return sheet


# ---------------------------------------------------------------- the run

@dataclass
class EvalResult:
    """What :func:`evaluate` measured; ``to_dict`` is the eval.json content."""

    images: list[dict] = field(default_factory=list)
    mean: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return _finite({**self.meta, "images": self.images, "mean": self.mean})


def _finite(obj):
    """JSON has no inf/nan: write them as strings ("inf")."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def select_photos(data: str | Path, split: str = "all", val_count: int = 4) -> list[Path]:
    """The photos of ``data`` to evaluate: all, or the training run's validation split."""
    from tilecolor.core.errors import ConfigError
    from tilecolor.model.data import list_photos, split_photos

    photos = list_photos(data)
    if split == "val":
        return split_photos(photos, val_count)[1]
    if split != "all":
        raise ConfigError(f"split must be 'all' or 'val', got {split!r}")
    return photos


#: Rows of an evaluation beside the gray baseline: label, what produced it
ROWS = {"model": "the model at the given settings (context pass as given)",
        "no_context": "the model with the context pass off (hinted checkpoints)",
        "guided": "the model guided by the truth downscaled by --guided (hinted checkpoints)",
        "bilinear": "that downscaled truth's chroma upsampled bilinearly under the true L*"}


def _write_inputs(photos: list[Path], in_dir: Path, max_side: int | None, multiple: int
                  ) -> tuple[dict[Path, np.ndarray], dict[Path, str]]:
    """Each photo's gray version as ``in_dir/<stem>.png``; returns {gray file: truth RGB}
    and {gray file: photo name}. Truths are cropped (top left) to a multiple of
    ``multiple`` per side, so a reference downscaled by it is exactly aligned."""
    from PIL import Image

    from tilecolor.core.color import rgb_to_gray
    from tilecolor.core.errors import TilecolorError

    truths: dict[Path, np.ndarray] = {}
    names: dict[Path, str] = {}
    for photo in photos:
        truth = load_truth(photo, max_side)
        h, w = truth.shape[0] // multiple * multiple, truth.shape[1] // multiple * multiple
        truth = np.ascontiguousarray(truth[:h, :w])
        src = in_dir / f"{photo.stem}.png"
        if src in truths:
            raise TilecolorError(f"two photos named {photo.stem}.*: rename one")
        Image.fromarray(rgb_to_gray(truth), mode="L").save(src, compress_level=1)
        truths[src], names[src] = truth, photo.name
    return truths, names


def _write_references(truths: dict[Path, np.ndarray], ref_dir: Path, factor: int) -> None:
    """Guided mode's references: each truth area-downscaled by ``factor`` (exact box
    means: the truths are multiples of it), as ``ref_dir/<stem>.png``."""
    from PIL import Image

    ref_dir.mkdir()
    for src, truth in truths.items():
        Image.fromarray(truth).reduce(factor).save(ref_dir / src.name, compress_level=1)


def bilinear_hint(gray: np.ndarray, reference: Path, context: int) -> np.ndarray:
    """The naive guided answer: the reference's chroma, prepared as the engine prepares a
    hint field (area-downscaled to about ``context`` px), upsampled bilinearly (pixel
    centres aligned) under the image's own L*. uint8 RGB (H, W, 3)."""
    from tilecolor.core.color import compose_rgb, rgb_to_lab
    from tilecolor.core.resample import downsample_mean, upsample_planes
    from tilecolor.engine.hints import plan_reference, read_color

    h, w = gray.shape
    ref = plan_reference(reference, h, w, reference, context)
    lab = rgb_to_lab(read_color(ref.info))
    ab = np.stack([downsample_mean(lab[..., ch], ref.factor) for ch in (1, 2)])
    up = upsample_planes(ab, (0, 0), ref.field.scale, (0, h), (0, w), ab.shape[1:])
    return compose_rgb(gray, np.moveaxis(up, 0, -1), np.uint8)


def evaluate(photos: list[Path], checkpoint: str | Path | None = None,
             out_dir: str | Path = "tilecolor-eval", *, guided: int = 0,
             max_side: int | None = None, progress: bool = True, save_images: bool = False,
             sheet_height: int = THUMB_HEIGHT, **options) -> EvalResult:
    """Colorize the gray versions of ``photos`` with :func:`tilecolor.colorize` and measure them.

    ``options`` are ``tilecolor run``'s (tile, stride, blend, block, batch_size, context,
    device, precision, threads), with its defaults. Rows (:data:`ROWS`): the model as
    configured; for a checkpoint with hint planes also the model without its context pass
    (when ``context`` > 0) and, with ``guided`` = D > 0, the model guided by the truth
    downscaled D times beside the bilinear-hint baseline; always the gray baseline. Writes
    ``<out_dir>/eval.json`` and ``<out_dir>/sheet.png`` (gray | model | truth; with
    ``save_images``, the colorized PNGs under ``<out_dir>/images``). Raises TilecolorError
    if an image fails, ConfigError for a bad option.
    """
    from PIL import Image

    from tilecolor.cluster.client import connect
    from tilecolor.cluster.config import ClusterConfig
    from tilecolor.config import run_spec
    from tilecolor.core.color import compose_rgb, rgb_to_gray
    from tilecolor.core.errors import ConfigError, TilecolorError
    from tilecolor.core.planes import takes_hint
    from tilecolor.engine.hints import DEFAULT_CONTEXT
    from tilecolor.model.checkpoint import default_checkpoint
    from tilecolor.model.predict import make_predictor

    checkpoint = Path(checkpoint or default_checkpoint())
    spec = run_spec(checkpoint=checkpoint, **options)  # checked once, before any work
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    planes = make_predictor(checkpoint, device=spec.device, precision=spec.precision,
                            validate=False).planes
    hinted = takes_hint(planes)
    if guided and not hinted:
        raise ConfigError(f"--guided needs a checkpoint with hint planes; {checkpoint} takes "
                          f"{list(planes)}")
    runs: dict[str, dict] = {"model": {}}
    if hinted and spec.context:
        runs["no_context"] = {"context": 0}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tilecolor-eval-") as tmp:
        in_dir, ref_dir = Path(tmp) / "gray", Path(tmp) / "references"
        in_dir.mkdir()
        truths, names = _write_inputs(photos, in_dir, max_side, max(guided, 1))
        if guided:
            _write_references(truths, ref_dir, guided)
            runs["guided"] = {"hint": ref_dir}
        outputs: dict[str, dict[Path, np.ndarray]] = {}
        reports: dict[str, dict] = {}
        t_color = time.perf_counter()
        cluster = ClusterConfig(kind="local", workers=1, threads=spec.cluster.threads,
                                dashboard_address="127.0.0.1:0", host="127.0.0.1",
                                gpus=1 if spec.device == "cuda" else 0)
        with connect(cluster) as client:
            for row, changes in runs.items():
                reports[row] = report = _colorize(list(truths), Path(tmp) / row, client,
                                                  progress, {**options, **changes},
                                                  checkpoint)
                outputs[row] = {}
                for src, image in zip(truths, report["images"], strict=True):
                    with Image.open(image["output"]) as im:
                        outputs[row][src] = np.asarray(im.convert("RGB"))
        color_seconds = time.perf_counter() - t_color
        if save_images:
            (out_dir / "images").mkdir(exist_ok=True)
        images, sheet_rows = [], []
        for src, truth in truths.items():
            gray = rgb_to_gray(truth)
            preds = {row: outputs[row][src] for row in runs}
            if guided:
                preds["bilinear"] = bilinear_hint(gray, ref_dir / src.name,
                                                  spec.context or DEFAULT_CONTEXT)
            for row, pred in preds.items():
                if pred.shape != truth.shape:
                    raise TilecolorError(f"{src.name}: {row} output shape {pred.shape} != "
                                         f"{truth.shape}")
            baseline = compose_rgb(gray, np.zeros((*gray.shape, 2), np.float32), np.uint8)
            truth_lab = to_lab(truth)
            tc = colorfulness(truth)
            entry = {"name": names[src], "height": int(truth.shape[0]),
                     "width": int(truth.shape[1]),
                     "truth": {"colorfulness": tc, "chroma_rms": chroma_rms(truth_lab)},
                     **{row: compare(pred, truth, truth_lab, tc) for row, pred in preds.items()},
                     "baseline": compare(baseline, truth, truth_lab, tc)}
            images.append(entry)
            sheet_rows.append((Path(names[src]).stem, np.repeat(gray[..., None], 3, -1),
                               preds["model"], truth))
            if save_images:
                for row, pred in preds.items():
                    suffix = "" if row == "model" else f".{row}"
                    Image.fromarray(pred).save(out_dir / "images" / f"{src.stem}{suffix}.png")
            log.info("%s: CIEDE2000 %.2f (gray %.2f)", names[src],
                     entry["model"]["ciede2000"], entry["baseline"]["ciede2000"])
    rows = [row for row in ROWS if images and row in images[0]] + ["baseline"]
    mean = {row: mean_metrics([e[row] for e in images]) for row in rows}
    mean["truth"] = mean_metrics([e["truth"] for e in images])
    for row in rows:  # ratio of the means (the per-image mean is above)
        mean[row]["colorfulness_ratio_of_means"] = ratio(mean[row]["colorfulness"],
                                                         mean["truth"]["colorfulness"])
    run = reports["model"]
    meta = {"checkpoint": str(checkpoint.resolve()), "model_sha256": run["model_sha256"],
            "rows": {row: ROWS.get(row, "the gray image (a* = b* = 0)") for row in rows},
            "settings": {**{k: run["settings"][k] for k in ("tile", "stride", "blend",
                                                             "block", "batch_size", "device",
                                                             "precision", "context")},
                         "guided": guided, "threads": spec.cluster.threads,
                         "max_side": max_side},
            "seconds": {"colorize": round(color_seconds, 3),
                        "total": round(time.perf_counter() - t_start, 3)}}
    result = EvalResult(images, mean, meta)
    write_atomic(out_dir / "eval.json", json.dumps(result.to_dict(), indent=2) + "\n")
    if sheet_rows:
        contact_sheet(sheet_rows, sheet_height).save(out_dir / "sheet.png", optimize=True)
    return result


def _colorize(inputs: list[Path], out: Path, client, progress: bool, options: dict,
              checkpoint: Path) -> dict:
    """One row's outputs: ``inputs`` colorized as PNGs into ``out`` on ``client``; the run
    report. TilecolorError names every image that failed."""
    from tilecolor.api import colorize
    from tilecolor.core.errors import TilecolorError

    report = colorize(inputs, out, checkpoint=checkpoint, format="png", overwrite=True,
                      client=client, progress=progress, **options)
    failed = [i for i in report["images"] if i["status"] != "done"]
    if failed:
        raise TilecolorError("; ".join(f"{i['input']}: {i['error']}" for i in failed))
    return report


def format_table(result: EvalResult) -> str:
    """Plain-text table: one line per image and model/baseline, then the means."""
    def fmt(v, digits=2):
        if v is None:
            return "-"
        return "inf" if math.isinf(v) else f"{v:.{digits}f}"

    head = (f"{'image':<36} {'':<8} {'PSNR':>7} {'SSIM':>6} {'dE2000':>7} {'abRMSE':>7} "
            f"{'colorf.':>7} {'truth':>6} {'ratio':>6}")
    lines = [head, "-" * len(head)]

    def line(name, who, m, tc):
        return (f"{name[:36]:<36} {who:<8} {fmt(m['psnr']):>7} {fmt(m['ssim'], 4):>6} "
                f"{fmt(m['ciede2000']):>7} {fmt(m['ab_rmse']):>7} {fmt(m['colorfulness']):>7} "
                f"{fmt(tc):>6} {fmt(m['colorfulness_ratio']):>6}")

    rows = [row for row in (*ROWS, "baseline") if row in result.mean]
    labels = {"model": "model", "no_context": "no ctx", "guided": "guided",
              "bilinear": "bilinear", "baseline": "gray"}
    for e in result.images:
        for k, row in enumerate(rows):
            lines.append(line(e["name"] if k == 0 else "", labels[row], e[row],
                              e["truth"]["colorfulness"]))
    lines.append("-" * len(head))
    tc = result.mean["truth"]["colorfulness"]
    for k, row in enumerate(rows):
        m = dict(result.mean[row])
        m["colorfulness_ratio"] = m.pop("colorfulness_ratio_of_means")
        lines.append(line("MEAN" if k == 0 else "", labels[row], m, tc))
    return "\n".join(lines)
