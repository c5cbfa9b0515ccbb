"""What the benchmarks that drive the command line share: the machine they ran on, and one `python -m vlmsweep -m ...`.

The multirun runs this checkout's vlmsweep (its root first on PYTHONPATH), whichever copy is installed: a benchmark
measures the code beside it, its conf/ included.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str | int | None]:
    """CPU model, cores, torch and Python versions (torch's from its metadata: no import)."""
    try:
        torch = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch = None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch, "python": platform.python_version()}


def machine_line(m: dict) -> str:
    return f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, python {m['python']}"


def has_runs(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*/metrics.json"))


def cli_env() -> dict[str, str]:
    """The environment of a `python -m vlmsweep...` subprocess: offline, this checkout first on PYTHONPATH."""
    return {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


def run_multirun(out: Path, sweep: list[str], extra: Sequence[str] = ()) -> float:
    """`python -m vlmsweep -m SWEEP tracker=none hydra.sweep.dir=OUT EXTRA`, one process, from OUT's parent (a
    temporary folder outside the checkout unless OUT is given inside it); its stdout dropped, its log on stderr.
    Seconds taken."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "vlmsweep", "-m", *sweep, "tracker=none", f"hydra.sweep.dir={out}", *extra]
    print("running:", " ".join(cmd[1:]), flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=out.parent, env=cli_env(), stdout=subprocess.DEVNULL)
    return time.perf_counter() - started
