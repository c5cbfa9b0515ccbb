"""Several runs on one CPU machine at once: torch's default threads against each run's share of the cores.

    python benchmarks/bench_threads.py [--jobs 2] [--test-size 16] [OVERRIDES...]

Starts --jobs copies of the default run (`python -m vlmsweep data.test_size=N tracker=none`, each in its own
folder under a temporary directory outside the checkout) at the same moment, twice: first with torch's default
thread count (every process as many threads as the machine has cores), then with OMP_NUM_THREADS set to
cores // jobs (at least 1), each run's share. Prints, per setting, the wall time until the last run ended and
each run's training (`train_runtime`) and evaluation ("evaluated N samples in S s") seconds from its log, then
the machine. On a 2-core machine two default runs each take about 2.5x longer with default threads than with
one thread each: every process's threads busy-wait for cores the other holds. Sweeps with several workers on
one machine (docs/memory-scaling.md) and any other CPU job beside a run meet the same.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from multirun import cli_env, machine, machine_line  # benchmarks/multirun.py, beside this script

EVALUATED = re.compile(r"evaluated (\d+) samples in ([\d.]+) s")


def figures(log: str) -> dict[str, float | None]:
    """train_runtime and evaluation seconds from a run's log (None where the line is absent)."""
    train = next((float(ast.literal_eval(line)["train_runtime"]) for line in log.splitlines()
                  if line.startswith("{'train_runtime'")), None)
    found = EVALUATED.search(log)
    return {"train_s": train, "eval_s": float(found.group(2)) if found else None}


def concurrent(jobs: int, threads: int | None, folder: Path, overrides: list[str]) -> dict:
    """`jobs` default runs started together; threads None: torch's default, else OMP_NUM_THREADS=threads."""
    env = cli_env() | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "vlmsweep", "tracker=none", f"hydra.run.dir={folder / f'run{i}'}",
                               *overrides], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(jobs)]
    logs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - started
    for i, (p, log) in enumerate(zip(procs, logs)):
        if p.returncode:
            sys.exit(f"run {i} (threads {threads or 'default'}) failed with exit status {p.returncode}:\n{log[-2000:]}")
    return {"threads": threads or "default", "wall_s": round(wall, 1), "runs": [figures(log) for log in logs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2, help="runs started at once")
    ap.add_argument("--test-size", type=int, default=16, help="data.test_size of each run")
    ap.add_argument("overrides", nargs="*", help="more overrides for every run")
    a = ap.parse_args()
    if a.jobs < 2:
        ap.error("--jobs: at least 2 (one run alone has the machine to itself)")
    share = max(1, (os.cpu_count() or 1) // a.jobs)
    overrides = [f"data.test_size={a.test_size}", *a.overrides]
    results = []
    with tempfile.TemporaryDirectory(prefix="vlmsweep-threads-") as tmp:
        for name, threads in (("default", None), ("share", share)):
            folder = Path(tmp) / name
            folder.mkdir()
            results.append(concurrent(a.jobs, threads, folder, overrides))
    for r in results:
        runs = "; ".join(f"train {x['train_s']} s, eval {x['eval_s']} s" for x in r["runs"])
        print(f"{a.jobs} runs at once, threads {r['threads']}: wall {r['wall_s']} s ({runs})")
    print(f"slowdown of default threads: {results[0]['wall_s'] / results[1]['wall_s']:.2f}x wall")
    print(f"machine: {machine_line(machine())}")


if __name__ == "__main__":
    main()
