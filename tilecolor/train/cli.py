"""``python -m tilecolor.train`` / ``tilecolor train``: flags and TOML -> TrainConfig -> train.

Exit status: 0 done, 1 runtime failure (unreadable photo, bad checkpoint), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from tilecolor.core.errors import ConfigError, TilecolorError
from tilecolor.train.config import HELP, TrainConfig
from tilecolor.train.loop import train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tilecolor.train", description=(
        "Train the tilecolor generator (pix2pix cGAN). Under torchrun every rank runs this."))
    parser.add_argument("--config", metavar="TOML",
                        help="TOML file of TrainConfig keys; flags given here override it")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        text = f"{HELP[f.name]} (default: {f.default!r})"
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=text)
        else:
            parser.add_argument(flag, type=type(f.default), default=None,
                                metavar=type(f.default).__name__.upper(), help=text)
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
