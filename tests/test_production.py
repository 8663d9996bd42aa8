"""Batch-job behaviour with real processes: kill -9 and resume, a worker killed inside a
LocalCluster, reports, GPU resources nobody offers, logs without a terminal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import zarr
from conftest import smooth_image

from tilecolor.cluster.workers import require_resource
from tilecolor.core.errors import TilecolorError
from tilecolor.engine.graph import submit_image
from tilecolor.engine.settings import Settings
from tilecolor.engine.store import WorkStore
from tilecolor.io.read import probe
from tilecolor.model.predict import resolve_precision

ARGS = ["--tile", "64", "--stride", "32", "--block", "64", "--threads", "1",
        "--dashboard-address", "127.0.0.1:0", "--format", "tiff"]


def _cmd(tiny_checkpoint, src, out, *extra):
    return [sys.executable, "-m", "tilecolor", "run", "--input", str(src), "--output", str(out),
            "--checkpoint", str(tiny_checkpoint), *ARGS, *extra]


@pytest.mark.parametrize("h,w,block", [(768, 896, 64),
                                       # blocks of whole TIFF tiles: the tasks encode them
                                       (2048, 1536, 512)])
def test_kill_9_then_resume_gives_identical_output(tmp_path, tiny_checkpoint, h, w, block):
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "big.tif", smooth_image(h, w, seed=4), tile=(64, 64))
    blocks = ["--block", str(block)]
    ref = subprocess.run(_cmd(tiny_checkpoint, src, tmp_path / "ref", "-q", *blocks),
                         capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "out"
    proc = subprocess.Popen(_cmd(tiny_checkpoint, src, out, "-q", *blocks),
                            start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store_done = out / ".tilecolor" / "big.tif.zarr" / "map_done"
    total = -(-h // block) * -(-w // block)
    deadline = time.monotonic() + 300
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            done = int((zarr.open_array(str(store_done), mode="r")[:] > 0).sum())
        except Exception:  # the store is not created yet
            done = 0
        if done >= total * 0.4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, the nanny and the workers
    proc.wait()
    time.sleep(0.5)
    done_at_kill = int((zarr.open_array(str(store_done), mode="r")[:] > 0).sum())
    assert 0 < done_at_kill < total
    assert not (out / "big.tif").exists()  # no half-written output
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]

    rerun = subprocess.run(_cmd(tiny_checkpoint, src, out, "-q", *blocks, "--report",
                                str(tmp_path / "r")),
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "big.tif").read_bytes() == (tmp_path / "ref" / "big.tif").read_bytes()
    report = json.loads(next((tmp_path / "r").glob("run-*.json")).read_text())
    # only the blocks not finished at the kill ran again
    assert report["images"][0]["blocks_computed"] == total - done_at_kill


def slow_affine(x):
    time.sleep(0.02)
    return np.concatenate([0.5 * x + 0.1, -0.25 * x - 0.05], axis=1)


def test_worker_killed_mid_run_still_completes_identically(tmp_path):
    from distributed import Client, LocalCluster

    img = smooth_image(256, 256, seed=9)
    tifffile.imwrite(tmp_path / "in.tif", img)
    info = probe(tmp_path / "in.tif")
    settings = Settings(tile=32, stride=16, block=32, blend="cosine", batch_size=4)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        ref = WorkStore.create(tmp_path / "ref.zarr", settings.plan(256, 256), "uint8",
                               output="ab")
        client.gather(submit_image(client, info, ref, settings, slow_affine).reduces)
        store = WorkStore.create(tmp_path / "w.zarr", settings.plan(256, 256), "uint8",
                                 output="ab")
        graph = submit_image(client, info, store, settings, slow_affine, retries=0)
        while store.blocks_done().sum() < 10:
            time.sleep(0.02)
        victim = next(iter(client.run(os.getpid).values()))
        os.kill(victim, signal.SIGKILL)
        client.gather(graph.reduces)  # tasks of the lost worker are rescheduled
        assert store.blocks_done().all()
        np.testing.assert_array_equal(store.array("ab")[:], ref.array("ab")[:])
        assert victim not in client.run(os.getpid).values()


def test_no_worker_with_gpu_fails_fast(client1):
    # raising at all is the point: tasks asking for GPU=1 would otherwise wait forever
    with pytest.raises(TilecolorError, match="no worker offers the GPU resource"):
        require_resource(client1, "GPU", timeout=1)


def r_seconds(report: dict, name: str) -> float:
    return next(i["seconds"] for i in report["images"] if i["input"].endswith(name))


def test_report_json_and_html(tmp_path, tiny_checkpoint):
    from click.testing import CliRunner

    from tilecolor.cli import main

    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "a.tif", smooth_image(100, 130, seed=1))
    (src / "bad.png").write_bytes(b"nope")
    r = CliRunner().invoke(main, ["run", "--input", str(src), "--output", str(tmp_path / "o"),
                                  "--checkpoint", str(tiny_checkpoint), *ARGS,
                                  "--report", str(tmp_path / "reports")])
    assert r.exit_code == 1
    reports = tmp_path / "reports"
    report = json.loads(next(reports.glob("run-*.json")).read_text())
    by_name = {os.path.basename(i["input"]): i for i in report["images"]}
    assert by_name["a.tif"]["status"] == "done"
    assert by_name["a.tif"]["height"] == 100 and by_name["a.tif"]["tiles"] > 0
    assert by_name["a.tif"]["megapixels_per_second"] > 0
    # the generator's share of the work (summed over map tasks) is reported too
    assert 0 < by_name["a.tif"]["generator_seconds"] < r_seconds(report, "a.tif") * 4
    # and its CPU time: one torch thread per worker here, so at most the wall time in it
    cpu = by_name["a.tif"]["generator_cpu_seconds"]
    assert 0 < cpu <= by_name["a.tif"]["generator_seconds"] * 1.01 + 0.01
    assert by_name["bad.png"]["status"] == "failed" and "bad.png" in by_name["bad.png"]["error"]
    assert report["totals"]["done"] == 1 and report["totals"]["failed"] == 1
    assert report["settings"]["device"] == "cpu"
    assert report["settings"]["precision"] == resolve_precision("cpu")  # what auto chose
    html = next(reports.glob("run-*.html")).read_text()
    assert "colorize_block" in html
    # without --report: the JSON report only (the HTML one costs a second or more per run)
    r = CliRunner().invoke(main, ["run", "--input", str(src), "--output", str(tmp_path / "o2"),
                                  "--checkpoint", str(tiny_checkpoint), *ARGS])
    default = tmp_path / "o2" / ".tilecolor" / "reports"
    assert r.exit_code == 1 and len(list(default.glob("run-*.json"))) == 1
    assert not list(default.glob("run-*.html"))


def test_scheduled_rerun_is_fast_and_logs_without_a_terminal(tmp_path, tiny_checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "a.tif", smooth_image(200, 200, seed=2))
    first = subprocess.run(_cmd(tiny_checkpoint, src, tmp_path / "o"), capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "colorize: " in first.stderr and "done (100%" in first.stderr  # plain log lines
    second = subprocess.run(_cmd(tiny_checkpoint, src, tmp_path / "o"), capture_output=True,
                            text=True, timeout=600)
    assert second.returncode == 0
    assert "0 colorized, 1 up to date, 0 failed" in second.stderr
    assert "dashboard" not in second.stderr  # no cluster was started (BENCHMARKS.md: 5 s)


# ------------------------------------------------------------- ingest while the cluster starts

def _tiff_job(tmp_path, name="img.tif", shape=(300, 200), data=None):
    from tilecolor.batch.plan import plan_batch

    src = tmp_path / "in" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    gray = smooth_image(*shape, dtype=np.uint16) if data is None else data
    tifffile.imwrite(src, gray, tile=(32, 32), compression="zlib")
    settings = Settings(tile=64, stride=32, block=64, batch_size=4)
    jobs, known = plan_batch([src], tmp_path / "out", settings, "digest")
    assert not known and len(jobs) == 1
    return jobs[0], settings, gray


def test_preingest_fills_the_store_like_ingest_tasks(tmp_path, client1):
    """Left to finish, the driver's ingest copies every block and marks it done, so the
    image's graph has no ingest task left; the generator tasks then read those blocks."""
    from tilecolor.batch.preingest import Preingest

    job, settings, gray = _tiff_job(tmp_path)
    n = job.store.blocks_done("ingest").size
    with Preingest([job], settings) as ahead:
        deadline = time.monotonic() + 60
        while not job.store.blocks_done("ingest").all() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ahead.stop() == n
    np.testing.assert_array_equal(job.store.array("L")[:], gray)
    graph = submit_image(client1, job.info, job.store, settings, lambda b: b[:, :1].repeat(2, 1))
    assert graph.ingests == [] and len(graph.maps) == n
    client1.gather(graph.futures)
    assert job.store.blocks_done("reduce").all()


def test_preingest_stops_between_blocks_and_leaves_no_half_block(tmp_path):
    from tilecolor.batch.preingest import Preingest

    job, settings, gray = _tiff_job(tmp_path, shape=(1280, 1280))  # 400 blocks
    with Preingest([job], settings) as ahead:
        time.sleep(0.05)
    count = ahead.stop()  # idempotent
    done = job.store.blocks_done("ingest")
    assert int(done.sum()) == count < done.size
    plan = settings.plan(*gray.shape)
    L = job.store.array("L")[:]
    for r, c in np.argwhere(done):
        ys, xs = plan.rows[r], plan.cols[c]
        np.testing.assert_array_equal(L[ys.start : ys.stop, xs.start : xs.stop],
                                      gray[ys.start : ys.stop, xs.start : xs.stop])


def test_preingest_leaves_a_bad_file_to_its_task(tmp_path):
    """A TIFF that cannot be read just ends the driver's ingest of that image quietly (the
    ingest task meets the same error and reports it as one line); the next image is still
    ingested."""
    from tilecolor.batch.preingest import Preingest

    bad, settings, _ = _tiff_job(tmp_path / "a")
    raw = bad.src.read_bytes()
    bad.src.write_bytes(raw[: len(raw) // 2])  # tiles past the middle are cut off
    good, _, gray = _tiff_job(tmp_path / "b")
    with Preingest([bad, good], settings) as ahead:
        deadline = time.monotonic() + 60
        while not good.store.blocks_done("ingest").all() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert ahead.stop() >= good.store.blocks_done("ingest").size
    assert not bad.store.blocks_done("ingest").all()
    np.testing.assert_array_equal(good.store.array("L")[:], gray)


def _refault_count(times: int = 20) -> int:
    """Minor page faults of this thread while a 48 MiB torch buffer (the size of a batch's
    larger activations) is freed and allocated again ``times`` times."""
    import resource

    import torch

    torch.ones(12 << 20).sum()
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(times):
        torch.ones(12 << 20).sum()
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux")
                    or os.confstr("CS_GNU_LIBC_VERSION") is None, reason="glibc malloc")
def test_embedded_workers_reuse_freed_buffers_without_page_faults():
    """The embedded cluster's workers keep freed memory (forkserver.WORKER_MALLOC): a freed
    buffer is not page-faulted in afresh by the next batch, as it is with glibc's defaults."""
    from tilecolor.cluster.client import connect
    from tilecolor.cluster.config import ClusterConfig
    from tilecolor.cluster.forkserver import WORKER_MALLOC

    before = {k: os.environ.get(k) for k in WORKER_MALLOC}
    default_env = {k: v for k, v in os.environ.items() if k not in WORKER_MALLOC}
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from test_production import _refault_count; print(_refault_count())")
    plain = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__)],
                           env=default_env, capture_output=True, text=True, check=True)
    plain = int(plain.stdout)
    assert plain > 20 * 3_000  # glibc's defaults: thousands for every one of the 20 buffers
    with connect(ClusterConfig(workers=1, dashboard_address="127.0.0.1:0")) as client:
        # kept: at most the first few buffers' pages (12k each) are faulted in
        assert client.submit(_refault_count, pure=False).result() < plain // 3
        env = client.run(lambda: {k: os.environ.get(k) for k in WORKER_MALLOC})
        assert list(env.values()) == [WORKER_MALLOC], env
    assert {k: os.environ.get(k) for k in WORKER_MALLOC} == before  # the driver's own: as was


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice")
def test_work_ahead_runs_at_the_lowest_priority_in_its_own_thread_only():
    """The driver's ingest ahead of the cluster yields the cores to the critical path (the
    forkserver's imports): its thread runs at nice 19, the rest of the driver unchanged."""
    import threading

    from tilecolor.batch.preingest import _lowest_priority

    seen, release = [], threading.Event()

    def body():
        _lowest_priority()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        release.wait(10)

    mine = os.getpriority(os.PRIO_PROCESS, 0)
    worker = threading.Thread(target=body)
    worker.start()
    while not seen:
        time.sleep(0.01)
    assert seen == [19] == [os.getpriority(os.PRIO_PROCESS, worker.native_id)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
    release.set()
    worker.join()
