"""run(cfg) -> metrics: the one place that knows the order of the steps of a train -> eval run."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import os
import subprocess
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import set_seed

from vlmsweep import data as data_mod
from vlmsweep import memory, prompts, tracking
from vlmsweep.config import Config, visual_tokens_to_pixels
from vlmsweep.data import Record
from vlmsweep.evaluate.slices import evaluate_slices, load_slices
from vlmsweep.model import adapter as model_adapter
from vlmsweep.model import load as model_load
from vlmsweep.model.quant import torch_dtype
from vlmsweep.model.scope import trainable_by_part
from vlmsweep.train.collator import Collator
from vlmsweep.train.trainer import check_lengths, train

log = logging.getLogger(__name__)

def rank() -> int:
    """This process's rank under torchrun / accelerate launch (0 when alone)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


PACKAGES = ("vlmsweep", "torch", "torchvision", "transformers", "tokenizers", "peft", "accelerate",
            "bitsandbytes", "xgrammar", "hydra-core", "hydra-optuna-sweeper", "optuna", "wandb", "pillow")


# ----------------------------------------------------------------------------- run folder


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision() -> str:
    try:
        here = Path(__file__).resolve().parent
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if rev.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_json(path: Path, obj: Any) -> None:
    """Written to a temporary file and renamed: a crash never leaves half a metrics.json."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8")
    tmp.replace(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)


def config_dict(cfg: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


class RunInfo:
    """run_info.json: status, error, choices, versions, revision and cost; rewritten as the run goes."""

    def __init__(self, cfg: Config, out_dir: Path, overrides: list[str] | None = None):
        self.path = out_dir / "run_info.json"
        self.data: dict[str, Any] = {
            "status": "running",
            "error": None,
            "choices": dict(cfg.choices),
            "overrides": list(overrides or []),
            "seed": cfg.seed,
            "receipt_ratio": cfg.data_mix.receipt_ratio,
            "visual_tokens": cfg.max_pixels.visual_tokens,
            "compute_dtype": str(torch_dtype(cfg.quant)).removeprefix("torch."),  # float32 on a CPU without bf16
            "versions": versions(),
            "git": git_revision(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "cost": {},
        }
        self.save()

    def update(self, **values: Any) -> None:
        self.data.update(values)
        self.save()

    def save(self) -> None:
        if rank() == 0:  # every rank shares the run folder; only rank 0 writes to it
            write_json(self.path, self.data)


# ----------------------------------------------------------------------------- stages


def pixel_budget(cfg: Config) -> tuple[int, int]:
    return visual_tokens_to_pixels(cfg.max_pixels.min_visual_tokens), visual_tokens_to_pixels(cfg.max_pixels.visual_tokens)


def datasets(cfg: Config) -> data_mod.Splits:
    """The splits this run reads (train / test, and mining / regression for a loop): the user's manifests
    or synthetic samples from the mix. Manifests are validated here, before any model is loaded."""
    names = data_mod.needed_splits(cfg.train.enabled, cfg.eval.enabled, cfg.loop.cycles > 0)
    splits = data_mod.load_splits(cfg.data, cfg.data_mix, Path(cfg.cache_dir).expanduser() / "data", names)
    if cfg.train.enabled and not splits["train"]:
        raise ValueError("the training set is empty: set data.train_size > 0 or data.train_manifest")
    if cfg.eval.enabled and not splits["test"]:
        raise ValueError("the test set is empty: set data.test_size > 0 or data.test_manifest")
    return splits


def make_collator(cfg: Config, processor) -> Collator:
    min_pixels, max_pixels = pixel_budget(cfg)
    return Collator(
        processor=processor,
        domain_tag=cfg.domain_tag.in_prompt,
        assistant_only=cfg.loss.assistant_only,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        max_seq_len=cfg.train.max_seq_len,
        family=cfg.model.family,
    )


def prepare_model(cfg: Config, base, adapter: str | None, trainable: bool):
    """LoRA on the scope's modules, or an existing adapter (to continue training or to evaluate)."""
    if adapter:
        return model_adapter.load_adapter(base, adapter, trainable=trainable, cfg=cfg)
    if trainable:
        return model_load.attach_lora(base, cfg.scope, cfg.lora, cfg.seed)
    return base


def train_stage(cfg: Config, model, processor, records: list[Record], out_dir: Path, tracker, info: RunInfo):
    collator = make_collator(cfg, processor)
    lengths = check_lengths(records, collator, cfg.train.on_truncation)
    parts = trainable_by_part(model)
    log.info("trainable parameters by part: %s", parts)
    with memory.measure() as peak:
        trainer, metrics = train(model, collator, lengths.kept, cfg, out_dir, sink=tracker.log,
                                 memory_probe=lambda: peak.peak_bytes)
    metrics.update({f"train.trainable_params.{k}": float(v) for k, v in parts.items()})
    metrics["train.skipped_too_long"] = float(len(lengths.skipped))
    # CUDA: peak allocated; CPU: peak RSS growth during training (vlmsweep.memory.measure)
    metrics["cost.train_peak_memory_mb"] = peak.peak_bytes / 2**20
    info.update(skipped=[{"id": i, "reason": r} for i, r in lengths.skipped], chat_template=collator.template_check.as_dict())
    metrics["train.template_identity_checked"] = float(collator.template_check.checked)
    if trainer.is_world_process_zero():
        model_adapter.save_adapter(model, processor, cfg, out_dir / "adapter", *pixel_budget(cfg))
    return metrics


def eval_stage(cfg: Config, model, processor, records: list[Record], out_dir: Path, extra_logits_processors=None):
    from vlmsweep.evaluate import evaluate

    min_pixels, max_pixels = pixel_budget(cfg)
    model.eval()
    return evaluate(
        model,
        processor,
        records,
        cfg.eval,
        cfg.decoding,
        domain_tag=cfg.domain_tag.in_prompt,
        max_pixels=max_pixels,
        min_pixels=min_pixels,
        out_dir=out_dir,
        extra_logits_processors=extra_logits_processors,
    )


def memory_estimate(cfg: Config, base, processor, records: list[Record]) -> dict[str, float]:
    """Estimated peak accelerator memory for this config, before training (logged, not enforced)."""
    try:
        tok = processor.tokenizer
        sample = records[: min(16, len(records))]
        answers = [len(tok(prompts.serialize(r.target))["input_ids"]) + 1 for r in sample]
        prompt = len(tok(prompts.instruction(sample[0].domain, cfg.domain_tag.in_prompt))["input_ids"]) + 20
        est = memory.estimate_from_config(
            cfg, base.config, text_tokens=prompt + max(answers), supervised_tokens=max(answers)
        )
        log.info("estimated peak accelerator memory:\n%s", est.table())
        return {f"memory.estimate.{k}": float(v) for k, v in est.as_dict().items() if isinstance(v, (int, float))}
    except Exception as err:  # noqa: BLE001 - an estimate must never stop a run
        log.warning("memory estimate failed: %s", err)
        return {}


def free_memory() -> None:
    """Between in-process trials (Hydra's basic launcher, Optuna): free the accelerator, reset peaks."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ----------------------------------------------------------------------------- run


def run(cfg: Config, overrides: list[str] | None = None, extra_logits_processors=None) -> dict[str, float]:
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    main_process = rank() == 0
    if main_process:
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(config_dict(cfg)), encoding="utf-8")
    info = RunInfo(cfg, out_dir, overrides)
    tracker = (
        tracking.start(cfg, out_dir, name=out_dir.name, group=out_dir.parent.name, config_dict=config_dict(cfg))
        if main_process
        else tracking.Tracker()
    )
    try:
        if cfg.eval.enabled:  # a missing @FILE in eval.leakage_keywords fails now, not after training
            from vlmsweep.evaluate.tags import resolve_leakage_keywords

            resolve_leakage_keywords(tuple(cfg.eval.leakage_keywords))
        if cfg.loop.cycles > 0:
            from vlmsweep.loop import run_loop

            if world_size() > 1:  # a documented limit, recorded in run_info.json like any failure
                raise ValueError(
                    f"loop.cycles={cfg.loop.cycles} cannot run under torchrun/accelerate launch: the loop writes its "
                    "manifests and state from one process. Run the loop in a single process, or use loop.cycles=0"
                )
            metrics = run_loop(cfg, out_dir, tracker, info, extra_logits_processors)
        elif cfg.adapters.per_domain:
            from vlmsweep.per_domain import run_per_domain

            metrics = run_per_domain(cfg, out_dir, tracker, info, extra_logits_processors)
        else:
            metrics = run_once(cfg, out_dir, tracker, info, extra_logits_processors)
    except BaseException as err:
        info.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        tracker.finish(exit_code=1)
        free_memory()
        raise
    info.update(status="ok", finished=time.strftime("%Y-%m-%dT%H:%M:%S"), world_size=world_size())
    tracker.summary(metrics)
    tracker.finish()
    free_memory()
    if main_process:
        what = "report.md, metrics.json, cycle_N/" if cfg.loop.cycles > 0 else "metrics.json, samples.jsonl, report.md" + (
            ("" if not cfg.train.enabled else ", adapters/<group>/" if cfg.adapters.per_domain else ", adapter/"))
        print(f"vlmsweep: outputs in {out_dir.resolve()}  ({what})")
    return metrics


def run_once(cfg: Config, out_dir: Path, tracker, info: RunInfo, extra_logits_processors=None) -> dict[str, float]:
    set_seed(cfg.seed)
    splits = datasets(cfg)  # a bad manifest fails here, before the model is loaded
    info.update(data=splits.sources)
    slices = load_slices(cfg) if cfg.eval.enabled else {}  # eval.slices: read and validated before the model loads
    if cfg.train.enabled and cfg.eval.enabled:
        data_mod.check_no_leak(splits["train"], {"test": splits["test"]}, where="this run",
                                 near_duplicate_bits=cfg.data.near_duplicate_bits)
    if cfg.model.source == "ocr":  # the OCR baseline: no model to load or train, the same scoring and files
        from vlmsweep.ocr.baseline import evaluate_ocr

        metrics, samples = evaluate_ocr(splits["test"], cfg.eval, out_dir)
        metrics |= evaluate_slices(cfg, slices, lambda recs, d: evaluate_ocr(recs, cfg.eval, d)[0], metrics, [], out_dir)
        if cfg.tracker.log_samples:
            tracker.table("samples", samples)
        metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        write_json(out_dir / "metrics.json", metrics)
        info.update(cost={k: v for k, v in metrics.items() if k.startswith("cost.")})
        return metrics
    base, processor, _ = model_load.load(cfg)
    if cfg.decoding.constrained and cfg.eval.enabled:
        from vlmsweep.evaluate import check_schemas_compile

        check_schemas_compile(processor.tokenizer, base.config.text_config.vocab_size)  # fail before training
    metrics: dict[str, float] = memory_estimate(cfg, base, processor, splits["train"] or splits["test"])
    model = prepare_model(cfg, base, cfg.model.adapter, trainable=cfg.train.enabled)
    if cfg.train.enabled:
        metrics.update(train_stage(cfg, model, processor, splits["train"], out_dir, tracker, info))
    if rank() != 0:
        # Data-parallel training is over; evaluation, metrics and reports belong to rank 0 alone.
        return {}
    if cfg.eval.enabled:
        eval_metrics, samples = eval_stage(cfg, model, processor, splits["test"], out_dir, extra_logits_processors)
        metrics.update(eval_metrics)
        metrics.update(evaluate_slices(
            cfg, slices, lambda recs, d: eval_stage(cfg, model, processor, recs, d, extra_logits_processors)[0],
            eval_metrics, splits["train"] if cfg.train.enabled else [], out_dir))
        if cfg.tracker.log_samples:
            tracker.table("samples", samples)
    metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    write_json(out_dir / "metrics.json", metrics)
    info.update(cost={k: v for k, v in metrics.items() if k.startswith(("cost.", "memory."))})
    del model, base
    return metrics


def objective(cfg: Config, metrics: dict[str, float]) -> float:
    """The value a sweeper optimises. Missing or non-finite is an error (the trial fails with this
    reason) rather than a NaN that Optuna 2.10 + hydra-optuna-sweeper 1.3 cannot record."""
    value = metrics.get(cfg.sweep.objective)
    if value is None:
        raise KeyError(f"sweep.objective={cfg.sweep.objective}: the run produced no such metric")
    if not math.isfinite(value):
        raise ValueError(f"sweep.objective={cfg.sweep.objective} is {value} for this run")
    return float(value)
