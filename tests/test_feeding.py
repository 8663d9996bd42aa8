"""Generator tasks handed to the scheduler as workers free up (submit_image(defer=True),
run_jobs(slots=...)), and the last ones told to use the cores left idle (cores=...)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import smooth_image

from tilecolor.batch.plan import plan_batch
from tilecolor.batch.run import run_jobs
from tilecolor.engine.graph import submit_image
from tilecolor.engine.settings import Settings
from tilecolor.engine.store import WorkStore
from tilecolor.io.read import probe


def affine(x: np.ndarray) -> np.ndarray:
    return np.concatenate([0.5 * x + 0.1, -0.25 * x - 0.05], axis=1)


@pytest.mark.parametrize("stride, scale", [(32, 1.0), (64, 1.0), (32, 0.5)])
def test_fed_graph_writes_the_same_image(client2, tmp_path, stride, scale):
    """Held back, the generator tasks go out only as fed, the blend/compose tasks once the
    generator tasks they read are out; the written image is the one of a graph submitted
    all at once (blends across blocks at stride 32, encoded by the map tasks at 64)."""
    img = smooth_image(1100, 1040)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, img, tile=(64, 64))
    info = probe(src)
    settings = Settings(tile=64, stride=stride, block=512, render_scale=scale)
    plan, render = settings.plan(*img.shape), settings.render_plan(*img.shape)
    outputs = []
    for defer in (False, True):
        work = tmp_path / f"defer-{defer}"
        store = WorkStore.create(work / "work.zarr", plan, info.dtype, render=render,
                                 tiff_tiles=True)
        dest = work / "out.tif"
        graph = submit_image(client2, info, store, settings, affine, dest=dest, fmt="tiff",
                             defer=defer)
        n = plan.grid[0] * plan.grid[1]
        if defer:
            assert graph.maps == [] and graph.held == n
            assert graph.unsubmitted >= n
            while graph.held:
                new = graph.feed(1)
                assert len(graph.maps) == n - graph.held
                assert {f.key[0].split("-")[0] for f in new} <= {
                    "colorize_block", "blend_chunk", "compose_chunk"}
                time.sleep(0.05)
            assert graph.unsubmitted == 0
        assert len(graph.maps) == n
        assert graph.final.result(timeout=300) == str(dest)
        graph.release(client2)
        outputs.append(dest.read_bytes())
    assert outputs[0] == outputs[1]


class _CountMaps:
    """Scheduler plugin: the most generator tasks submitted and not finished at once."""

    name = "tilecolor-test-count-maps"

    def __init__(self) -> None:
        self.live: set = set()
        self.most = 0

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if not (isinstance(key, tuple) and str(key[0]).startswith("colorize_block")):
            return
        if start == "released" and finish in ("waiting", "processing", "queued",
                                               "no-worker"):
            self.live.add(key)
            self.most = max(self.most, len(self.live))
        elif finish in ("memory", "erred", "released", "forgotten"):
            self.live.discard(key)


def _jobs(tmp_path: Path, names=("a.tif", "b.tif"), shape=(256, 320)):
    src = tmp_path / "in"
    src.mkdir(parents=True)
    for i, name in enumerate(names):
        tifffile.imwrite(src / name, smooth_image(*shape, seed=i), tile=(32, 32))
    settings = Settings(tile=32, stride=32, block=128, batch_size=4)  # 4 batches a block
    jobs, known = plan_batch(sorted(src.iterdir()), tmp_path / "out", settings, "digest")
    assert not known
    return jobs, settings


def _most_maps_in_flight(client, tmp_path: Path, **kwargs) -> int:
    """Run two images through run_jobs(**kwargs); the most generator tasks the scheduler
    held submitted and not finished at once."""
    from distributed.diagnostics.plugin import SchedulerPlugin

    client.register_plugin(type("CountMaps", (_CountMaps, SchedulerPlugin), {})(),
                           name=_CountMaps.name)
    try:
        jobs, settings = _jobs(tmp_path)
        results = run_jobs(client, jobs, settings, affine, progress=False, **kwargs)
        assert [r.status for r in results.values()] == ["done", "done"]
        return client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.plugins[_CountMaps.name].most)
    finally:
        client.unregister_scheduler_plugin(_CountMaps.name)


def test_run_jobs_keeps_two_generator_tasks_per_slot_in_flight(client2, tmp_path):
    assert 1 <= _most_maps_in_flight(client2, tmp_path, slots=1) <= 2  # 6 blocks an image
    # unfed: every block of both images at once
    assert _most_maps_in_flight(client2, tmp_path / "all") > 2


@dataclass(frozen=True)
class Recorder:
    """A generator stand-in that logs the torch threads it was asked to use."""

    log: str
    delay: float
    threads: int | None = 1

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        t0 = time.time()
        time.sleep(self.delay)
        with open(self.log, "a") as f:
            f.write(json.dumps([os.getpid(), t0, time.time(), self.threads]) + "\n")
        return affine(batch)


def _calls(log: Path) -> list[list]:
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    for pid, start, _, threads in calls:
        if threads == 2:  # the other worker had finished all its calls by then
            assert all(end <= start for p, _, end, _ in calls if p != pid)
    return calls


def test_last_generator_task_is_told_to_use_the_idle_cores(client2, tmp_path):
    """Once one generator task is left, it is told to use both cores (the hint reaches it
    between batches), never while the other worker still runs one."""
    # 3 blocks of 4 batches on 2 workers: the third runs alone once the second is done
    jobs, settings = _jobs(tmp_path, names=("a.tif",), shape=(384, 128))
    log = tmp_path / "calls.jsonl"
    results = run_jobs(client2, jobs, settings, Recorder(str(log), delay=0.25),
                       progress=False, slots=2, cores=2)
    assert [r.status for r in results.values()] == ["done"]
    calls = _calls(log)
    assert len(calls) == 3 * 4 and {c[3] for c in calls} == {1, 2}
    boosted = [c for c in calls if c[3] == 2]
    assert len({c[0] for c in boosted}) == 1 and len(boosted) <= 4  # the last block's


def test_a_stale_hint_is_cleared_and_the_store_removed(client2, tmp_path):
    """A hint an interrupted run left in the store is cleared before the image runs."""
    jobs, settings = _jobs(tmp_path, names=("a.tif",), shape=(256, 256))  # 4 blocks
    jobs[0].store.set_threads(2)
    log = tmp_path / "calls.jsonl"
    run_jobs(client2, jobs, settings, Recorder(str(log), delay=0.05), progress=False,
             slots=2, cores=2)
    assert len(_calls(log)) == 4 * 4
    assert not jobs[0].store.path.exists()
