"""The generator's input planes: names, order and normalization, shared by training and
inference. Pure constants and small functions, no I/O.

Every plane is (H, W) float32 in the network's units:

``L``          lightness L*/50 - 1, in [-1, 1]
``hint_a``     the hint's a*/110 (0 where the mask is 0)
``hint_b``     the hint's b*/110 (0 where the mask is 0)
``hint_mask``  1 where a hint is given, 0 where not

A checkpoint lists its planes in this order (``input_planes`` in checkpoint.json); one
without the list is an ``L``-only generator. The hint is a coarse color field: the truth's
chroma low-passed (training), the context pass's chroma or a reference image's chroma,
upsampled bilinearly (pixel centres aligned, ``align_corners=False``) to the tile's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

from tilecolor.core.errors import ConfigError

L = "L"
HINT_A = "hint_a"
HINT_B = "hint_b"
HINT_MASK = "hint_mask"

L_ONLY: tuple[str, ...] = (L,)
HINTED: tuple[str, ...] = (L, HINT_A, HINT_B, HINT_MASK)
KNOWN: tuple[tuple[str, ...], ...] = (L_ONLY, HINTED)


def check_planes(planes: Sequence[str]) -> tuple[str, ...]:
    """The planes as a tuple, or ConfigError naming a list tilecolor cannot feed."""
    planes = tuple(planes)
    if planes not in KNOWN:
        raise ConfigError(f"unsupported input planes {list(planes)}; known: "
                          f"{[list(k) for k in KNOWN]}")
    return planes


def takes_hint(planes: Sequence[str]) -> bool:
    """Whether a generator with these planes can be given a hint."""
    return HINT_MASK in planes
