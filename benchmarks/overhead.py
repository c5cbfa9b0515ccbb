"""Framework overhead: vlmsweep's training steps/s vs a plain transformers Trainer script, same model and data.

    python benchmarks/overhead.py                       # tiny model, CPU: ~2 min
    python benchmarks/overhead.py --steps 20 --repeats 5 --batch-size 4

Target (issue): vlmsweep within 5% of the plain script. Three variants, run interleaved (the order rotates
every repetition, so machine noise hits all alike; medians reported):
  vlmsweep     vlmsweep.run.train_stage: length check, the project's collator and loss, its log callback,
               the peak-memory sampler thread, HF Trainer underneath.
  plain        what a user writes: Trainer + a collator that calls processor.apply_chat_template on the
               batch and masks labels outside the assistant span; the model computes logits everywhere.
  plain_keep   the same script with the one trick vlmsweep uses (logits only where a label is supervised,
               `logits_to_keep` + cross-entropy over those positions): same work per step as vlmsweep, so
               vlmsweep / plain_keep is the framework's own overhead; vlmsweep / plain includes the trick's gain.
Same tiny model (fresh LoRA, same seed, same dtype), same records (vlmsweep.data.build_split), same
batch, steps, learning rate and scheduler; timed: trainer.train() only (model load excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    from vlmsweep.config import register_configs, to_config
    from vlmsweep.sweeps import register_resolvers

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "vlmsweep" / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/") and v is not None}
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.output_dir = str(output_dir)
    return to_config(cfg, choices)


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

        batch = self.processor.apply_chat_template(
            [prompts.messages(r.domain, False, answer=r.target) for r in records],
            tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt",
            processor_kwargs={"images": [[Image.open(r.image).convert("RGB")] for r in records], "size": self.size,
                              "padding": True},
        )  # fmt: skip
        mask = batch.pop("assistant_masks").bool()
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


def run_plain(cfg, path: Path, records, keep_logits: bool, out: Path) -> float:
    from transformers import AutoProcessor, Trainer, TrainingArguments

    from vlmsweep.config import visual_tokens_to_pixels

    processor = AutoProcessor.from_pretrained(path)
    model = plain_model(path, getattr(torch, cfg.quant.dtype), cfg.seed)
    args = TrainingArguments(
        output_dir=str(out), max_steps=cfg.train.max_steps, per_device_train_batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.lr, lr_scheduler_type=cfg.train.lr_scheduler, logging_steps=cfg.train.logging_steps,
        save_strategy="no", report_to=[], disable_tqdm=True, remove_unused_columns=False, seed=cfg.seed,
        data_seed=cfg.seed, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
    )  # fmt: skip
    collator = PlainCollator(processor, visual_tokens_to_pixels(cfg.max_pixels.min_visual_tokens),
                             visual_tokens_to_pixels(cfg.max_pixels.visual_tokens), keep_logits)
    trainer = Trainer(model=model, args=args, train_dataset=records, data_collator=collator,
                      compute_loss_func=kept_logits_loss if keep_logits else None)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- vlmsweep


def run_vlmsweep(cfg, records, out: Path) -> float:
    from transformers import set_seed

    from vlmsweep import stages as vrun
    from vlmsweep import tracking
    from vlmsweep.model import load as model_load

    out.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)
    base, processor, _ = model_load.load(cfg)
    model = vrun.prepare_model(cfg, base, None, trainable=True)
    info = vrun.RunInfo(cfg, out)
    metrics = vrun.train_stage(cfg, model, processor, records, out, tracking.Tracker(), info)
    return metrics["train.seconds"]  # trainer.train() wall time, as for the plain script


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of each variant")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from vlmsweep.data import build_split
    from vlmsweep.model.tiny import ensure_tiny_model

    work = Path(tempfile.mkdtemp(prefix="vlmsweep-overhead-"))
    cfg = compose([f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}", "train.logging_steps=1000",
                   "train.save_steps=0", "train.resume=false", "tracker=none", "eval.enabled=false"], work / "vlmsweep")
    path = ensure_tiny_model(cfg.cache_dir)
    n = args.steps * args.batch_size  # one epoch: each sample once in every variant
    records = build_split("train", n, cfg.data_mix, cfg.data.seed, Path(cfg.cache_dir).expanduser() / "data",
                          noise=cfg.data.noise)
    variants = {
        "vlmsweep": lambda i: run_vlmsweep(cfg, records, work / f"vlmsweep-{i}"),
        "plain": lambda i: run_plain(cfg, path, records, False, work / f"plain-{i}"),
        "plain_keep": lambda i: run_plain(cfg, path, records, True, work / f"plain_keep-{i}"),
    }
    names = list(variants)
    seconds: dict[str, list[float]] = {k: [] for k in names}
    variants["plain_keep"](-1)  # warm-up: first-call costs (imports, allocator, image cache) hit no variant
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            seconds[name].append(variants[name](rep))
            print(f"rep {rep} {name:<10} {args.steps / seconds[name][-1]:.3f} steps/s", flush=True)
    rate = {k: args.steps / statistics.median(v) for k, v in seconds.items()}
    result = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)",
        "load_average": os.getloadavg(),
        "steps": args.steps, "batch_size": args.batch_size, "repeats": args.repeats,
        "steps_per_second": rate,
        "all_seconds": seconds,
        "vlmsweep_vs_plain_keep": rate["vlmsweep"] / rate["plain_keep"],
        "vlmsweep_vs_plain": rate["vlmsweep"] / rate["plain"],
    }  # fmt: skip
    print(f"\nsteps/s (median of {args.repeats}; {args.steps} steps, batch {args.batch_size}, {result['device']}, "
          f"load average {result['load_average'][0]:.1f}):")
    for k in names:
        print(f"  {k:<11} {rate[k]:.3f}   runs: {', '.join(f'{args.steps / s:.3f}' for s in seconds[k])}")
    print(f"vlmsweep / plain_keep (framework overhead): {result['vlmsweep_vs_plain_keep']:.3f}  (target >= 0.95)")
    print(f"vlmsweep / plain      (overhead + logits trick): {result['vlmsweep_vs_plain']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
