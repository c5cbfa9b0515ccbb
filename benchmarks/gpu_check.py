"""GPU check: exp1..exp4 on the real Qwen2-VL-2B shape (random weights): measured peak memory and speed vs the estimate,
for each training loss (train.loss_impl), and the CUDA losses' equality with eager.

    python benchmarks/gpu_check.py                 # on a CUDA machine, no network: ~10 min, writes the table
    python benchmarks/gpu_check.py --dry-run       # anywhere: compose the configs, print the estimates
    python benchmarks/gpu_check.py --loss-impls eager,cce --experiments exp3,exp4 --steps 10
    python benchmarks/gpu_check.py --equality-only # the loss equality check alone (a minute)

The losses: eager (the reference: logits of every supervised token), liger (Liger-Kernel) and cce (Cut
Cross-Entropy); chunked (pure torch) can be added. liger and cce need their packages (pip install
'vlmsweep[liger,cce]'; on a machine without network, their wheels with --no-deps); one that cannot run here is a
"skipped" row with the reason. First, the equality check: on the embedded tiny replica in float32 on the GPU, the
loss and every LoRA gradient of each loss against eager, max absolute difference, target 1e-5 (Triton kernels may
multiply float32 in TF32: a miss is printed, not hidden).

Each experiment runs the project's own path (vlmsweep.run: model load with its quantization, LoRA on its
scope, the Trainer with gradient checkpointing) for a few steps on synthetic prescriptions at a realistic
budget (1024 visual tokens, batch 1) with each loss, then evaluation is skipped. exp1/exp2 quantize the random bf16
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
LOSS_IMPLS = ("eager", "chunked", "liger", "cce")
EQUALITY_TOLERANCE = 1e-5  # float32, as tests/test_loss.py asserts for chunked on the CPU


def overrides(exp: str, args: argparse.Namespace, loss_impl: str = "eager") -> list[str]:
    """exp1..exp4 with the local shape model in place of the hub checkpoint, a few steps, no evaluation."""
    return [
        f"+experiment={exp}",
        f"train.loss_impl={loss_impl}",
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
    if (REPO / "conf" / "max_pixels" / f"{visual_tokens}tok.yaml").exists():
        return f"max_pixels={visual_tokens}tok"
    return f"max_pixels.visual_tokens={visual_tokens}"


def compose(exp: str, args: argparse.Namespace, output_dir: Path, loss_impl: str = "eager"):
    """The typed Config exactly as `python -m vlmsweep OVERRIDES` builds it (as tests/conftest.py compose)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    from vlmsweep.config import register_configs, to_config
    from vlmsweep.sweeps import register_resolvers

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=[o for o in overrides(exp, args, loss_impl) if o], return_hydra_config=True)
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/") and v is not None}
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.output_dir = str(output_dir / f"{exp}-{loss_impl}")
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

    shape = memory.preset_configs()["shape"]
    print(f"{'exp':<5} {'loss':<8} {'model':<18} {'quant':<6} {'scope':<6} {'logits GiB':>10} {'estimate GiB':>12} "
          f"{'generic GiB':>11} {'plan GB':>7}")
    for exp in args.experiments:
        for impl in args.loss_impls:
            generic = memory.experiment_estimates(visual_tokens=args.visual_tokens, loss_impl=impl)
            cfg = compose(exp, args, Path(args.out), impl)
            est = memory.estimate_from_config(cfg, shape, text_tokens=args.text_tokens, supervised_tokens=args.text_tokens // 2)
            print(f"{exp:<5} {impl:<8} {cfg.model.name:<18} {cfg.quant.name:<6} {cfg.scope.name:<6} "
                  f"{est.logits_bytes / GiB:>10.2f} {est.total_bytes / GiB:>12.2f} {generic[exp].total_bytes / GiB:>11.2f} "
                  f"{memory.EXPERIMENTS[exp][2]:>7}")
    print(f"(dry run: {args.text_tokens} text tokens assumed; the GPU run measures the real samples. Nothing measured.)")
    return 0


def loss_equality(impls: list[str], cache: str | None) -> list[dict]:
    """Loss and LoRA gradients of each implementation against eager: the embedded tiny replica, float32, on CUDA,
    a batch of two rendered pages (the same check as tests/test_loss.py runs for chunked on the CPU)."""
    import os

    import torch
    from PIL import Image, ImageDraw
    from transformers import AutoProcessor

    from vlmsweep.config import LoraConfig, ModelConfig, QuantConfig, ScopeConfig
    from vlmsweep.data import Record
    from vlmsweep.model.load import attach_lora, load_base_model
    from vlmsweep.model.tiny import ensure_tiny_model
    from vlmsweep.train.collator import Collator
    from vlmsweep.train.loss import OutputLayerLoss, loss_impl_error

    path = ensure_tiny_model(os.path.expanduser(cache or os.environ.get("VLMSWEEP_CACHE", "~/.cache/vlmsweep")))
    processor = AutoProcessor.from_pretrained(path)
    records = []
    folder = Path(os.path.expanduser("~/.cache/vlmsweep-gpu-check"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        image = Image.new("RGB", (224, 224), "white")
        ImageDraw.Draw(image).text((10, 10), f"ID 1234{i}", fill="black")
        image.save(folder / f"{i}.png")
        records.append(Record(id=str(i), image=folder / f"{i}.png", domain="prescription_ko",
                              target={"patient_id": f"1234{i}", "patient_name": "홍길동" * (i + 1)},
                              image_domain="prescription_ko"))
    batch = Collator(processor, False, True, 4 * 784, 64 * 784, 1024)(records)
    batch = {k: v.cuda() for k, v in batch.items()}
    base = load_base_model(ModelConfig(name="tiny"), QuantConfig(name="fp32"), str(path)).cuda()
    model = attach_lora(base, ScopeConfig(name="llm", parts=["llm"]), LoraConfig(r=4, alpha=8, dropout=0.0), seed=0)
    with torch.no_grad():  # LoRA B starts at zero: move it so that every LoRA matrix gets a gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)

    def loss_and_grads(impl: str):
        fn = OutputLayerLoss(impl, 16)
        model.zero_grad(set_to_none=True)
        with fn.attached(model):
            loss = fn(model(**{k: v for k, v in batch.items() if k != "labels"}), batch["labels"])
        loss.backward()
        return loss.item(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    ref_loss, ref_grads = loss_and_grads("eager")
    rows = []
    for impl in impls:
        if impl == "eager":
            continue
        if (problem := loss_impl_error(impl)) is not None:
            rows.append({"impl": impl, "skipped": problem})
            continue
        loss, grads = loss_and_grads(impl)
        grad_diff = max((grads[k] - ref_grads[k]).abs().max().item() for k in ref_grads)
        loss_diff = abs(loss - ref_loss)
        rows.append({"impl": impl, "loss_eager": ref_loss, "loss": loss, "loss_abs_diff": loss_diff,
                     "grad_max_abs_diff": grad_diff, "grad_max_abs": max(g.abs().max().item() for g in ref_grads.values()),
                     "within_tolerance": loss_diff < EQUALITY_TOLERANCE and grad_diff < EQUALITY_TOLERANCE})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def measure(exp: str, loss_impl: str, args: argparse.Namespace, out: Path) -> dict:
    import torch
    from transformers import set_seed

    from vlmsweep import memory
    from vlmsweep import stages as vrun
    from vlmsweep.model import load as model_load

    cfg = compose(exp, args, out, loss_impl)
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
    generic = memory.experiment_estimates(visual_tokens=args.visual_tokens, loss_impl=loss_impl)[exp].total_bytes
    row = {
        "exp": exp,
        "loss_impl": loss_impl,
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
        "estimate_logits_gib": estimate.get("memory.estimate.logits_bytes", float("nan")) / GiB,
        "generic_estimate_gib": generic / GiB,
        "plan_gb": memory.EXPERIMENTS[exp][2],
        "train_loss": train_metrics.get("train.loss"),
        "seconds_total": time.perf_counter() - started,
    }
    del model, base
    gc.collect()
    torch.cuda.empty_cache()
    return row


def write_table(rows: list[dict], equality: list[dict], out: Path, device: str) -> str:
    lines = [f"# GPU check: Qwen2-VL-2B shape, batch 1, gradient checkpointing ({device})", ""]
    if equality:
        lines += [f"Loss equality with eager (embedded tiny replica, float32, LoRA r=4 on the LLM; target "
                  f"{EQUALITY_TOLERANCE:g}):", "", "| loss | loss abs diff | LoRA grad max abs diff | max abs grad | within |",
                  "|---|---|---|---|---|"]
        for r in equality:
            if "skipped" in r:
                lines.append(f"| {r['impl']} | skipped: {r['skipped']} | | | |")
            else:
                lines.append(f"| {r['impl']} | {r['loss_abs_diff']:.2e} | {r['grad_max_abs_diff']:.2e} | "
                             f"{r['grad_max_abs']:.2e} | {'yes' if r['within_tolerance'] else 'NO'} |")
        lines.append("")
    header = ("| exp | loss | quant | scope | visual tok | tokens/sample | step s | tokens/s | peak GiB (measured) "
              "| estimate GiB | est. logits GiB | generic est. GiB | plan GB |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        if "error" in r or "skipped" in r:
            why = f"failed: {r['error']}" if "error" in r else f"skipped: {r['skipped']}"
            lines.append(f"| {r['exp']} | {r['loss_impl']} | {why} |")
            continue
        lines.append(
            f"| {r['exp']} | {r['loss_impl']} | {r['quant']} | {r['scope']} | {r['visual_tokens_per_image']:.0f} "
            f"| {r['tokens_per_sample']:.0f} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | {r['peak_gib']:.2f} "
            f"| {r['estimate_gib']:.2f} | {r['estimate_logits_gib']:.2f} | {r['generic_estimate_gib']:.2f} | ~{r['plan_gb']} |"
        )
    lines += ["", "peak: torch.cuda.max_memory_allocated() over load + training (CUDA context and allocator "
              "reserve not included). step s: median over steps 2..N. estimate: vlmsweep.memory for this run's "
              "samples and loss; generic: experiment_estimates (1024 visual + 300 text tokens)."]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.md").write_text(text, encoding="utf-8")
    (out / "gpu_check.json").write_text(json.dumps({"device": device, "equality": equality, "rows": rows}, indent=2) + "\n",
                                        encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per experiment (batch 1)")
    ap.add_argument("--visual-tokens", type=int, default=1024, help="max visual tokens per image (28x28 px each)")
    ap.add_argument("--text-tokens", type=int, default=600, help="--dry-run only: prompt + answer tokens assumed")
    ap.add_argument("--experiments", type=lambda s: s.split(","), default=list(EXPERIMENTS), help="e.g. exp1,exp3")
    ap.add_argument("--loss-impls", type=lambda s: s.split(","), default=["eager", "liger", "cce"],
                    help="train.loss_impl values to measure, e.g. eager,chunked,liger,cce")
    ap.add_argument("--equality-only", action="store_true", help="run the loss equality check only")
    ap.add_argument("--cache", default=None, help="cache folder for the shape model and data (default: cache_dir)")
    ap.add_argument("--out", default="outputs/gpu_check", help="where gpu_check.md / .json go")
    ap.add_argument("--dry-run", action="store_true", help="compose the configs and print the estimates only")
    args = ap.parse_args(argv)
    unknown = [e for e in args.experiments if e not in EXPERIMENTS]
    if unknown:
        ap.error(f"--experiments: unknown {unknown}; choose from {','.join(EXPERIMENTS)}")
    unknown = [i for i in args.loss_impls if i not in LOSS_IMPLS]
    if unknown:
        ap.error(f"--loss-impls: unknown {unknown}; choose from {','.join(LOSS_IMPLS)}")
    if args.dry_run:
        return dry_run(args)

    import torch

    if not torch.cuda.is_available():
        print("no GPU: nothing measured (run with --dry-run for the estimates)")
        return 0
    from vlmsweep.train.loss import loss_impl_error

    device = f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    out = Path(args.out)
    print("== loss equality with eager", flush=True)
    equality = loss_equality(args.loss_impls, args.cache)
    rows = []
    for exp in [] if args.equality_only else args.experiments:
        for impl in args.loss_impls:
            print(f"== {exp} train.loss_impl={impl}", flush=True)
            if (problem := loss_impl_error(impl)) is not None:
                rows.append({"exp": exp, "loss_impl": impl, "skipped": problem})
            else:
                try:
                    rows.append(measure(exp, impl, args, out))
                except Exception as err:  # noqa: BLE001 - one failing experiment (OOM, bnb) must not hide the others
                    import traceback

                    traceback.print_exc()
                    rows.append({"exp": exp, "loss_impl": impl,
                                 "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"})
                    gc.collect()
                    torch.cuda.empty_cache()
            print(json.dumps(rows[-1], default=str), flush=True)
    print(write_table(rows, equality, out, device))
    missed = any("error" in r for r in rows) or any(not r.get("within_tolerance", True) for r in equality)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
