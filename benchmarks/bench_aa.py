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
from pathlib import Path

from multirun import cli_env, cpu_name, has_runs, run_multirun  # benchmarks/multirun.py, beside this script


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--test-size", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None, help="multirun folder (reused when it holds runs)")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    out = (a.out or Path(tempfile.mkdtemp(prefix="vlmsweep-aa-")) / "multirun").resolve()
    if not has_runs(out):
        seconds = run_multirun(out, [f"seed=range({a.seeds})", f"data.test_size={a.test_size}"], a.overrides)
        print(f"{a.seeds} runs in {seconds:.0f} s", flush=True)
    subprocess.run([sys.executable, "-m", "vlmsweep.report.calibrate", str(out)], check=True, env=cli_env())
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
