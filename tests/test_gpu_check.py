"""benchmarks/gpu_check.py on the CPU: its dry run composes every row it measures on a GPU, its plan lists what a
fresh GPU machine needs within one call's 64 MiB, and its drawn pages are a manifest the run reads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import gpu_check  # noqa: E402 - a script beside the others


def test_the_dry_run_composes_exp1_to_exp4_with_the_default_loss_and_the_prequantized_row(capsys):
    assert gpu_check.main(["--dry-run"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("exp")]
    assert [r[0] for r in rows[1:]] == ["exp1", "exp2", "exp3", "exp4", "exp1-prequantized"]
    assert all(r[1] == "chunked" for r in rows[1:])  # the default loss, not only eager
    assert rows[-1][2:5] == ["qwen2_vl_2b_bnb4", "nf4", "llm"]  # a checkpoint saved in 4-bit, as unsloth's
    assert all(float(r[6]) > 1 for r in rows[1:])  # an estimate per row, to set beside the measured peak


def test_the_plan_lists_each_wheel_with_its_size_and_the_commands(tmp_path, capsys):
    for req, _, _ in gpu_check.PLAN:  # stand-ins of the downloaded wheels: 4 MiB each
        name, version = req.split("==")
        with open(tmp_path / f"{name.replace('-', '_')}-{version}-py3-none-any.whl", "wb") as f:
            f.truncate(4 * 2**20)
    assert gpu_check.plan(tmp_path, download=False) == 0
    out = capsys.readouterr().out
    assert "transformers-5.23.0-py3-none-any.whl" in out and "bitsandbytes-0.50.2" in out and "hydra_core-1.3.2" in out
    assert f"{4 * len(gpu_check.PLAN):.2f}  of 64 MiB: fits" in out
    assert "--only-binary=:all: --python-version 3.12" in out
    assert f"pip install --no-deps --no-index {tmp_path}/*.whl && python benchmarks/gpu_check.py" in out
    with open(tmp_path / "transformers-5.23.0-py3-none-any.whl", "wb") as f:
        f.truncate(20 * 2**20)  # over the limit: said, and the exit status says it
    assert gpu_check.plan(tmp_path, download=False) == 1 and "DOES NOT FIT" in capsys.readouterr().out


def test_the_drawn_pages_are_a_manifest_the_run_reads_and_this_machine_passes_the_preflight(tmp_path):
    from vlmsweep.pipeline.stages import datasets

    manifest = gpu_check.draw_pages(2, tmp_path / "pages")
    args = argparse.Namespace(visual_tokens=1024, steps=2, cache=None, manifest=manifest, prequantized_path=None)
    cfg = gpu_check.compose("exp3", args, tmp_path)
    train = datasets(cfg)["train"]
    assert [r.domain for r in train] == ["prescription_ko", "prescription_zh"] and cfg.train.loss_impl == "chunked"
    assert cfg.model.name == "qwen2_vl_2b_shape" and cfg.eval.enabled is False
    assert gpu_check.preflight() is None  # every module it imports is here, transformers at the floor
