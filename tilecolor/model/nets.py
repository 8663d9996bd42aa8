"""The paper's networks: a U-Net generator (L -> ab) and a 70x70 PatchGAN discriminator.

Follows pix2pix (Isola et al. 2017): 4x4 stride-2 convolutions, batch norm, LeakyReLU(0.2)
down; 4x4 stride-2 transposed convolutions, batch norm, ReLU up; skip connections between
mirrored levels; no bias before batch norm; N(0, 0.02) initialization.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from tilecolor.core.errors import ConfigError


@dataclass(frozen=True)
class GeneratorSpec:
    """Architecture of the U-Net generator, stored in every checkpoint.

    ``width`` is the first level's channel count; each deeper level doubles it up to
    ``max_width``. ``depth`` is the number of stride-2 levels, so tiles must be a multiple
    of ``2**depth``. Defaults are the paper's 256-px U-Net.

    ``hint_residual``: the input is the hinted planes (L, hint a, hint b, mask:
    :data:`tilecolor.core.planes.HINTED`) and the output is the hint plus the network's
    correction, clipped to [-1, 1]. Following a hint is then the starting point, not
    something to learn, and without a hint (mask 0) the output is the network's alone.
    """

    width: int = 64
    depth: int = 8
    max_width: int = 512
    dropout: float = 0.0
    in_channels: int = 1
    out_channels: int = 2
    hint_residual: bool = False

    name: ClassVar[str] = "unet"  #: the key of :data:`ARCHITECTURES` and of checkpoint.json

    def __post_init__(self) -> None:
        if self.depth < 2:
            raise ConfigError(f"generator depth must be >= 2, got depth={self.depth}")
        if self.width < 1 or self.max_width < self.width:
            raise ConfigError(f"need 1 <= width <= max_width, got {self.width}, {self.max_width}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got dropout={self.dropout}")
        if self.in_channels < 1 or self.out_channels < 1:
            raise ConfigError(f"need in_channels, out_channels >= 1, got {self.in_channels}, "
                              f"{self.out_channels}")
        if self.hint_residual and (self.in_channels, self.out_channels) != (4, 2):
            raise ConfigError(f"hint_residual needs the 4 hinted input planes and 2 outputs, "
                              f"got in_channels={self.in_channels}, "
                              f"out_channels={self.out_channels}")

    @property
    def widths(self) -> list[int]:
        return [min(self.width * 2**i, self.max_width) for i in range(self.depth)]

    @property
    def multiple(self) -> int:
        """Input sides must be a multiple of this."""
        return 2**self.depth

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorSpec:
        """The spec a checkpoint's ``architecture`` table describes (ConfigError if it
        names another architecture or holds unknown keys)."""
        spec = spec_from_dict(d)
        if not isinstance(spec, cls):
            raise ConfigError(f"architecture {spec.name!r} is not a {cls.__name__}")
        return spec


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class UNetGenerator(nn.Module):
    """U-Net: (B, in_channels, H, W) input planes (:mod:`tilecolor.core.planes`: lightness in
    [-1, 1], then any hint planes) -> (B, 2, H, W) ab in [-1, 1] (tanh)."""

    def __init__(self, spec: GeneratorSpec = GeneratorSpec()) -> None:
        super().__init__()
        self.spec = spec
        w, d = spec.widths, spec.depth
        down: list[nn.Module] = [nn.Conv2d(spec.in_channels, w[0], 4, 2, 1)]
        for i in range(1, d - 1):
            down.append(nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(w[i - 1], w[i], 4, 2, 1,
                                                                   bias=False),
                                      nn.BatchNorm2d(w[i])))
        # Innermost level: no norm (pix2pix), its output can be 1x1 for one image.
        down.append(nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(w[d - 2], w[d - 1], 4, 2, 1)))
        self.down = nn.ModuleList(down)

        up: list[nn.Module] = []
        for i in range(d - 1, 0, -1):  # from the innermost level outwards
            cin = w[i] if i == d - 1 else 2 * w[i]
            layers = [nn.ReLU(), nn.ConvTranspose2d(cin, w[i - 1], 4, 2, 1, bias=False),
                      nn.BatchNorm2d(w[i - 1])]
            if spec.dropout > 0 and i >= d - 3:
                layers.append(nn.Dropout(spec.dropout))
            up.append(nn.Sequential(*layers))
        up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * w[0], spec.out_channels, 4, 2, 1),
                                nn.Tanh()))
        self.up = nn.ModuleList(up)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.spec.multiple or x.shape[-1] % self.spec.multiple:
            raise ValueError(f"input sides must be multiples of {self.spec.multiple}, "
                             f"got {tuple(x.shape[-2:])}")
        skips = []
        h = x
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        # skips[-1] is the innermost output; mirrored levels concatenate on the way up.
        for j, layer in enumerate(self.up):
            if j > 0:
                h = torch.cat([h, skips[-1 - j]], dim=1)
            h = layer(h)
        if self.spec.hint_residual:  # x: (B, 4, H, W) = L, hint a, hint b, mask
            h = (h + x[:, 1:3] * x[:, 3:4]).clamp(-1.0, 1.0)
        return h


#: Generator architectures by the name checkpoints record: (spec class, constructor). A
#: spec class has a ``name``, ``in_channels``, ``multiple``, ``to_dict`` and keyword fields.
ARCHITECTURES: dict[str, tuple[type, Callable[[Any], nn.Module]]] = {
    GeneratorSpec.name: (GeneratorSpec, UNetGenerator),
}


def spec_from_dict(d: dict) -> Any:
    """The architecture spec of a checkpoint's ``architecture`` table (a missing ``name``
    is the U-Net). Raises ConfigError naming an unknown architecture or key."""
    d = dict(d)
    name = d.pop("name", GeneratorSpec.name)
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown generator architecture {name!r}; known: "
                          f"{sorted(ARCHITECTURES)}")
    spec_cls = ARCHITECTURES[name][0]
    unknown = set(d) - set(spec_cls.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown {name} generator keys: {sorted(unknown)}")
    return spec_cls(**d)


def build_generator(spec: Any) -> nn.Module:
    """A freshly initialized generator of the architecture ``spec`` describes."""
    return ARCHITECTURES[spec.name][1](spec)


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN on (L, ab): (B, 3, H, W) -> (B, 1, H/8 - 2, W/8 - 2) real/fake logits."""

    def __init__(self, in_channels: int = 3, width: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(width * prev, width * mult, 4, stride, 1, bias=False),
                       nn.BatchNorm2d(width * mult), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(width * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, lightness: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([lightness, ab], dim=1))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` prepared for fast inference, same function.

    Every batch norm that directly follows a (transposed) convolution is folded into it
    (eval-mode BN is an affine map per channel), and the weights are stored channels_last:
    with NHWC activations oneDNN's convolutions ran the default generator 1.3-1.6x faster on
    CPU (BENCHMARKS.md) and tensor cores want it on CUDA. Outputs match the original to
    float32 rounding (tests/test_nets.py).
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and \
                    isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(
                    conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                seq._modules[b] = nn.Identity()
    return model.to(memory_format=torch.channels_last)
