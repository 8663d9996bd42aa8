"""Exception types. Each carries the file or value at fault; the CLI prints one line from it."""

from __future__ import annotations

from pathlib import Path


class TilecolorError(Exception):
    """Base class of every error tilecolor raises on purpose."""


class InputError(TilecolorError):
    """An input image cannot be read or used (corrupt, truncated, wrong type, too large)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CheckpointError(TilecolorError):
    """A checkpoint is missing, tampered with, truncated or does not match its metadata."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"checkpoint {self.path}: {reason}")


class ConfigError(TilecolorError):
    """Bad settings: a value out of range, an unknown key, an impossible combination."""


class OutputError(TilecolorError):
    """An output cannot be written where or how it was asked."""
