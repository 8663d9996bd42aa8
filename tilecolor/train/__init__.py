"""Training the colorizer (pix2pix cGAN, DDP under torchrun): ``python -m tilecolor.train``.

Modules: config (TrainConfig and its help), crops (Lab photo pyramids on the device,
multi-scale crops, hints from the truth), loop (the run), state (resumable state, EMA),
report (validation scores, curves), cli (flags and TOML).
"""

from tilecolor.train.cli import build_parser, main
from tilecolor.train.config import HELP, TrainConfig, check_distributed, lr_at
from tilecolor.train.loop import train

__all__ = ["HELP", "TrainConfig", "build_parser", "check_distributed", "lr_at", "main",
           "train"]
