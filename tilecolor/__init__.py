"""tilecolor: colorize grayscale images of any size with a tiled pix2pix generator.

``tilecolor.colorize(input, output=None, **options)`` is the Python API
(:func:`tilecolor.api.colorize`), the same code path as ``tilecolor run``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["colorize"]


def __getattr__(name: str) -> Any:
    # imported on first use: `import tilecolor` stays light (the CLI, the workers)
    if name == "colorize":
        from tilecolor.api import colorize

        return colorize
    raise AttributeError(f"module 'tilecolor' has no attribute {name!r}")
