"""Resumable training state: safetensors + JSON, nothing pickled. ``out/last`` is a
generator checkpoint (what ``tilecolor run`` loads) plus train_state.* (what ``--resume``
restores: G, D, their optimizers, the EMA and the step)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from tilecolor.core.errors import CheckpointError, ConfigError
from tilecolor.model.checkpoint import save_generator
from tilecolor.model.nets import UNetGenerator
from tilecolor.train.config import TrainConfig


def save_train_state(directory: Path, step: int, best: float, generator: nn.Module,
                     discriminator: nn.Module, opt_g: torch.optim.Optimizer,
                     opt_d: torch.optim.Optimizer, config: TrainConfig,
                     ema: nn.Module | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    if ema is not None:
        tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    tensors |= {f"discriminator.{k}": v for k, v in discriminator.state_dict().items()}
    groups = {}
    for name, opt in (("opt_g", opt_g), ("opt_d", opt_d)):
        state = opt.state_dict()
        for index, param_state in state["state"].items():
            tensors |= {f"{name}.{index}.{k}": torch.as_tensor(v) for k, v in param_state.items()}
        groups[name] = state["param_groups"]
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
              directory / "train_state.safetensors")
    meta = {"step": step, "best_val_de": best, "param_groups": groups,
            "config": asdict(config)}
    (directory / "train_state.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_train_state(directory: Path, generator: nn.Module, discriminator: nn.Module,
                     opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                     config: TrainConfig, ema: nn.Module | None = None) -> tuple[int, float]:
    """Restore what :func:`save_train_state` wrote; returns (step, best validation
    CIEDE2000)."""
    from safetensors.torch import load_file

    try:
        meta = json.loads((directory / "train_state.json").read_text())
        tensors = load_file(directory / "train_state.safetensors")
    except (OSError, ValueError) as e:
        raise CheckpointError(directory, f"cannot read the training state ({e})") from e
    saved = meta["config"]
    for key in ("gen_width", "gen_depth", "gen_max_width", "gen_dropout", "disc_width",
                "hints", "hint_residual", "ema"):
        if saved.get(key) != getattr(config, key):
            raise ConfigError(f"cannot resume {directory}: it was trained with {key}="
                              f"{saved.get(key)}, this run asks for {getattr(config, key)}")

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        generator.load_state_dict(part("generator."))
        discriminator.load_state_dict(part("discriminator."))
        if ema is not None:
            ema.load_state_dict(part("ema."))
        for name, opt in (("opt_g", opt_g), ("opt_d", opt_d)):
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in part(f"{name}.").items():
                index, field = key.split(".", 1)
                state.setdefault(int(index), {})[field] = value
            groups = [{**g, "betas": tuple(g["betas"])} for g in meta["param_groups"][name]]
            opt.load_state_dict({"state": state, "param_groups": groups})
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(directory, f"training state does not fit the models ({e})") from e
    return int(meta["step"]), float(meta["best_val_de"])


def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model; buffers (BN statistics) copied."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p, 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers(), strict=True):
            e.copy_(b)


def save_last(out: Path, step: int, best: float, g: UNetGenerator, d: nn.Module, opt_g,
               opt_d, config: TrainConfig, extra: dict, ema: UNetGenerator | None) -> None:
    """Write out/last as a whole: build it aside, then swap directories. Its generator
    checkpoint holds the EMA weights where there are some."""
    tmp, old, last = out / ".last.tmp", out / ".last.old", out / "last"
    shutil.rmtree(tmp, ignore_errors=True)
    save_generator(tmp, g if ema is None else ema, tile=config.crop,
                   stride=config.tile_stride, half=config.half, extra=extra,
                   planes=config.planes)
    save_train_state(tmp, step, best, g, d, opt_g, opt_d, config, ema)
    shutil.rmtree(old, ignore_errors=True)
    if last.exists():
        os.replace(last, old)
    os.replace(tmp, last)
    shutil.rmtree(old, ignore_errors=True)


