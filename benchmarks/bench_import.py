"""What a command-line run pays before any work: the CPU and wall time of importing vlmsweep's run path,
and of peft alone, each in a fresh interpreter (the OS file cache warm after the first of `--repeats`).

    python benchmarks/bench_import.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import subprocess
import sys
import time

MODULES = ("vlmsweep.run", "peft", "torch, transformers")


def once(module: str) -> tuple[float, float]:
    """(wall s, CPU s) of `python -c "import MODULE"` in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"# {platform.machine()} {platform.processor()}, Python {platform.python_version()}")
    for module in MODULES:
        runs = [once(module) for _ in range(args.repeats)]
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        print(f"import {module}: CPU median {statistics.median(cpus):.1f} s (range {min(cpus):.1f}-{max(cpus):.1f}), "
              f"wall median {statistics.median(walls):.1f} s")


if __name__ == "__main__":
    main()
