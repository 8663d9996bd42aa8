"""Atomic writes: a file or folder is written under a temporary name beside its target and
renamed over it, so a reader (or a resumed run) sees the old one or the new one, never half
of one. Every file tilecolor writes goes through here."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path


def write_atomic(path: Path, data: bytes | str | Iterable[bytes]) -> Path:
    """Write ``data`` (bytes, UTF-8 text, or pieces of bytes written in turn) to ``path``
    through the temporary ``.<name>.tmp`` beside it; it is removed if the write fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name[:64]}.tmp")
    try:
        with open(tmp, "wb") as f:
            if isinstance(data, str):
                f.write(data.encode())
            elif isinstance(data, bytes | bytearray | memoryview):
                f.write(data)
            else:
                f.writelines(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def replace(tmp: Path, dest: Path) -> None:
    """``os.replace``, also when either is a folder: an existing ``dest`` is then renamed
    aside, ``tmp`` renamed in, and the old one removed (put back if the rename fails)."""
    if not (tmp.is_dir() or dest.is_dir()) or not os.path.lexists(dest):
        os.replace(tmp, dest)
        return
    aside = dest.with_name(f".{dest.name[:64]}.{uuid.uuid4().hex[:8]}.old")
    os.rename(dest, aside)
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(aside, dest)
        raise
    remove(aside)


def remove(path: Path) -> None:
    """Remove a file, link or folder (a link, not what it points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
