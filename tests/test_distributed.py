"""Data-parallel training: 2 processes (gloo, CPU) write one run folder and match a 1-process run."""

from __future__ import annotations

import socket
import sys

import pytest
import torch

from helpers import TINY_RUN, read_json, vlmsweep

# Every step sees the whole 4-sample training set (global batch 4), LoRA dropout is off, so one
# process with batch 4 and two with batch 2 take the same optimizer steps up to float error.
SAME = [o for o in TINY_RUN if not o.startswith(("train.batch_size", "data.train_size", "train.max_steps"))]
SAME += ["data.train_size=4", "train.max_steps=2", "quant=fp32"]  # bf16 on the CPU adds rounding noise


@pytest.mark.slow
def test_two_process_run_matches_one_process_with_the_same_global_batch(tmp_path):
    one = tmp_path / "one"
    vlmsweep(*SAME, "train.batch_size=4", f"hydra.run.dir={one}", cwd=tmp_path)
    two = tmp_path / "two"
    with socket.socket() as probe:  # a port free now, not a fixed one another job on the machine may hold
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", "-m"]
    proc = vlmsweep(*SAME, "train.batch_size=2", f"hydra.run.dir={two}", cwd=tmp_path, launcher=torchrun)
    assert proc.stdout.count("outputs in") == 1  # only rank 0 reports
    info = read_json(two / "run_info.json")
    assert info["status"] == "ok" and info["world_size"] == 2
    # Same optimizer steps -> same adapter weights (float-reduction order is the only difference).
    from safetensors.torch import load_file

    wa, wb = load_file(one / "adapter" / "adapter_model.safetensors"), load_file(two / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and len(wa) > 0
    for name in wa:
        diff = float((wa[name] - wb[name]).abs().max())
        assert diff < 1e-4, (name, diff)
    assert any(float(wa[n].abs().max()) > 0 for n in wa if "lora_B" in n)  # training moved B
    a, b = read_json(one / "metrics.json"), read_json(two / "metrics.json")
    # train.loss is logged per rank by the Trainer, so it is not compared; the evaluation is.
    for key in ("contract.strict_parse_rate", "text.raw_cer", "rate.repetition_loop"):
        assert b[key] == pytest.approx(a[key], abs=1e-6), key
    samples = (two / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 2  # evaluated once, on rank 0
