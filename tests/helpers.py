"""Running `python -m vlmsweep` the way a user does, in a subprocess, for end-to-end tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Few steps, few samples, short answers: a whole run in seconds on 2 CPU cores.
TINY_RUN = [
    "train.max_steps=1",
    "train.batch_size=2",
    "train.logging_steps=1",
    "data.train_size=2",
    "data.test_size=2",
    "data.mining_size=2",
    "data.regression_size=2",
    "eval.batch_size=2",
    "eval.max_new_tokens=16",
    "tracker=none",
    "lora.dropout=0.0",
]


def vlmsweep(*args: str, cwd: Path, timeout: float = 300, check: bool = True, module: str = "vlmsweep",
             launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "1"}
    cmd = (launcher or [sys.executable, "-m"]) + [module, *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
