"""One training step of the embedded model in float32 and in (emulated or native) bfloat16 on this CPU.

    python benchmarks/bench_cpu_dtype.py

Runs `python -m vlmsweep quant=fp32 ...` and `python -m vlmsweep quant=bf16 quant.cpu_bf16=keep ...` (one step,
batch 2, no evaluation) and prints the Trainer's train_runtime of each, with whether oneDNN reports native bf16.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import torch

STEP = ["train.max_steps=1", "train.batch_size=2", "data.train_size=2", "eval.enabled=false", "tracker=none"]


def runtime(quant: list[str], out: str) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    proc = subprocess.run([sys.executable, "-m", "vlmsweep", *quant, *STEP, f"hydra.run.dir={out}"], env=env,
                          capture_output=True, text=True, check=True)
    return float(re.search(r"'train_runtime': '([0-9.]+)'", proc.stdout + proc.stderr).group(1))


def main() -> None:
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    with tempfile.TemporaryDirectory() as d:
        fp32 = runtime(["quant=fp32"], f"{d}/fp32")
        bf16 = runtime(["quant=bf16", "quant.cpu_bf16=keep"], f"{d}/bf16")
    print(f"CPU {torch.backends.cpu.get_cpu_capability()}, native bf16: {native}; one training step: "
          f"float32 {fp32:.1f} s, bfloat16 {bf16:.1f} s ({bf16 / fp32:.1f}x)")


if __name__ == "__main__":
    main()
