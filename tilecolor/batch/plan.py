"""Planning a batch: discover the inputs, check each one, and decide per image whether it is
up to date, resumed or new.

Planning needs no cluster: images whose output is up to date (same fingerprint of input,
model and settings in the manifest) are skipped before any worker starts, so a scheduled
rerun over finished work returns in seconds. A working store left by an interrupted run
with the same fingerprint is resumed: its finished blocks are not recomputed.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tilecolor.batch.report import ImageResult
from tilecolor.batch.safety import check_dest, file_ids, work_name
from tilecolor.core.errors import OutputError, TilecolorError, one_line
from tilecolor.core.planes import takes_hint
from tilecolor.engine.hints import DEFAULT_CONTEXT, ContextPass, find_reference, plan_reference
from tilecolor.engine.settings import Hint, Settings
from tilecolor.engine.store import LAYOUT, Modes, WorkStore
from tilecolor.io.formats import check_output_size, output_path
from tilecolor.io.read import ImageInfo, probe
from tilecolor.io.tiff import tiff_tiles
from tilecolor.io.validate import InputPolicy, is_candidate

log = logging.getLogger("tilecolor")

WORK_DIR = ".tilecolor"


def find_inputs(patterns: list[str | Path] | str | Path) -> list[Path]:
    """Image files named by folders (not recursive, hidden files skipped), files or globs.

    A folder lists every entry named like an image, supported or not (``.bmp``...), and
    special files too: they are rejected one by one with a reason, not silently skipped.
    """
    if isinstance(patterns, (str, Path)):
        patterns = [patterns]
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found += sorted(p for p in path.iterdir()
                            if is_candidate(p.name) and not p.is_dir())
        elif path.is_file():
            found.append(path)
        else:
            found += sorted(Path(p) for p in glob.glob(str(pattern)) if Path(p).is_file())
    return list(dict.fromkeys(found))  # keep order, drop repeats


def fingerprint(src: Path, model_digest: str, settings: Settings, fmt: str,
                page: int = 0, precision: str = "fp32", hint: str | None = None) -> str:
    """Identity of a result: input (size, mtime, first and last MiB), page, model, its
    arithmetic, settings and ``hint`` (:func:`hint_identity`). Page 0, fp32 and no hint
    add nothing, so results written before those were options keep their fingerprint."""
    st = src.stat()
    h = hashlib.sha256()
    h.update(json.dumps([st.st_size, st.st_mtime_ns, model_digest, settings.render_scale,
                         settings.tile,
                         settings.stride, str(settings.blend), fmt,
                         *([page] if page else []),
                         *([precision] if precision != "fp32" else []),
                         *([hint] if hint else [])]).encode())
    with open(src, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return h.hexdigest()


@dataclass
class Job:
    """One image to compute."""

    src: Path
    info: ImageInfo
    dest: Path
    fmt: str
    store: WorkStore
    manifest: Path
    fingerprint: str
    tiles: int
    hint: Hint | None = None  #: where its tiles' hint comes from (None: no hint planes)
    t0: float = field(default_factory=time.perf_counter)
    graph: object = None
    generator_seconds: float = 0.0
    generator_cpu_seconds: float = 0.0


def _plan_one(src: Path, out_dir: Path, settings: Settings, model_digest: str,
              fmt: str | None, overwrite: bool, claimed: set[Path],
              policy: InputPolicy | None = None,
              protected: set[tuple[int, int]] | None = None,
              precision: str = "fp32", reference: Path | None = None) -> Job | ImageResult:
    info = probe(src, policy)
    out_fmt = fmt or info.format
    dest = output_path(out_dir, src, out_fmt)
    if dest.resolve() == src.resolve():
        raise OutputError(f"{src}: output would overwrite the input; choose another --output")
    check_dest(src, dest, out_dir, protected if protected is not None else file_ids([src]))
    check_output_size(src, info.height, info.width, out_fmt)
    if dest in claimed:
        raise OutputError(f"{src}: output name {dest.name} is already taken by another input")
    claimed.add(dest)
    work = out_dir / WORK_DIR
    manifest = work / f"{work_name(src)}.done.json"
    hint = image_hint(src, info, settings, reference, policy)
    fp = fingerprint(src, model_digest, settings, out_fmt, info.page, precision,
                     hint_identity(settings, hint))
    if dest.exists() and not overwrite:
        try:
            previous = json.loads(manifest.read_text()).get("fingerprint")
        except (OSError, ValueError):
            previous = None
        if previous == fp:
            return ImageResult(str(src), "skipped", str(dest), height=info.height,
                               width=info.width)
        if previous is None:
            raise OutputError(f"{src}: {dest} exists and was not written by tilecolor; "
                              f"use --overwrite to replace it")
    plan = settings.plan(info.height, info.width)
    render = settings.render_plan(info.height, info.width)
    encode = tiff_tiles(out_fmt, settings.block)
    store = WorkStore(work / f"{work_name(src)}.zarr", Modes.of(plan, render, "rgb", encode))
    attrs = {"fingerprint": fp, "block": settings.block, "source": str(src), "layout": LAYOUT}
    resumable = (not overwrite and store.exists()
                 and {k: store.attrs.get(k) for k in attrs} == attrs)
    if resumable:
        log.info("%s: resuming (%d of %d blocks already done)", src.name,
                 int(store.blocks_done().sum()), store.blocks_done().size)
    else:
        work.mkdir(parents=True, exist_ok=True)
        store = WorkStore.create(store.path, plan, info.dtype, attrs=attrs,
                                 render=render, tiff_tiles=encode,
                                 context_copy=context_copy(hint, settings.block))
    return Job(src, info, dest, out_fmt, store, manifest, fp, plan.n_tiles, hint)


def image_hint(src: Path, info: ImageInfo, settings: Settings, reference: Path | None,
               policy: InputPolicy | None = None) -> Hint | None:
    """Where image ``src``'s hint comes from: for a generator with hint planes, its
    reference image (``reference``: the file, or a folder holding one of the same name
    stem; InputError when there is none or it does not fit), else its context pass."""
    if not takes_hint(settings.planes):
        return None
    if reference is None:
        return settings.context_pass(info.height, info.width)
    path = find_reference(src, reference)
    return plan_reference(src, info.height, info.width, path,
                          settings.context or DEFAULT_CONTEXT, policy)


def hint_identity(settings: Settings, hint: Hint | None) -> str | None:
    """What a result's fingerprint records of its hint: nothing for a generator without
    hint planes, else the context size (0: off) or the reference's SHA-256."""
    if not takes_hint(settings.planes):
        return None
    digest = getattr(hint, "digest", None)
    return f"hint={digest}" if digest else f"context={settings.context}"


def context_copy(hint: Hint | None, block: int) -> tuple[int, int, int] | None:
    """The working store's context copy for ``hint`` (WorkStore.create), or None."""
    if not isinstance(hint, ContextPass):
        return None
    return (*hint.copy_shape, block // hint.step)


def plan_batch(inputs: list[Path], out_dir: Path, settings: Settings, model_digest: str, *,
               fmt: str | None = None, overwrite: bool = False,
               policy: InputPolicy | None = None, precision: str = "fp32",
               reference: Path | None = None
               ) -> tuple[list[Job], dict[Path, ImageResult]]:
    """Check every input's header and decide what to do, without a cluster.

    ``reference`` (guided mode, ``--hint``): a color image of the scene, or a folder of
    them matched to the inputs by name stem; each image's reference is checked here (a
    missing or unfit one fails that image only). ``policy`` sets the pixel limit and
    TIFF page; ``precision`` is the generator's
    arithmetic (a bf16 result is not an fp32 one: it is part of the fingerprint). Returns
    the jobs to run and the results already known (up to date, or failed checks).
    """
    jobs, known, claimed = [], {}, set()
    protected = file_ids(inputs)  # no output may replace any input
    for src in inputs:
        try:
            item = _plan_one(src, out_dir, settings, model_digest, fmt, overwrite, claimed,
                             policy, protected, precision, reference)
        except TilecolorError as e:
            known[src] = ImageResult(str(src), "failed", error=str(e))
            log.error("%s", e)
            continue
        except OSError as e:
            known[src] = ImageResult(str(src), "failed", error=one_line(f"{src}: {e}"))
            log.error("%s", known[src].error)
            continue
        if isinstance(item, ImageResult):
            known[src] = item
            log.info("up to date: %s", src.name)
        else:
            jobs.append(item)
    return jobs, known
