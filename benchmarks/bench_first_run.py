"""The first `python -m vlmsweep` on an empty cache against the second one: wall time and peak resident memory.

    python benchmarks/bench_first_run.py                       # README command 1, twice, from a temporary folder
    python benchmarks/bench_first_run.py data.test_size=16     # the same with overrides

Each run starts from a folder outside the checkout with `VLMSWEEP_CACHE` pointing at a cache that is empty before the
first run (the second finds the model and the synthetic data the first one left). Memory is the peak of the summed
resident sets of the run's process tree (the run and what it starts: W&B's service, the data workers), sampled every
0.1 s, with the processes that made it; and the peak of their summed PSS, which counts shared pages once.
Targets (issue #36): the first run within 1.5x the second's wall time and within 2 GiB. Prints one JSON line per run,
then one with the ratio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from vlmsweep.recipes import warmup


def tree_memory(proc: psutil.Process) -> tuple[int, int, list[tuple[str, int]]]:
    """Summed RSS and PSS of the process and its descendants, and each one's (name, RSS). RSS counts the shared
    libraries once per process (a spawned data worker maps libpython and numpy again); PSS splits them."""
    rss = pss = 0
    parts = []
    for p in [proc, *proc.children(recursive=True)]:
        try:
            full = p.memory_full_info()
            name = " ".join(p.cmdline()[1:3]) or p.name()
        except psutil.Error:  # ended between the listing and the reading
            continue
        rss, pss = rss + full.rss, pss + full.pss
        parts.append((name, full.rss))
    return rss, pss, parts


def measure(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict:
    """Wall seconds and the peak process-tree memory of one `python -m vlmsweep ARGS`, with when the peak came and
    which processes made it."""
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = psutil.Popen([sys.executable, "-m", "vlmsweep", *args], cwd=cwd, env=env, stdout=out,
                            stderr=subprocess.STDOUT)
        peak = peak_pss = 0
        at, parts = 0.0, []
        while proc.poll() is None:
            rss, pss, now = tree_memory(proc)
            if rss > peak:
                peak, at, parts = rss, time.perf_counter() - started, now
            peak_pss = max(peak_pss, pss)
            time.sleep(0.1)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"python -m vlmsweep {' '.join(args)} exited {proc.returncode}: see {log}")
    text = log.read_text(encoding="utf-8")
    assembled = [line for line in text.splitlines() if "assembled the shipped warmed model" in line]
    return {"wall_s": round(wall, 1), "peak_rss_gib": round(peak / 2**30, 3), "peak_pss_gib": round(peak_pss / 2**30, 3),
            "peak_at_s": round(at, 1), "peak_processes": [(n, round(r / 2**20)) for n, r in parts],
            "assembly": assembled[0].split(" in ")[-1] if assembled else "",
            "outputs": next((line.split("outputs in ", 1)[1].split("  (")[0] for line in text.splitlines()
                             if line.startswith("vlmsweep: outputs in ")), "")}


def main() -> None:
    args = sys.argv[1:]
    root = Path(tempfile.mkdtemp(prefix="vlmsweep-first-run-"))
    env = dict(os.environ, VLMSWEEP_CACHE=str(root / "cache"), HF_HUB_OFFLINE="1", WANDB_MODE="offline",
               WANDB_SILENT="true")
    (root / "work").mkdir()
    machine = f"{warmup.machine()}, load average {os.getloadavg()[0]:.1f} at the start"
    runs = {}
    for name in ("first", "second"):
        runs[name] = measure(args, root / "work", env, root / f"{name}.log")
        print(json.dumps({"run": name, **runs[name]}), flush=True)
    print(json.dumps({"first_over_second": round(runs["first"]["wall_s"] / runs["second"]["wall_s"], 2),
                      "machine": machine, "folder": str(root)}))


if __name__ == "__main__":
    main()
