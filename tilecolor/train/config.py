"""The training run's settings: a typed, frozen config (TOML, flags or Python) and what
each option means."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from tilecolor.core import planes
from tilecolor.core.errors import ConfigError
from tilecolor.model.nets import GeneratorSpec
from tilecolor.train import crops


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""  # folder of color photos (JPEG/PNG/TIFF)
    out: str = ""  # run folder: last/, best/, samples/, metrics.jsonl, losses.png
    crop: int = 256  # training crop side, at native resolution
    stride: int = 0  # inference stride recorded in checkpoints; 0: crop // 2
    batch_size: int = 8  # global: over all ranks and accumulation micro-batches
    accum: int = 1  # gradient accumulation micro-batches per rank
    steps: int = 10_000
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_l1: float = 100.0
    gan_start_step: int = 0  # L1-only warm-up steps (no adversarial loss, D not trained)
    decay_steps: int = 0  # lr decays linearly to 0 over the last decay_steps
    gen_width: int = 64
    gen_depth: int = 8
    gen_max_width: int = 512
    gen_dropout: float = 0.0
    disc_width: int = 64
    val_count: int = 6  # held-out photos, evenly spaced through the sorted names
    hints: bool = True  # input planes L + hint a, b, mask (else L only)
    hint_residual: bool = True  # with hints: the output is the hint plus a correction
    whole: float = 0.2  # share of crops that are a whole photo downscaled to the crop
    hint_drop: float = 0.4  # share of crops without a hint (the unconditional mode)
    ema: float = 0.0  # decay of an EMA of G's weights (checkpoints hold the EMA); 0: off
    seed: int = 1337
    deterministic: bool = False  # torch.use_deterministic_algorithms
    sync_bn: bool = False  # SyncBatchNorm across ranks (nccl only)
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto: bf16 on CUDA and on CPUs with native bf16 | bf16 | fp32
    num_threads: int = 0  # torch CPU threads per process; 0: torch's default
    log_every: int = 10
    sample_every: int = 500
    ckpt_every: int = 1000  # also validation, and out/best when it improves
    half: bool = False  # float16 weights in the saved generator checkpoints
    resume: bool = False  # continue from out/last (starts fresh if there is none)

    def __post_init__(self) -> None:
        if not self.data or not self.out:
            raise ConfigError("both --data and --out are required")
        for name in ("crop", "batch_size", "accum", "steps", "val_count", "disc_width",
                     "log_every", "sample_every", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {name}={getattr(self, name)}")
        for name in ("stride", "gan_start_step", "decay_steps", "num_threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {name}={getattr(self, name)}")
        spec = self.generator_spec()  # validates the architecture
        if self.crop < 32 or self.crop % spec.multiple:
            raise ConfigError(f"crop must be >= 32 and a multiple of 2**gen_depth = "
                              f"{spec.multiple}, got crop={self.crop}")
        if self.stride > self.crop:
            raise ConfigError(f"stride must be <= crop ({self.crop}), got stride={self.stride}")
        if self.batch_size % self.accum:
            raise ConfigError(f"batch_size={self.batch_size} is not a multiple of "
                              f"accum={self.accum}")
        if not (self.lr > 0 and 0 <= self.beta1 < 1 and self.lambda_l1 >= 0):
            raise ConfigError(f"need lr > 0, 0 <= beta1 < 1, lambda_l1 >= 0, got lr={self.lr}, "
                              f"beta1={self.beta1}, lambda_l1={self.lambda_l1}")
        if self.decay_steps > self.steps:
            raise ConfigError(f"decay_steps={self.decay_steps} exceeds steps={self.steps}")
        for name in ("whole", "hint_drop", "ema"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {name}={getattr(self, name)}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"precision must be auto, bf16 or fp32, got "
                              f"precision={self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got device={self.device!r}")

    @property
    def tile_stride(self) -> int:
        return self.stride or self.crop // 2

    def generator_spec(self) -> GeneratorSpec:
        return GeneratorSpec(width=self.gen_width, depth=self.gen_depth,
                             max_width=self.gen_max_width, dropout=self.gen_dropout,
                             in_channels=len(self.planes),
                             hint_residual=self.hints and self.hint_residual)

    @property
    def planes(self) -> tuple[str, ...]:
        return planes.HINTED if self.hints else planes.L_ONLY

    def crop_policy(self) -> crops.CropPolicy:
        return crops.CropPolicy(crop=self.crop, whole=self.whole,
                                hint_drop=self.hint_drop if self.hints else 1.0)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from plain values (TOML, JSON, argparse); unknown keys and wrong types raise."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown training config keys: {unknown}")
        for key, value in values.items():
            want = type(known[key].default)
            ok = isinstance(value, want) and (want is bool or not isinstance(value, bool))
            if not ok and not (want is float and type(value) is int):
                raise ConfigError(f"{key} must be {want.__name__}, got {key}={value!r}")
        return cls(**values)


#: What each option does (``--help``); tests check that every field has an entry.
HELP: dict[str, str] = {
    "data": "folder of color photos (JPEG/PNG/TIFF) to train and validate on",
    "out": "run folder: last/, best/, samples/, metrics.jsonl, losses.png",
    "crop": "training crop side in pixels, a multiple of 2**gen-depth",
    "stride": "inference stride recorded in the checkpoints; 0: crop // 2",
    "batch_size": "crops per optimizer step, over all ranks and accumulation micro-batches",
    "accum": "gradient accumulation micro-batches per rank",
    "steps": "optimizer steps in all (a resumed run continues to this count)",
    "lr": "Adam learning rate of G and D",
    "beta1": "Adam beta1 of G and D",
    "lambda_l1": "weight of the L1 loss on ab against the adversarial loss (pix2pix: 100)",
    "gan_start_step": "L1-only warm-up steps before the adversarial loss (D idle until then)",
    "decay_steps": "the learning rate decays linearly to 0 over the last decay-steps",
    "gen_width": "channels of the generator's first level (doubling per level)",
    "gen_depth": "stride-2 levels of the U-Net (crop and tiles: multiples of 2**depth)",
    "gen_max_width": "cap on the generator's channels per level",
    "gen_dropout": "dropout in the generator's three innermost decoder levels (training only)",
    "disc_width": "channels of the PatchGAN discriminator's first layer",
    "val_count": "photos held out for validation, evenly spaced through the sorted names",
    "hints": "input planes L + hint a, b, mask (the context pass and --hint); else L only",
    "hint_residual": "with --hints: the generator outputs the hint plus its correction "
                     "(where the mask is 1), so following a hint is where it starts",
    "whole": "share of crops that are a whole photo downscaled to fit the crop",
    "hint_drop": "share of crops trained without a hint (mask 0: the unconditional mode)",
    "ema": "decay of an exponential moving average of G's weights, which the checkpoints "
           "then hold; 0: off",
    "seed": "seed of the initialization, the crops and dropout",
    "deterministic": "deterministic algorithms (bitwise-reproducible on CUDA, slower)",
    "sync_bn": "SyncBatchNorm across ranks (nccl/CUDA only)",
    "device": "auto (CUDA when present), cpu or cuda",
    "precision": "autocast: auto (bf16 on CUDA and on CPUs with native bf16), bf16 or fp32",
    "num_threads": "torch CPU threads per process; 0: torch's default",
    "log_every": "steps between log lines in metrics.jsonl",
    "sample_every": "steps between sample grids (gray | model | truth) in samples/",
    "ckpt_every": "steps between validation runs and checkpoints (out/last, out/best)",
    "half": "store float16 weights in the generator checkpoints (half the size)",
    "resume": "continue the run in --out from out/last",
}


def check_distributed(config: TrainConfig, backend: str, world_size: int) -> None:
    """Raise ConfigError for settings this process group cannot run."""
    if config.sync_bn and world_size > 1 and backend != "nccl":
        raise ConfigError(f"--sync-bn needs the nccl backend (CUDA): SyncBatchNorm does not run "
                          f"on {backend} with world_size={world_size}. Drop --sync-bn on CPU.")
    shards = world_size * config.accum
    if config.batch_size % shards:
        raise ConfigError(f"batch_size={config.batch_size} must be a multiple of world_size * "
                          f"accum = {world_size} * {config.accum}")


def lr_at(config: TrainConfig, step: int) -> float:
    """Constant, then linear decay to 0 over the last ``decay_steps``."""
    if config.decay_steps == 0:
        return config.lr
    return config.lr * min(1.0, (config.steps - step) / config.decay_steps)


