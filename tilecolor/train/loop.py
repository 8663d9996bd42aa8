"""Train the colorizer: pix2pix (U-Net G, PatchGAN D, cGAN + lambda * L1) on random crops.

One process or DDP under torchrun::

    python -m tilecolor.train --data photos/ --out runs/a --steps 20000
    torchrun --nproc_per_node=2 -m tilecolor.train --data photos/ --out runs/a

Rank 0 alone logs, writes samples and checkpoints: ``out/last`` (plus train_state.* for
``--resume``) and ``out/best`` (lowest validation CIEDE2000) are generator checkpoints that
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

import copy
import json
import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from tilecolor.core.color import AB_SCALE
from tilecolor.core.errors import ConfigError
from tilecolor.model import data
from tilecolor.model.checkpoint import save_generator
from tilecolor.model.hardware import cpu_has_native_bf16
from tilecolor.model.nets import PatchDiscriminator, UNetGenerator
from tilecolor.train import crops
from tilecolor.train.config import TrainConfig, check_distributed, lr_at
from tilecolor.train.report import evaluate, plot_losses
from tilecolor.train.state import load_train_state, save_last, update_ema


def _shard_seed(seed: int, shard: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, shard, step]).generate_state(1)[0])



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
    bf16 = config.precision == "bf16" or (config.precision == "auto" and
                                          (cuda or cpu_has_native_bf16()))
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    out = Path(config.out)

    # data: each rank decodes the training photos once; rank 0 also the validation crops
    train_paths, val_paths = data.split_photos(data.list_photos(config.data), config.val_count)
    policy = config.crop_policy()
    bank = crops.PhotoBank(data.load_photos(train_paths, config.crop), policy, device)
    n_shards = world * config.accum
    micro = config.batch_size // n_shards
    if master:
        val = crops.validation_set(data.load_photos(val_paths, config.crop), config.crop)
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
    ema = None
    if config.ema:
        ema = copy.deepcopy(g_raw).requires_grad_(False)
    start, best = 0, math.inf
    last = out / "last" if (out / "last").exists() else out / ".last.old"
    if last.exists() and not config.resume:
        raise ConfigError(f"{last} exists: pass --resume to continue that run, "
                          f"or choose another --out")
    if last.exists():
        start, best = load_train_state(last, g_raw, d_raw, opt_g, opt_d, config, ema)
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

    def micro_batch(shard: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(network input (b, P, T, T), lightness (b, 1, T, T), ab (b, 2, T, T))"""
        rng = np.random.default_rng((config.seed, shard, step))
        light, ab = bank.batch(rng, micro)
        if not config.hints:
            return light, light, ab
        return torch.cat([light, crops.make_hints(ab, rng, policy)], dim=1), light, ab
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
        batch = [micro_batch(shard, step) for shard in my_shards]

        # generator: lambda * L1 (+ adversarial loss against the current, frozen D)
        d_raw.requires_grad_(False)
        fakes = []
        for a, (x, light, ab) in enumerate(batch):  # x (b, P, T, T), ab (b, 2, T, T)
            torch.manual_seed(_shard_seed(config.seed, my_shards[a], step))
            with G.no_sync() if ddp and a < config.accum - 1 else nullcontext():
                with amp():
                    fake = G(x)  # (b, 2, T, T)
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
        if ema is not None:
            update_ema(ema, g_raw, config.ema)

        # discriminator: real (L, ab) pairs vs the fakes above
        if gan:
            d_raw.requires_grad_(True)
            for a, ((_, light, ab), fake) in enumerate(zip(batch, fakes, strict=True)):
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
            pred, g_eval = None, g_raw if ema is None else ema
            if done % config.ckpt_every == 0 or done == config.steps:
                pred, metrics = evaluate(g_eval, val, device, amp, config.hints)
                record |= {"step": done, **metrics}
                extra = {"training": asdict(config), "step": done,
                         "data_fingerprint": data_fingerprint,
                         "metrics": {**metrics, **{k: v for k, v in record.items()
                                                   if k in ("l1_ab", "g_gan", "d")}}}
                if metrics["val_de"] < best:
                    best = metrics["val_de"]
                    save_generator(out / "best", g_eval, tile=config.crop,
                                   stride=config.tile_stride, half=config.half, extra=extra,
                                   planes=config.planes)
                save_last(out, done, best, g_raw, d_raw, opt_g, opt_d, config, extra, ema)
            if done % config.sample_every == 0 or done == config.steps:
                if pred is None:
                    pred, _ = evaluate(g_eval, val, device, amp, config.hints)
                (out / "samples").mkdir(exist_ok=True)
                rows = [i for i, kind in enumerate(val.kinds) if kind == "whole"][:6]
                data.sample_grid(val.lightness[rows], pred[rows], val.ab[rows]).save(
                    out / "samples" / f"step_{done:06d}.png")
            if record:
                history.append(record)
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()
                                 if k in ("l1_ab", "g_gan", "d", "val_de")})
            if pred is not None:
                plot_losses(out / "losses.png", history)
        bar.update(1)
    bar.close()
    return {"step": config.steps, "best_val_de": best, **metrics}
