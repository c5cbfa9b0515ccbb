"""Training through the HF Trainer: checkpoints, resume, accumulation, checkpointing and DDP come from it."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from vlmsweep.config import Config
from vlmsweep.data import Record
from vlmsweep.train.checkpoints import (StagedCheckpointTrainer, discard_checkpoints, last_complete_checkpoint,
                                        loss_over_all_steps, resumed_at)
from vlmsweep.train.collator import Collator, MaskError
from vlmsweep.train.loss import OutputLayerLoss

log = logging.getLogger(__name__)


class Records(Dataset):
    def __init__(self, records: list[Record]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]


@dataclass
class LengthCheck:
    kept: list[Record]
    skipped: list[tuple[str, str]]  # (id, reason)


def check_lengths(records: list[Record], collator: Collator, on_truncation: str) -> LengthCheck:
    """Encode every sample once before training: a cut answer is an error or a counted skip."""
    kept, skipped = [], []
    for record in records:
        reason = collator.check_length(collator.encode(record))
        if reason is None:
            kept.append(record)
        elif on_truncation == "error":
            raise MaskError(reason + " (or set train.on_truncation=skip to skip and count such samples)")
        else:
            skipped.append((record.id, reason))
    if skipped:
        log.warning("skipped %d of %d training samples that exceed train.max_seq_len", len(skipped), len(records))
    if not kept:
        raise MaskError("no training sample fits train.max_seq_len: nothing to train on")
    return LengthCheck(kept, skipped)


class LogCallback(TrainerCallback):
    """Adds the supervised fraction and the peak memory to every log line, and forwards logs."""

    def __init__(self, collator: Collator, sink: Callable[[dict, int], None] | None, memory_probe):
        self.collator, self.sink, self.memory_probe = collator, sink, memory_probe

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        logs["supervised_fraction"] = round(self.collator.supervised_fraction(), 4)
        if self.memory_probe is not None:
            logs["peak_memory_mb"] = round(self.memory_probe() / 2**20, 1)
        if self.sink is not None and state.is_world_process_zero:
            self.sink({f"train/{k}": v for k, v in logs.items()}, state.global_step)


def training_arguments(cfg: Config, out_dir: Path) -> TrainingArguments:
    t = cfg.train
    on_gpu = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        lr_scheduler_type=t.lr_scheduler,
        logging_steps=t.logging_steps,
        save_strategy="steps" if t.save_steps > 0 else "no",
        save_steps=t.save_steps if t.save_steps > 0 else 500,
        save_total_limit=2,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=cfg.quant.dtype == "bfloat16" and on_gpu,  # autocast; on the CPU the weights are already bf16
        fp16=cfg.quant.dtype == "float16" and on_gpu,
        activation_checkpointing=t.grad_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        remove_unused_columns=False,  # the collator reads Record objects
        dataloader_num_workers=t.num_workers,
        report_to=[],  # the tracker is ours (vlmsweep.tracking): never fatal, offline by default
        disable_tqdm=True,
        use_cpu=not on_gpu,
        ddp_find_unused_parameters=False,
        # torchrun/accelerate on CPUs: gloo. Set only when launched distributed: a single process
        # with a backend named expects a process group that nobody started.
        ddp_backend="gloo" if not on_gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )


def check_unsharded_output_layer(trainer: Trainer, impl: str) -> None:
    """The loss of every implementation but eager reads the output layer's weight outside the model's forward, where
    FSDP and DeepSpeed ZeRO-3 hold only this rank's shard of it."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if impl != "eager" and (trainer.is_fsdp_enabled or is_deepspeed_zero3_enabled()):
        raise ValueError(f"train.loss_impl={impl} with FSDP or DeepSpeed ZeRO-3 (sharded weights): use "
                         "train.loss_impl=eager there, or data parallelism (DDP) / ZeRO-1/2")


def train(model, collator: Collator, records: list[Record], cfg: Config, out_dir: Path, sink=None, memory_probe=None):
    """Train `model` in place; returns training metrics (loss, steps, seconds, samples/s)."""
    args = training_arguments(cfg, out_dir)
    loss_fn = OutputLayerLoss(cfg.train.loss_impl, cfg.train.loss_chunk)
    if args.n_gpu > 1 and loss_fn.impl != "eager":  # the Trainer would wrap the model in torch.nn.DataParallel
        raise ValueError(f"train.loss_impl={loss_fn.impl} with {args.n_gpu} GPUs in one process (torch.nn.DataParallel): "
                         "launch with torchrun or accelerate launch (one process per GPU), or use train.loss_impl=eager")
    trainer = StagedCheckpointTrainer(
        model=model,
        args=args,
        train_dataset=Records(records),
        data_collator=collator,
        compute_loss_func=loss_fn,
        callbacks=[LogCallback(collator, sink, memory_probe)],
    )
    check_unsharded_output_layer(trainer, loss_fn.impl)
    resume = None
    if cfg.train.resume:
        resume = last_complete_checkpoint(Path(args.output_dir))
        if resume:
            log.info("resuming from %s", resume)
    else:
        discard_checkpoints(Path(args.output_dir))
    start = time.perf_counter()
    with loss_fn.attached(model):
        result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    # after a resume, the seconds and samples are this call's steps; the loss is over all steps (loss_over_all_steps)
    began = resumed_at(resume)
    steps_run = result.global_step - began
    samples = steps_run * cfg.train.batch_size * cfg.train.grad_accum * args.world_size
    loss = float(result.training_loss)
    if began:
        loss = loss_over_all_steps(trainer.state.log_history, began, steps_run, loss)
    return trainer, {
        "train.loss": loss if math.isfinite(loss) else float("nan"),
        "train.steps": float(result.global_step),
        "train.resumed_at_step": float(began),
        "train.seconds": seconds,
        "train.samples_per_second": samples / seconds if seconds > 0 else float("nan"),
        "train.supervised_fraction": collator.supervised_fraction(),
        "cost.train_seconds_per_sample": seconds / max(1, samples),
    }
