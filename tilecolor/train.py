"""Train the colorizer: pix2pix (U-Net G, PatchGAN D, cGAN + lambda * L1) on random crops.

One process or DDP under torchrun::

    python -m tilecolor.train --data photos/ --out runs/a --steps 20000
    torchrun --nproc_per_node=2 -m tilecolor.train --data photos/ --out runs/a

Rank 0 alone logs, writes samples and checkpoints: ``out/last`` (plus train_state.* for
``--resume``) and ``out/best`` (lowest validation ab-L1) are generator checkpoints that
``tilecolor run`` loads directly; ``out/metrics.jsonl``, ``out/losses.png``, ``out/samples/``.

Batch layout: the global batch (``batch_size``) is split into ``world_size * accum`` equal
shards; shard ``rank * accum + a`` is rank ``rank``'s ``a``-th micro-batch. A shard's crops
and dropout seed depend on (seed, shard, step) only, so 2 ranks x accum 1 see the same
micro-batches (and batch-norm statistics) as 1 rank x accum 2, and a resumed run replays
exactly what an uninterrupted one would have seen: no RNG state needs saving.

Update order: G steps against the current D (L1 + adversarial), then D steps on the fakes G
just produced. (pix2pix steps D first; with gradient accumulation this order needs no second
generator pass and keeps memory flat.) During the L1 warm-up D is neither run nor trained.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
import tomllib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from tilecolor import data
from tilecolor.checkpoint import save_generator
from tilecolor.color import AB_SCALE
from tilecolor.errors import CheckpointError, ConfigError, TilecolorError
from tilecolor.nets import GeneratorSpec, PatchDiscriminator, UNetGenerator


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
    val_count: int = 4  # held-out photos, evenly spaced through the sorted names
    seed: int = 1337
    deterministic: bool = False  # torch.use_deterministic_algorithms
    sync_bn: bool = False  # SyncBatchNorm across ranks (nccl only)
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = 0  # DataLoader worker processes per rank
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
        for name in ("stride", "gan_start_step", "decay_steps", "num_workers", "num_threads"):
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
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got device={self.device!r}")

    @property
    def tile_stride(self) -> int:
        return self.stride or self.crop // 2

    def generator_spec(self) -> GeneratorSpec:
        return GeneratorSpec(width=self.gen_width, depth=self.gen_depth,
                             max_width=self.gen_max_width, dropout=self.gen_dropout)

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


def _shard_seed(seed: int, shard: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, shard, step]).generate_state(1)[0])


# --- resumable state: safetensors + JSON, nothing pickled ------------------------------------

def save_train_state(directory: Path, step: int, best: float, generator: nn.Module,
                     discriminator: nn.Module, opt_g: torch.optim.Optimizer,
                     opt_d: torch.optim.Optimizer, config: TrainConfig) -> None:
    from safetensors.torch import save_file

    tensors = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    tensors |= {f"discriminator.{k}": v for k, v in discriminator.state_dict().items()}
    groups = {}
    for name, opt in (("opt_g", opt_g), ("opt_d", opt_d)):
        state = opt.state_dict()
        for index, param_state in state["state"].items():
            tensors |= {f"{name}.{index}.{k}": torch.as_tensor(v) for k, v in param_state.items()}
        groups[name] = state["param_groups"]
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
              directory / "train_state.safetensors")
    meta = {"step": step, "best_val_ab_l1": best, "param_groups": groups,
            "config": asdict(config)}
    (directory / "train_state.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_train_state(directory: Path, generator: nn.Module, discriminator: nn.Module,
                     opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                     config: TrainConfig) -> tuple[int, float]:
    """Restore what :func:`save_train_state` wrote; returns (step, best validation ab-L1)."""
    from safetensors.torch import load_file

    try:
        meta = json.loads((directory / "train_state.json").read_text())
        tensors = load_file(directory / "train_state.safetensors")
    except (OSError, ValueError) as e:
        raise CheckpointError(directory, f"cannot read the training state ({e})") from e
    saved = meta["config"]
    for key in ("gen_width", "gen_depth", "gen_max_width", "gen_dropout", "disc_width"):
        if saved.get(key) != getattr(config, key):
            raise ConfigError(f"cannot resume {directory}: it was trained with {key}="
                              f"{saved.get(key)}, this run asks for {getattr(config, key)}")

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        generator.load_state_dict(part("generator."))
        discriminator.load_state_dict(part("discriminator."))
        for name, opt in (("opt_g", opt_g), ("opt_d", opt_d)):
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in part(f"{name}.").items():
                index, field = key.split(".", 1)
                state.setdefault(int(index), {})[field] = value
            groups = [{**g, "betas": tuple(g["betas"])} for g in meta["param_groups"][name]]
            opt.load_state_dict({"state": state, "param_groups": groups})
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(directory, f"training state does not fit the models ({e})") from e
    return int(meta["step"]), float(meta["best_val_ab_l1"])


# --- loss curves, drawn with Pillow (no matplotlib) ----------------------------------------------

def plot_losses(path: Path, history: list[dict[str, float]]) -> None:
    """One panel per logged quantity against step, as a PNG."""
    from PIL import Image, ImageDraw

    keys = [k for k in ("l1_ab", "val_ab_l1", "g_gan", "d") if any(k in h for h in history)]
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
def evaluate(generator: nn.Module, lightness: torch.Tensor, ab: torch.Tensor,
             device: torch.device, amp: Callable) -> tuple[torch.Tensor, dict[str, float]]:
    """Eval-mode predictions for the fixed validation crops, and their ab-L1 (Lab units)
    next to the gray baseline (a = b = 0)."""
    was_training = generator.training
    generator.eval()
    with amp():
        pred = torch.cat([generator(x.to(device)).float().cpu() for x in lightness.split(8)])
    generator.train(was_training)
    return pred, {"val_ab_l1": float((pred - ab).abs().mean() * AB_SCALE),
                  "val_gray_ab_l1": float(ab.abs().mean() * AB_SCALE)}


def _save_last(out: Path, step: int, best: float, g: UNetGenerator, d: nn.Module, opt_g,
               opt_d, config: TrainConfig, extra: dict) -> None:
    """Write out/last as a whole: build it aside, then swap directories."""
    tmp, old, last = out / ".last.tmp", out / ".last.old", out / "last"
    shutil.rmtree(tmp, ignore_errors=True)
    save_generator(tmp, g, tile=config.crop, stride=config.tile_stride,
                   half=config.half, extra=extra)
    save_train_state(tmp, step, best, g, d, opt_g, opt_d, config)
    shutil.rmtree(old, ignore_errors=True)
    if last.exists():
        os.replace(last, old)
    os.replace(tmp, last)
    shutil.rmtree(old, ignore_errors=True)


# --- the training run -------------------------------------------------------------------------

def train(config: TrainConfig, callback: Callable | None = None) -> dict[str, float]:
    """Train under the process group described by torchrun's env vars (or one process).

    ``callback(step, generator, discriminator)`` runs on every rank after each optimizer step
    (tests use it). Returns rank 0's last validation metrics.
    """
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if ddp else (0, 1)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but torch sees no CUDA device")
    cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    backend = "nccl" if cuda else "gloo"
    check_distributed(config, backend, world)
    if ddp:
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
    try:
        return _run(config, rank, world, device, ddp, backend, callback)
    finally:
        if ddp:
            dist.destroy_process_group()


def _run(config: TrainConfig, rank: int, world: int, device: torch.device, ddp: bool,
         backend: str, callback: Callable | None) -> dict[str, float]:
    master, cuda = rank == 0, device.type == "cuda"
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = cuda and not config.deterministic
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else nullcontext
    out = Path(config.out)

    # data: each rank decodes the training photos once; rank 0 also the validation crops
    train_paths, val_paths = data.split_photos(data.list_photos(config.data), config.val_count)
    photos = data.load_photos(train_paths, config.crop)
    dataset = data.CropDataset(photos, config.crop, config.seed, repeats=config.batch_size)
    n_shards = world * config.accum
    micro = config.batch_size // n_shards
    if master:
        val_l, val_ab = data.center_crops(data.load_photos(val_paths, config.crop), config.crop)
    data_fingerprint = data.fingerprint(train_paths)

    # models: the same initialization on every rank
    torch.manual_seed(config.seed)
    g_raw = UNetGenerator(config.generator_spec()).to(device)
    d_raw = PatchDiscriminator(width=config.disc_width).to(device)
    if config.sync_bn and backend == "nccl":
        g_raw = nn.SyncBatchNorm.convert_sync_batchnorm(g_raw)
        d_raw = nn.SyncBatchNorm.convert_sync_batchnorm(d_raw)
    opt_g = torch.optim.Adam(g_raw.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
    opt_d = torch.optim.Adam(d_raw.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
    start, best = 0, math.inf
    last = out / "last" if (out / "last").exists() else out / ".last.old"
    if last.exists() and not config.resume:
        raise ConfigError(f"{last} exists: pass --resume to continue that run, "
                          f"or choose another --out")
    if last.exists():
        start, best = load_train_state(last, g_raw, d_raw, opt_g, opt_d, config)
        saved = json.loads((last / "checkpoint.json").read_text()).get("data_fingerprint")
        if master and saved != data_fingerprint:
            print(f"warning: the training photos changed since {last} was saved",
                  file=sys.stderr)
    G = DDP(g_raw, device_ids=[device.index] if cuda else None) if ddp else g_raw
    # D's running BN statistics are never used (D only runs in training mode); broadcasting
    # them between its real and fake forwards would modify tensors autograd saved (cudnn).
    D = DDP(d_raw, device_ids=[device.index] if cuda else None,
            broadcast_buffers=False) if ddp else d_raw

    history: list[dict] = []
    if master:
        out.mkdir(parents=True, exist_ok=True)
        if start and (out / "metrics.jsonl").exists():  # drop lines logged after `last`
            lines = (out / "metrics.jsonl").read_text().splitlines()
            history = [h for h in map(json.loads, lines) if h["step"] <= start]
        (out / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    my_shards = [rank * config.accum + a for a in range(config.accum)]
    batches = data.micro_batches(dataset, my_shards, n_shards, micro, start, config.num_workers,
                                 pin_memory=cuda)
    bce = nn.BCEWithLogitsLoss()
    sums, since = torch.zeros(3, device=device), 0  # l1, g_gan, d over the log window
    metrics: dict[str, float] = {}
    bar = tqdm(total=config.steps, initial=start, disable=not master, unit="step",
               dynamic_ncols=True)
    t0 = time.perf_counter()
    for step in range(start, config.steps):
        lr = lr_at(config, step)
        for group in opt_g.param_groups + opt_d.param_groups:
            group["lr"] = lr
        gan = step >= config.gan_start_step
        batch = [(x.to(device, non_blocking=True), ab.to(device, non_blocking=True))
                 for x, ab in (next(batches) for _ in range(config.accum))]

        # generator: lambda * L1 (+ adversarial loss against the current, frozen D)
        d_raw.requires_grad_(False)
        fakes = []
        for a, (light, ab) in enumerate(batch):  # light (b, 1, T, T), ab (b, 2, T, T)
            torch.manual_seed(_shard_seed(config.seed, my_shards[a], step))
            with G.no_sync() if ddp and a < config.accum - 1 else nullcontext():
                with amp():
                    fake = G(light)  # (b, 2, T, T)
                    l1 = (fake.float() - ab).abs().mean()
                    loss = config.lambda_l1 * l1
                    if gan:
                        logits = d_raw(light, fake)  # unwrapped: no gradient sync for D here
                        g_gan = bce(logits.float(), torch.ones_like(logits, dtype=torch.float))
                        loss = loss + g_gan
                (loss / config.accum).backward()
            fakes.append(fake.detach())
            sums[0] += l1.detach() / config.accum
            if gan:
                sums[1] += g_gan.detach() / config.accum
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)

        # discriminator: real (L, ab) pairs vs the fakes above
        if gan:
            d_raw.requires_grad_(True)
            for a, ((light, ab), fake) in enumerate(zip(batch, fakes, strict=True)):
                with D.no_sync() if ddp and a < config.accum - 1 else nullcontext():
                    with amp():
                        real_logits, fake_logits = D(light, ab).float(), D(light, fake).float()
                        loss_d = 0.5 * (bce(real_logits, torch.ones_like(real_logits))
                                        + bce(fake_logits, torch.zeros_like(fake_logits)))
                    (loss_d / config.accum).backward()
                sums[2] += loss_d.detach() / config.accum
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)

        done, since = step + 1, since + 1
        if callback is not None:
            callback(done, g_raw, d_raw)
        record: dict[str, float] = {}
        if done % config.log_every == 0 or done == config.steps:
            if ddp:
                dist.all_reduce(sums)
            l1_mean, g_gan_mean, d_mean = (sums / (since * world)).tolist()
            record = {"step": done, "lr": lr, "l1": l1_mean, "l1_ab": l1_mean * AB_SCALE,
                      "s_per_step": (time.perf_counter() - t0) / since}
            if gan:
                record |= {"g_gan": g_gan_mean, "d": d_mean}
            sums.zero_()
            since, t0 = 0, time.perf_counter()
        if master:
            pred = None
            if done % config.ckpt_every == 0 or done == config.steps:
                pred, metrics = evaluate(g_raw, val_l, val_ab, device, amp)
                record |= {"step": done, **metrics}
                extra = {"training": asdict(config), "step": done,
                         "data_fingerprint": data_fingerprint,
                         "metrics": {**metrics, **{k: v for k, v in record.items()
                                                   if k in ("l1_ab", "g_gan", "d")}}}
                if metrics["val_ab_l1"] < best:
                    best = metrics["val_ab_l1"]
                    save_generator(out / "best", g_raw, tile=config.crop,
                                   stride=config.tile_stride, half=config.half, extra=extra)
                _save_last(out, done, best, g_raw, d_raw, opt_g, opt_d, config, extra)
            if done % config.sample_every == 0 or done == config.steps:
                if pred is None:
                    pred, _ = evaluate(g_raw, val_l, val_ab, device, amp)
                (out / "samples").mkdir(exist_ok=True)
                data.sample_grid(val_l[:4], pred[:4], val_ab[:4]).save(
                    out / "samples" / f"step_{done:06d}.png")
            if record:
                history.append(record)
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()
                                 if k in ("l1_ab", "g_gan", "d", "val_ab_l1")})
            if pred is not None:
                plot_losses(out / "losses.png", history)
        bar.update(1)
    bar.close()
    return {"step": config.steps, "best_val_ab_l1": best, **metrics}


# --- command line -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tilecolor.train", description=(
        "Train the tilecolor generator (pix2pix cGAN). Under torchrun every rank runs this."))
    parser.add_argument("--config", metavar="TOML",
                        help="TOML file of TrainConfig keys; flags given here override it")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"(default: {f.default})")
        else:
            parser.add_argument(flag, type=type(f.default), default=None,
                                metavar=type(f.default).__name__.upper(),
                                help=f"(default: {f.default!r})")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 1 runtime failure (unreadable photo, bad checkpoint), 2 usage."""
    args = vars(build_parser().parse_args(argv))
    config_file = args.pop("config")
    try:
        values: dict[str, Any] = {}
        if config_file:
            try:
                values = tomllib.loads(Path(config_file).read_text())
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise ConfigError(f"cannot read the config file: {e}") from e
        values |= {k: v for k, v in args.items() if v is not None}
        train(TrainConfig.from_dict(values))
    except TilecolorError as e:
        print(f"tilecolor.train: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
