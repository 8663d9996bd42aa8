"""What a batch did: one result per image, and the JSON run report."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from tilecolor.core.planes import takes_hint
from tilecolor.engine.settings import Settings
from tilecolor.io.atomic import write_atomic

log = logging.getLogger("tilecolor")

@dataclass
class ImageResult:
    """What happened to one input."""

    input: str
    status: str  #: "done", "skipped" (up to date) or "failed"
    output: str | None = None
    error: str | None = None
    height: int = 0
    width: int = 0
    tiles: int = 0
    blocks_computed: int = 0
    seconds: float = 0.0
    #: time the map tasks spent inside the generator (summed over workers)
    generator_seconds: float = 0.0
    #: CPU time of the task threads inside the generator (summed over workers): on CPU with
    #: one torch thread per worker, comparable with a bare loop's process time over the
    #: same tiles (BENCHMARKS.md); on CUDA only the host side
    generator_cpu_seconds: float = 0.0

    @property
    def megapixels_per_second(self) -> float:
        return self.height * self.width / 1e6 / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "megapixels_per_second": round(self.megapixels_per_second, 4)}


def run_report(results: list[ImageResult], seconds: float, settings: Settings,
               model_digest: str, *, device: str = "cpu", precision: str = "fp32",
               output: Path | None = None) -> dict:
    """The run report: the settings, one entry per image, totals, the output folder, and
    ``report`` (where it is written: None until then)."""
    done = [r for r in results if r.status == "done"]
    pixels = sum(r.height * r.width for r in done)
    return {
        "settings": {"tile": settings.tile, "stride": settings.stride,
                     "render_scale": settings.render_scale,
                     "context": settings.context if takes_hint(settings.planes) else 0,
                     "blend": str(settings.blend), "block": settings.block,
                     "batch_size": settings.batch_size, "device": str(device),
                     "precision": str(precision)},
        "model_sha256": model_digest,
        "images": [r.to_dict() for r in results],
        "totals": {"images": len(results), "done": len(done),
                   "skipped": sum(r.status == "skipped" for r in results),
                   "failed": sum(r.status == "failed" for r in results),
                   "megapixels": round(pixels / 1e6, 3), "seconds": round(seconds, 3),
                   "megapixels_per_second": round(pixels / 1e6 / seconds, 4) if seconds else 0,
                   "tiles": sum(r.tiles for r in done)},
        "output": None if output is None else str(output),
        "report": None,
    }


def write_report(path: Path, report: dict) -> Path:
    """Write the JSON run report (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, json.dumps(report, indent=2) + "\n")
