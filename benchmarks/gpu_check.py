"""GPU check: exp1..exp4 on the real Qwen2-VL-2B shape (random weights): measured peak memory and speed vs the estimate.

    python benchmarks/gpu_check.py                 # on a CUDA machine, no network: ~5 min, writes the table
    python benchmarks/gpu_check.py --dry-run       # anywhere: compose the 4 configs, print the estimates
    python benchmarks/gpu_check.py --steps 10 --visual-tokens 1280 --out outputs/gpu_check

Each experiment runs the project's own path (vlmsweep.run: model load with its quantization, LoRA on its
scope, the Trainer with gradient checkpointing) for a few steps on synthetic prescriptions at a realistic
budget (1024 visual tokens, batch 1), then evaluation is skipped. exp1/exp2 quantize the random bf16
weights to NF4 while loading (the plan's bnb-4bit checkpoint is the same model saved already quantized).
The shape model is written to the cache on first use (~4.4 GB, bf16). Output: gpu_check.md and .json.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GiB = 2**30
EXPERIMENTS = ("exp1", "exp2", "exp3", "exp4")


def overrides(exp: str, args: argparse.Namespace) -> list[str]:
    """exp1..exp4 with the local shape model in place of the hub checkpoint, a few steps, no evaluation."""
    return [
        f"+experiment={exp}",
        "model=qwen2_vl_2b_shape",
        budget_override(args.visual_tokens),
        "data_mix=medical_only",           # prescriptions: the dense documents of the plan
        "train.batch_size=1",
        "train.grad_accum=1",
        "train.grad_checkpointing=true",
        f"train.max_steps={args.steps}",
        "train.logging_steps=1",           # one log per step: the step clock below
        "train.save_steps=0",
        "train.resume=false",
        "train.max_seq_len=4096",
        f"data.train_size={args.steps}",   # one epoch: every sample seen once, token count exact
        "data.test_size=0",
        "data.mining_size=0",
        "data.regression_size=0",
        "eval.enabled=false",
        "tracker=none",
        f"cache_dir={args.cache}" if args.cache else "",
    ]


def budget_override(visual_tokens: int) -> str:
    """A named budget (its name is the label in run_info.json) when one exists, else the number."""
    if (REPO / "vlmsweep" / "conf" / "max_pixels" / f"{visual_tokens}tok.yaml").exists():
        return f"max_pixels={visual_tokens}tok"
    return f"max_pixels.visual_tokens={visual_tokens}"


def compose(exp: str, args: argparse.Namespace, output_dir: Path):
    """The typed Config exactly as `python -m vlmsweep OVERRIDES` builds it (as tests/conftest.py compose)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    from vlmsweep.config import register_configs, to_config
    from vlmsweep.sweeps import register_resolvers

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "vlmsweep" / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=[o for o in overrides(exp, args) if o], return_hydra_config=True)
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/") and v is not None}
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.output_dir = str(output_dir / exp)
    return to_config(cfg, choices)


class StepClock:
    """Stands in for the tracker: the Trainer logs once per step (logging_steps=1), so log times are step ends."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ends: list[float] = []

    def log(self, values: dict, step: int) -> None:
        if "train/loss" in values:
            self.ends.append(time.perf_counter())

    def step_seconds(self) -> list[float]:
        marks = [self.start, *self.ends]
        return [b - a for a, b in zip(marks, marks[1:])]


def dry_run(args: argparse.Namespace) -> int:
    from vlmsweep import memory

    generic = memory.experiment_estimates(visual_tokens=args.visual_tokens)
    shape = memory.preset_configs()["shape"]
    print(f"{'exp':<5} {'model':<18} {'quant':<6} {'scope':<6} {'grad ckpt':<9} {'estimate GiB':>12} {'generic GiB':>11} {'plan GB':>7}")
    for exp in args.experiments:
        cfg = compose(exp, args, Path(args.out))
        est = memory.estimate_from_config(cfg, shape, text_tokens=args.text_tokens, supervised_tokens=args.text_tokens // 2)
        print(f"{exp:<5} {cfg.model.name:<18} {cfg.quant.name:<6} {cfg.scope.name:<6} {str(cfg.train.grad_checkpointing):<9} "
              f"{est.total_bytes / GiB:>12.2f} {generic[exp].total_bytes / GiB:>11.2f} {memory.EXPERIMENTS[exp][2]:>7}")
    print(f"(dry run: {args.text_tokens} text tokens assumed; the GPU run measures the real samples. Nothing measured.)")
    return 0


def measure(exp: str, args: argparse.Namespace, out: Path) -> dict:
    import torch
    from transformers import set_seed

    from vlmsweep import memory
    from vlmsweep import stages as vrun
    from vlmsweep.model import load as model_load

    cfg = compose(exp, args, out)
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    set_seed(cfg.seed)
    base, processor, _ = model_load.load(cfg)
    records = vrun.datasets(cfg)["train"]
    collator = vrun.make_collator(cfg, processor)
    encoded = [collator.encode(r) for r in records]
    tokens = sum(len(e.input_ids) for e in encoded)
    visual = [int((e.input_ids == processor.image_token_id).sum()) for e in encoded]
    estimate = vrun.estimate_stage(cfg, base, processor, records)
    model = vrun.prepare_model(cfg, base, None, trainable=True)
    clock = StepClock()
    info = vrun.RunInfo(cfg, run_dir)
    train_metrics = vrun.train_stage(cfg, model, processor, records, run_dir, clock, info)
    peak = torch.cuda.max_memory_allocated()
    steps = clock.step_seconds()
    steady = steps[1:] or steps  # the first step pays for CUDA kernels' first launch / autotuning
    generic = memory.experiment_estimates(visual_tokens=args.visual_tokens)[exp].total_bytes
    row = {
        "exp": exp,
        "quant": cfg.quant.name,
        "scope": cfg.scope.name,
        "visual_tokens_per_image": statistics.mean(visual),
        "tokens_per_sample": tokens / len(encoded),
        "steps": len(steps),
        "first_step_s": steps[0] if steps else float("nan"),
        "step_s": statistics.median(steady) if steady else float("nan"),
        "tokens_per_s": (tokens / len(encoded)) * cfg.train.batch_size / statistics.median(steady) if steady else float("nan"),
        "peak_gib": peak / GiB,
        "estimate_gib": estimate.get("memory.estimate.total_bytes", float("nan")) / GiB,
        "generic_estimate_gib": generic / GiB,
        "plan_gb": memory.EXPERIMENTS[exp][2],
        "train_loss": train_metrics.get("train.loss"),
        "seconds_total": time.perf_counter() - started,
    }
    del model, base
    gc.collect()
    torch.cuda.empty_cache()
    return row


def write_table(rows: list[dict], out: Path, device: str) -> str:
    header = ("| exp | quant | scope | visual tok | tokens/sample | step s | tokens/s | peak GiB (measured) "
              "| estimate GiB | generic est. GiB | plan GB |")
    lines = [f"# GPU check: Qwen2-VL-2B shape, batch 1, gradient checkpointing ({device})", "", header,
             "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['exp']} | failed: {r['error']} |")
            continue
        lines.append(
            f"| {r['exp']} | {r['quant']} | {r['scope']} | {r['visual_tokens_per_image']:.0f} | {r['tokens_per_sample']:.0f} "
            f"| {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | {r['peak_gib']:.2f} | {r['estimate_gib']:.2f} "
            f"| {r['generic_estimate_gib']:.2f} | ~{r['plan_gb']} |"
        )
    lines += ["", "peak: torch.cuda.max_memory_allocated() over load + training (CUDA context and allocator "
              "reserve not included). step s: median over steps 2..N. estimate: vlmsweep.memory for this run's "
              "samples; generic: experiment_estimates (1024 visual + 300 text tokens)."]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.md").write_text(text, encoding="utf-8")
    (out / "gpu_check.json").write_text(json.dumps({"device": device, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per experiment (batch 1)")
    ap.add_argument("--visual-tokens", type=int, default=1024, help="max visual tokens per image (28x28 px each)")
    ap.add_argument("--text-tokens", type=int, default=600, help="--dry-run only: prompt + answer tokens assumed")
    ap.add_argument("--experiments", type=lambda s: s.split(","), default=list(EXPERIMENTS), help="e.g. exp1,exp3")
    ap.add_argument("--cache", default=None, help="cache folder for the shape model and data (default: cache_dir)")
    ap.add_argument("--out", default="outputs/gpu_check", help="where gpu_check.md / .json go")
    ap.add_argument("--dry-run", action="store_true", help="compose the configs and print the estimates only")
    args = ap.parse_args(argv)
    unknown = [e for e in args.experiments if e not in EXPERIMENTS]
    if unknown:
        ap.error(f"--experiments: unknown {unknown}; choose from {','.join(EXPERIMENTS)}")
    if args.dry_run:
        return dry_run(args)

    import torch

    if not torch.cuda.is_available():
        print("no GPU: nothing measured (run with --dry-run for the estimates)")
        return 0
    device = f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    out = Path(args.out)
    rows = []
    for exp in args.experiments:
        print(f"== {exp}", flush=True)
        try:
            rows.append(measure(exp, args, out))
        except Exception as err:  # noqa: BLE001 - one failing experiment (OOM, bnb) must not hide the others
            import traceback

            traceback.print_exc()
            rows.append({"exp": exp, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"})
            gc.collect()
            torch.cuda.empty_cache()
        print(json.dumps(rows[-1], default=str), flush=True)
    print(write_table(rows, out, device))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
