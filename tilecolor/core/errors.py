"""Exception types. Each carries the file or value at fault; the CLI prints one line from it."""

from __future__ import annotations

import re
from pathlib import Path

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` safe to print as one line: control characters (a newline in a file name)
    escaped, undecodable bytes of file names (surrogates) shown as ``\\xNN``."""
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file name byte produced
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


class TilecolorError(Exception):
    """Base class of every error tilecolor raises on purpose. ``str()`` is one safe line."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class InputError(TilecolorError):
    """An input image cannot be read or used (corrupt, truncated, wrong type, too large)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # raised on Dask workers, unpickled on the client
        return (type(self), (str(self.path), self.reason))


class CheckpointError(TilecolorError):
    """A checkpoint is missing, tampered with, truncated or does not match its metadata."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"checkpoint {self.path}: {reason}")

    def __reduce__(self):
        return (type(self), (str(self.path), self.reason))


class ConfigError(TilecolorError):
    """Bad settings: a value out of range, an unknown key, an impossible combination."""


class UsageError(ConfigError):
    """Options that cannot run: a bad value, no inputs, options that do not fit the inputs
    or the checkpoint. Raised before any work; the CLI's exit code 2."""


class OutputError(TilecolorError):
    """An output cannot be written where or how it was asked."""
