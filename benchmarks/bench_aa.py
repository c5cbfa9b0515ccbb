"""A/A calibration of the report's intervals on the embedded defaults: K seeds of one config, then the A/A command.

    python benchmarks/bench_aa.py [--seeds 12] [--test-size 64] [--out DIR] [OVERRIDES...]

Trains and evaluates the default run under seeds 0..K-1 (`python -m vlmsweep -m seed=range(K)`, one process, from a
temporary folder outside the checkout), then runs `python -m vlmsweep.report.calibrate` on that multirun: the
false-positive rate of the report's 95% intervals over many splits of the runs into arms (2 arms of K/2 seeds, and
a 2x2 of K/4 seeds per cell when K >= 8), the median half-width and the minimum detectable effect per metric, and
the seed spread of each metric. With --out DIR an existing multirun there is reused (no training).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--test-size", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None, help="multirun folder (reused when it holds runs)")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    out = (a.out or Path(tempfile.mkdtemp(prefix="vlmsweep-aa-")) / "multirun").resolve()
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    if not (out.is_dir() and any(out.glob("*/metrics.json"))):
        started = time.perf_counter()
        cmd = [sys.executable, "-m", "vlmsweep", "-m", f"seed=range({a.seeds})", f"data.test_size={a.test_size}",
               "tracker=none", f"hydra.sweep.dir={out}", *a.overrides]
        print("running:", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, cwd=out.parent if out.parent.exists() else None, env=env,
                       stdout=subprocess.DEVNULL)
        print(f"{a.seeds} runs in {time.perf_counter() - started:.0f} s", flush=True)
    subprocess.run([sys.executable, "-m", "vlmsweep.report.calibrate", str(out)], check=True, env=env)
    cal = json.loads((out / "calibration.json").read_text())
    spread = {}
    for run in sorted(out.glob("*/metrics.json")):
        for k, v in json.loads(run.read_text()).items():
            if k in ("contract.strict_parse_rate", "content.e2e_field_em", "content.digit_acc"):
                spread.setdefault(k, []).append(v)
    for k, values in spread.items():
        print(f"seed spread of {k}: {min(values):.3f} .. {max(values):.3f} over {len(values)} seeds")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"A/A false-positive rate at nominal 0.05: {cal['fpr']:.3f} overall; "
          + "; ".join(f"{d} {v:.3f}" for d, v in cal["fpr_by_design"].items()))


if __name__ == "__main__":
    main()
