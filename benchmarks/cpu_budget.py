"""Where the cores' time goes in one `tilecolor run`: a table of core-seconds by process
and by kind of work, from per-process CPU times sampled while the command runs.

    python benchmarks/cpu_budget.py -- --input DIR --output OUT --stride 256 --blend uniform

Everything after ``--`` goes to `tilecolor run` (``-q`` is added). The generator's share
comes from the run report (``generator_cpu_seconds``: the thread CPU time of the generator
calls), the rest from psutil: each process's user + system time, last sampled value (the
sampler polls every ``--poll`` seconds, so a process's last fraction of a poll is missed).
"idle" is what the cores had and no process of the run used (other processes on the
machine, kernel threads writing files back, or nothing); "machine idle" is what
``/proc/stat`` counted as idle over the same wall time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from benchmark import done_images  # noqa: E402


def role(proc: psutil.Process, driver: int) -> str:
    if proc.pid == driver:
        return "driver (scheduler, client, writer, dashboard)"
    cmd = " ".join(proc.cmdline())
    if "forkserver import main" in cmd:  # the server, and the workers forked from it
        return ("forkserver (imports the workers' stack once)" if proc.ppid() == driver
                else "worker processes")
    if "resource_tracker" in cmd:
        return "resource tracker"
    return "worker processes"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--poll", type=float, default=0.2)
    ap.add_argument("run_args", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    run_args = [a for a in args.run_args if a != "--"]
    if "--output" not in run_args[:-1]:
        ap.error("give the run's --output OUT after -- (its report is read from there)")
    out = Path(run_args[run_args.index("--output") + 1])
    cores = len(psutil.Process().cpu_affinity())

    idle0 = psutil.cpu_times().idle
    t0 = time.perf_counter()
    # stderr to a file: a pipe nobody reads while the run goes would block it once full
    errors = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-m", "tilecolor", "run", *run_args, "-q"],
                            stderr=errors, text=True)
    top = psutil.Process(proc.pid)
    cpu: dict[int, float] = {}
    roles: dict[int, str] = {}
    while proc.poll() is None:
        try:
            procs = [top, *top.children(recursive=True)]
        except psutil.Error:
            procs = []
        for p in procs:
            try:
                times = p.cpu_times()
                cpu[p.pid] = times.user + times.system
                if p.pid not in roles:
                    roles[p.pid] = role(p, proc.pid)
            except psutil.Error:
                pass
        time.sleep(args.poll)
    wall = time.perf_counter() - t0
    machine_idle = psutil.cpu_times().idle - idle0
    if proc.returncode:
        errors.seek(0)
        sys.exit(f"tilecolor run failed ({proc.returncode}): {errors.read()[-2000:]}")

    done = done_images(out / ".tilecolor" / "reports")
    generator = sum(i["generator_cpu_seconds"] for i in done)
    by_role: dict[str, float] = {}
    for pid, seconds in cpu.items():
        by_role[roles[pid]] = by_role.get(roles[pid], 0.0) + seconds
    workers = by_role.pop("worker processes", 0.0)
    capacity = cores * wall
    rows = [("generator calls (in the workers)", generator),
            ("workers, besides the generator", workers - generator),
            *sorted(by_role.items(), key=lambda kv: -kv[1]),
            ("idle (no process of the run)", capacity - sum(cpu.values()))]
    print(f"whole command {wall:.1f} s on {cores} cores = {capacity:.1f} core-s; "
          f"in-cluster {sum(i['seconds'] for i in done):.1f} s; "
          f"machine idle {machine_idle:.1f} core-s\n")
    print("| where | core-s | share |\n|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {100 * seconds / capacity:.1f} % |")
    print(f"\ngenerator core-s / {cores} = {generator / cores:.1f} s: the whole command's "
          f"time if nothing else ran ({generator / cores / wall:.3f} of its wall time)")


if __name__ == "__main__":
    main()
