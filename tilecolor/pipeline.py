"""Colorize a batch of images: discover, probe, submit each image's graph, collect results.

Images are submitted a few at a time (``max_inflight``) so working stores and scheduler
state stay bounded on folders of thousands of files. A failed image is reported and the
others go on. A finished image leaves a manifest with the fingerprint of its input, model
and settings, so a rerun skips it; its working store is removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tilecolor.engine import Predict, Settings, submit_image
from tilecolor.errors import InputError, OutputError, TilecolorError
from tilecolor.io import ImageInfo, output_path, probe, sniff_ext
from tilecolor.progress import Progress
from tilecolor.store import WorkStore

log = logging.getLogger("tilecolor")

WORK_DIR = ".tilecolor"


@dataclass
class ImageResult:
    """What happened to one input."""

    input: str
    status: str  #: "done", "skipped" (up to date) or "failed"
    output: str | None = None
    error: str | None = None
    height: int = 0
    width: int = 0
    tiles: int = 0
    seconds: float = 0.0

    @property
    def megapixels_per_second(self) -> float:
        return self.height * self.width / 1e6 / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "megapixels_per_second": self.megapixels_per_second}


def find_inputs(path: Path) -> list[Path]:
    """Image files in a folder (not recursive, hidden files skipped), or the one file given."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir()
                  if not p.name.startswith(".") and sniff_ext(p.suffix) and p.is_file())


def fingerprint(src: Path, model_digest: str, settings: Settings, fmt: str) -> str:
    """Identity of a result: input (size, mtime, first and last MiB), model and settings."""
    st = src.stat()
    h = hashlib.sha256()
    h.update(json.dumps([st.st_size, st.st_mtime_ns, model_digest, settings.tile,
                         settings.stride, str(settings.blend), fmt]).encode())
    with open(src, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return h.hexdigest()


@dataclass
class _Job:
    src: Path
    info: ImageInfo
    dest: Path
    store: WorkStore
    manifest: Path
    fingerprint: str
    tiles: int
    t0: float = field(default_factory=time.perf_counter)
    graph: object = None


def _prepare(src: Path, out_dir: Path, settings: Settings, model_digest: str,
             fmt: str | None, overwrite: bool, claimed: set[Path]) -> _Job | ImageResult:
    info = probe(src)
    out_fmt = fmt or info.format
    dest = output_path(out_dir, src, out_fmt)
    if dest.resolve() == src.resolve():
        raise OutputError(f"{src}: output would overwrite the input; choose another --output")
    if dest in claimed:
        raise OutputError(f"{src}: output name {dest.name} is already taken by another input")
    claimed.add(dest)
    work = out_dir / WORK_DIR
    manifest = work / f"{src.name}.done.json"
    fp = fingerprint(src, model_digest, settings, out_fmt)
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
    work.mkdir(parents=True, exist_ok=True)
    plan = settings.plan(info.height, info.width)
    store = WorkStore.create(work / f"{src.name}.zarr", plan, info.dtype,
                             attrs={"fingerprint": fp, "source": str(src)})
    return _Job(src, info, dest, store, manifest, fp, plan.n_tiles)


def run_batch(client, inputs: list[Path], out_dir: Path, settings: Settings, predict: Predict,
              model_digest: str, *, fmt: str | None = None, overwrite: bool = False,
              max_inflight: int = 4, progress: bool = True) -> list[ImageResult]:
    """Colorize ``inputs`` into ``out_dir``; returns one result per input, in input order."""
    from distributed import as_completed

    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[Path, ImageResult] = {}
    queue, claimed = deque(inputs), set()
    finals: dict[object, _Job] = {}
    bar = Progress(desc="colorize", enabled=progress)
    ac = as_completed()

    def submit_next() -> bool:
        while queue:
            src = queue.popleft()
            try:
                job = _prepare(src, out_dir, settings, model_digest, fmt, overwrite, claimed)
            except TilecolorError as e:
                results[src] = ImageResult(str(src), "failed", error=str(e))
                bar.write(f"error: {e}")
                continue
            if isinstance(job, ImageResult):
                results[src] = job
                bar.write(f"up to date: {src.name}")
                continue
            job.graph = submit_image(client, job.info, job.store, settings, predict,
                                     dest=job.dest, fmt=fmt or job.info.format)
            bar.add_total(job.graph.n_tasks)
            finals[job.graph.final] = job
            for f in [*job.graph.maps, *job.graph.reduces, job.graph.final]:
                ac.add(f)
            return True
        return False

    for _ in range(max_inflight):
        if not submit_next():
            break
    for future in ac:
        bar.update()
        job = finals.pop(future, None)
        if job is None:
            continue
        results[job.src] = _finish(job, future)
        r = results[job.src]
        bar.write(f"{'done' if r.status == 'done' else 'error'}: "
                  f"{r.output if r.status == 'done' else r.error}")
        submit_next()
    bar.close()
    return [results[p] for p in inputs]


def _finish(job: _Job, future) -> ImageResult:
    seconds = time.perf_counter() - job.t0
    base = dict(height=job.info.height, width=job.info.width, seconds=seconds,
                tiles=job.tiles)
    if future.status == "finished":
        job.manifest.write_text(json.dumps({"fingerprint": job.fingerprint,
                                            "output": str(job.dest)}) + "\n")
        job.store.remove()
        return ImageResult(str(job.src), "done", str(job.dest), **base)
    exc = future.exception()
    msg = str(exc) if isinstance(exc, InputError) else f"{job.src}: {type(exc).__name__}: {exc}"
    return ImageResult(str(job.src), "failed", error=msg, **base)

