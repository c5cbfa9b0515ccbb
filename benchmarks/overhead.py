"""Framework overhead: a whole `vlmsweep` training run vs a plain transformers Trainer script doing the same work.

    python benchmarks/overhead.py                       # tiny model, CPU: ~10 min on 2 busy cores
    python benchmarks/overhead.py --steps 12 --repeats 5 --batch-size 4

Both sides do one whole run from the same manifest of rendered images (the same files, read from disk, at the
same visual-token budget), with the same model, LoRA, seed, batch, steps, learning rate and scheduler, and both
save the adapter; timed from start to end (processor and model load included):
  vlmsweep     vlmsweep.run.run(cfg) with data.train_manifest and eval.enabled=false: config + run_info files,
               manifest validation, model load, the memory estimate, LoRA, its length check (it pre-encodes every
               sample once), the project's collator and loss, its log callback and peak-memory sampler, the adapter.
  plain        what a user writes: read the manifest, load, LoRA, Trainer + a collator that opens each image and
               calls processor.apply_chat_template on the batch, masks labels outside the assistant span; the model
               computes logits everywhere; save the adapter.
  plain_keep   the same script with the one trick vlmsweep uses (logits only where a label is supervised,
               `logits_to_keep` + cross-entropy over those positions): same work per step as vlmsweep, so
               vlmsweep / plain_keep is the framework's own overhead; vlmsweep / plain includes the trick's gain.
Repeated --repeats times, interleaved with the order rotating every repetition (machine noise hits all alike);
printed: each variant's median seconds with its range, and the ratios of medians with a 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
IGNORE = -100


def compose(overrides: list[str], output_dir: Path):
    """The typed Config exactly as `python -m vlmsweep OVERRIDES` builds it."""
    from vlmsweep.config.compose import compose as package_compose

    return package_compose(overrides, output_dir)


# ----------------------------------------------------------------------------- the plain script


def plain_model(path: Path, dtype: torch.dtype, seed: int):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2VLForConditionalGeneration

    model = Qwen2VLForConditionalGeneration.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    torch.manual_seed(seed)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                      target_modules=r"^model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)$")
    return get_peft_model(model, lora)


class PlainCollator:
    """apply_chat_template on the batch; labels = input ids on the assistant span, -100 elsewhere."""

    def __init__(self, processor, min_pixels: int, max_pixels: int, keep_logits: bool):
        self.processor, self.keep_logits = processor, keep_logits
        self.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}

    def __call__(self, records):
        from vlmsweep import prompts
        from vlmsweep.train.template import QWEN2_VL_TRAINING_TEMPLATE

        # The release's template has no {% generation %} markers (its assistant mask is all zeros): a user adds
        # them, as vlmsweep's training template does (the rendered text is identical).
        batch = self.processor.apply_chat_template(
            [prompts.messages(r.domain, False, answer=r.target) for r in records], chat_template=QWEN2_VL_TRAINING_TEMPLATE,
            tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt",
            processor_kwargs={"images": [[Image.open(r.image).convert("RGB")] for r in records], "size": self.size,
                              "padding": True},
        )  # fmt: skip
        mask = batch.pop("assistant_masks").bool()
        assert mask.any(dim=1).all(), "a sample with no supervised token: the benchmark would time no training"
        labels = torch.where(mask, batch["input_ids"], IGNORE)
        if not self.keep_logits:
            batch["labels"] = labels  # the model shifts them and computes logits at every position
            return batch
        keep = torch.zeros_like(mask)
        keep[:, :-1] = labels[:, 1:] != IGNORE  # position t predicts token t+1
        batch["logits_to_keep"] = keep
        batch["labels"] = labels[:, 1:][keep[:, :-1]]
        return batch


def kept_logits_loss(outputs, labels, num_items_in_batch=None):
    logits = outputs.logits.float().reshape(-1, outputs.logits.shape[-1])
    loss = torch.nn.functional.cross_entropy(logits, labels.to(logits.device), reduction="sum")
    return loss / (num_items_in_batch if num_items_in_batch is not None else labels.numel())


def run_plain(cfg, path: Path, manifest: Path, keep_logits: bool, out: Path) -> float:
    """The whole plain script, timed from its first line to the saved adapter."""
    from transformers import AutoProcessor, Trainer, TrainingArguments

    from vlmsweep.config import pixel_budget
    from vlmsweep.data import read_manifest
    from vlmsweep.model.quant import torch_dtype

    start = time.perf_counter()
    records = list(read_manifest(manifest))  # a user's own JSONL reader would do the same work
    processor = AutoProcessor.from_pretrained(path)
    # the dtype vlmsweep computes in (float32 for quant=bf16 on a CPU without native bf16: emulated bf16 is ~20x slower)
    model = plain_model(path, torch_dtype(cfg.quant), cfg.seed)
    args = TrainingArguments(
        output_dir=str(out), max_steps=cfg.train.max_steps, per_device_train_batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.lr, lr_scheduler_type=cfg.train.lr_scheduler, logging_steps=cfg.train.logging_steps,
        save_strategy="no", report_to=[], disable_tqdm=True, remove_unused_columns=False, seed=cfg.seed,
        data_seed=cfg.seed, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
    )  # fmt: skip
    collator = PlainCollator(processor, *pixel_budget(cfg), keep_logits)
    trainer = Trainer(model=model, args=args, train_dataset=records, data_collator=collator,
                      compute_loss_func=kept_logits_loss if keep_logits else None)
    trainer.train()
    model.save_pretrained(out / "adapter")
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- vlmsweep


def run_vlmsweep(overrides: list[str], out: Path) -> float:
    """The whole `python -m vlmsweep OVERRIDES` run (in this process), timed from run() to its return."""
    from vlmsweep.run import run

    cfg = compose(overrides, out)
    start = time.perf_counter()
    run(cfg)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repetitions of each variant")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from spread import describe, ratio_of_medians

    from vlmsweep.data import build_split, write_manifest
    from vlmsweep.model.tiny import ensure_tiny_model

    work = Path(tempfile.mkdtemp(prefix="vlmsweep-overhead-"))
    n = args.steps * args.batch_size  # one epoch: each sample once in every variant
    overrides = [f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}", "train.logging_steps=1000",
                 "train.save_steps=0", "train.resume=false", "tracker=none", "eval.enabled=false"]
    cfg = compose(overrides, work / "unused")
    path = ensure_tiny_model(cfg.cache_dir)
    records = build_split("train", n, cfg.data_mix, cfg.data.seed, Path(cfg.cache_dir).expanduser() / "data",
                          noise=cfg.data.noise)
    manifest = work / "data" / "train.jsonl"  # the same image files for every variant, read from disk by each
    write_manifest(records, manifest)
    overrides += [f"data.train_manifest={manifest}"]
    variants = {
        "vlmsweep": lambda i: run_vlmsweep(overrides, work / f"vlmsweep-{i}"),
        "plain": lambda i: run_plain(cfg, path, manifest, False, work / f"plain-{i}"),
        "plain_keep": lambda i: run_plain(cfg, path, manifest, True, work / f"plain_keep-{i}"),
    }
    names = list(variants)
    seconds: dict[str, list[float]] = {k: [] for k in names}
    variants["plain_keep"](-1)  # warm-up: first-call costs (imports, allocator, file cache) hit no measured run
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            seconds[name].append(variants[name](rep))
            print(f"rep {rep} {name:<10} {seconds[name][-1]:.2f} s", flush=True)
    ratios = {  # > 1: vlmsweep takes longer
        "vlmsweep / plain_keep (framework overhead)": ratio_of_medians(seconds["vlmsweep"], seconds["plain_keep"]),
        "vlmsweep / plain (overhead + logits trick)": ratio_of_medians(seconds["vlmsweep"], seconds["plain"]),
    }
    result = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)",
        "load_average": os.getloadavg(),
        "steps": args.steps, "batch_size": args.batch_size, "repeats": args.repeats,
        "seconds": seconds, "ratios_of_median_seconds": ratios,
    }  # fmt: skip
    print(f"\nseconds per whole run (median (range), {args.repeats} interleaved runs; {args.steps} steps, batch "
          f"{args.batch_size}, {result['device']}, load average at the end {result['load_average'][0]:.1f}):")
    for k in names:
        print(f"  {k:<11} {describe(seconds[k])}")
    for label, (r, lo, hi) in ratios.items():
        print(f"{label}: {r:.3f} [95% interval {lo:.3f}–{hi:.3f}]  (time ratio; 1.05 = 5% slower)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
