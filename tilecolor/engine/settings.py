"""How one image is tiled, blended and run: :class:`Settings`, the engine's run settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from tilecolor.core.blending import Blend
from tilecolor.core.errors import ConfigError
from tilecolor.core.planes import L_ONLY, check_planes, takes_hint
from tilecolor.core.resample import reduced_length
from tilecolor.core.tiling import (
    Plan,
    check_geometry,
)
from tilecolor.engine.hints import DEFAULT_CONTEXT, MAX_CONTEXT, ContextPass, HintField, Reference

#: What a map task's hint comes from: a field already in the store, or a task that makes it
Hint = ContextPass | Reference | HintField


@dataclass(frozen=True)
class Settings:
    """How one image is tiled, blended and run."""

    tile: int = 256
    stride: int = 128
    blend: Blend = Blend.COSINE
    block: int = 2048
    batch_size: int = 16
    resources: dict[str, float] | None = field(default=None, hash=False)
    render_scale: float = 1.0  #: predict chroma at this scale (1/k) and upsample it
    planes: tuple[str, ...] = L_ONLY  #: the generator's input planes (its checkpoint's)
    #: longer side of the context copy (:mod:`tilecolor.engine.hints`); 0: no context pass. Used
    #: only by a generator that takes a hint.
    context: int = DEFAULT_CONTEXT

    def __post_init__(self) -> None:
        object.__setattr__(self, "blend", Blend(self.blend))
        object.__setattr__(self, "planes", check_planes(self.planes))
        if not 0 <= self.context <= MAX_CONTEXT:
            raise ConfigError(f"context must be 0 (off) to {MAX_CONTEXT} (one task holds the "
                              f"context copy), got context={self.context}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got batch_size={self.batch_size}")
        k = round(1 / self.render_scale) if self.render_scale > 0 else 0
        if k < 1 or abs(1 / k - self.render_scale) > 1e-6:
            raise ConfigError(f"render scale must be 1/k for an integer k >= 1 (1, 0.5, "
                              f"0.25...), got render_scale={self.render_scale}")
        if self.block % k:
            raise ConfigError(f"block must be a multiple of 1/render_scale={k}, "
                              f"got block={self.block}")
        check_geometry(self.tile, self.stride, self.block // k)

    @property
    def factor(self) -> int:
        """k: chroma is predicted on a grid k times coarser than the image."""
        return round(1 / self.render_scale)

    def plan(self, height: int, width: int) -> Plan:
        """Full-resolution blocks: ingest, output chunks."""
        return Plan(height, width, self.tile, self.stride, self.block)

    def render_plan(self, height: int, width: int) -> Plan:
        """The grid the generator runs on (the full one unless render_scale < 1); its
        blocks correspond one to one with the full-resolution blocks."""
        k = self.factor
        return Plan(reduced_length(height, k), reduced_length(width, k), self.tile,
                    self.stride, self.block // k)

    def context_pass(self, height: int, width: int) -> ContextPass | None:
        """The image's context pass: for a generator that takes a hint, unless ``context``
        is 0 (a reference image, when given, replaces it: :mod:`tilecolor.batch.plan`)."""
        if not takes_hint(self.planes) or self.context == 0:
            return None
        return ContextPass.plan(height, width, self.context, self.block)
