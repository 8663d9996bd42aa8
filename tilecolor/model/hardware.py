"""What the machine's processor can do, read once (no torch import)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

#: CPU flags (Linux /proc/cpuinfo names) of native bf16 arithmetic: AVX-512 BF16, AMX
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The first processor's flags from /proc/cpuinfo; empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (oneDNN then runs bf16 convolutions about
    twice as fast as float32; elsewhere bf16 is emulated and slower)."""
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)
