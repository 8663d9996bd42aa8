"""CPU that tilecolor's embedded cluster spends doing nothing: what its event loops, heartbeats
and monitors take from the generator during a run. Prints a Markdown table.

    python benchmarks/idle_cluster.py [--seconds 30] [--repeat 2]

Each round starts the cluster exactly as `tilecolor run` does (cluster.connect), once with
cluster.LOCAL_HOUSEKEEPING and once with the settings it replaced (order alternated), waits
until the workers are up, then sums the CPU time of every thread of the process tree
(driver: scheduler, nannies, client; the worker processes) over ``--seconds`` of idling.
"""

from __future__ import annotations

import argparse
import time

import psutil

#: the intervals before LOCAL_HOUSEKEEPING's current values (commit 6824239)
PREVIOUS = {
    "distributed.worker.profile.interval": "200ms",
    "distributed.admin.tick.interval": "100ms",
    "distributed.admin.system-monitor.interval": "1s",
    "distributed.worker.memory.monitor-interval": "500ms",
}


def tree_cpu() -> dict[int, float]:
    me = psutil.Process()
    out = {}
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def idle_cpu(housekeeping: dict[str, str], heartbeat: float,
             seconds: float) -> tuple[float, float, float]:
    """(driver, workers, wall) seconds: CPU over ``seconds`` of an idle 2-worker cluster."""
    import tilecolor.cluster.client as cluster
    from tilecolor.cluster.config import ClusterConfig

    saved, saved_heartbeat = dict(cluster.LOCAL_HOUSEKEEPING), cluster.LOCAL_HEARTBEAT
    cluster.LOCAL_HOUSEKEEPING.clear()
    cluster.LOCAL_HOUSEKEEPING.update(housekeeping)
    cluster.LOCAL_HEARTBEAT = heartbeat
    try:
        with cluster.connect(ClusterConfig(workers=2)) as client:
            client.wait_for_workers(2)
            time.sleep(3)  # past start-up
            me = psutil.Process().pid
            a, t0 = tree_cpu(), time.perf_counter()
            time.sleep(seconds)
            b, wall = tree_cpu(), time.perf_counter() - t0
    finally:
        cluster.LOCAL_HOUSEKEEPING.clear()
        cluster.LOCAL_HOUSEKEEPING.update(saved)
        cluster.LOCAL_HEARTBEAT = saved_heartbeat
    driver = b.get(me, 0) - a.get(me, 0)
    workers = sum(v - a[pid] for pid, v in b.items() if pid != me and pid in a)
    return driver, workers, wall


def main() -> None:
    from tilecolor.cluster.client import LOCAL_HEARTBEAT, LOCAL_HOUSEKEEPING

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    current = ", ".join(LOCAL_HOUSEKEEPING.values())
    settings = {"previous (" + ", ".join(PREVIOUS.values()) + ", heartbeat 0.5s)":
                    (PREVIOUS, 0.5),
                f"current but heartbeat 0.5s ({current})": (dict(LOCAL_HOUSEKEEPING), 0.5),
                f"current ({current}, heartbeat {LOCAL_HEARTBEAT:g}s)":
                    (dict(LOCAL_HOUSEKEEPING), LOCAL_HEARTBEAT)}
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in settings}
    for k in range(args.repeat):
        names = list(settings) if k % 2 == 0 else list(settings)[::-1]
        for name in names:
            rows[name].append(idle_cpu(*settings[name], args.seconds))
    cores = len(psutil.Process().cpu_affinity())
    print(f"\nIdle embedded cluster, 2 workers, {args.seconds:.0f} s per round, "
          f"{args.repeat} rounds (profile, tick, system monitor, memory monitor intervals; "
          f"worker heartbeats)\n")
    print("| housekeeping | driver core-s | workers core-s | total core-s | "
          "share of the machine |\n|---|---|---|---|---|")
    for name, runs in rows.items():
        total = [d + w for d, w, _ in runs]
        share = [t / (wall * cores) for t, (_, _, wall) in zip(total, runs, strict=True)]
        print(f"| {name} | {' / '.join(f'{d:.2f}' for d, _, _ in runs)} | "
              f"{' / '.join(f'{w:.2f}' for _, w, _ in runs)} | "
              f"{' / '.join(f'{t:.2f}' for t in total)} | "
              f"{' / '.join(f'{100 * x:.2f} %' for x in share)} |")


if __name__ == "__main__":
    main()
