"""Training through the HF Trainer: checkpoints, resume, accumulation, checkpointing and DDP come from it."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from vlmsweep.config import Config
from vlmsweep.data import Record
from vlmsweep.train.checkpoints import (StagedCheckpointTrainer, discard_checkpoints, last_complete_checkpoint,
                                        loss_over_all_steps, resumed_at)
from vlmsweep.train.collator import Collator, MaskError
from vlmsweep.metrics import higher_is_better
from vlmsweep.train.loss import OutputLayerLoss
from vlmsweep.train.validation import HISTORY, ValidationCallback

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


@dataclass
class TokenCounts:
    """Tokens and supervised tokens of the batches trained on, counted in this process from each training forward's
    inputs (a forward pre-hook on the model): with train.num_workers > 0 the collator runs in the DataLoader's worker
    processes, and counters kept there never reach the log lines or metrics.json."""

    supervised: int = 0
    tokens: int = 0

    def __call__(self, module, args, kwargs) -> None:
        if module.training and "logits_to_keep" in kwargs:
            self.supervised += int(kwargs["logits_to_keep"].sum())
            self.tokens += int(kwargs["attention_mask"].sum())

    def supervised_fraction(self) -> float:
        return self.supervised / self.tokens if self.tokens else float("nan")  # no step ran: no figure, not 0


class LogCallback(TrainerCallback):
    """Adds the supervised fraction and the peak memory to every log line, and forwards logs."""

    def __init__(self, counts: TokenCounts, sink: Callable[[dict, int], None] | None, memory_probe):
        self.counts, self.sink, self.memory_probe = counts, sink, memory_probe

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        logs["supervised_fraction"] = round(self.counts.supervised_fraction(), 4)
        if self.memory_probe is not None:
            logs["peak_memory_mb"] = round(self.memory_probe() / 2**20, 1)
        if self.sink is not None and state.is_world_process_zero:
            self.sink({f"train/{k}": v for k, v in logs.items()}, state.global_step)


class NonFiniteLoss(FloatingPointError):
    """A training loss that is NaN or infinite: the run stops at the step that made it."""


class StopOnNonFiniteLoss(TrainerCallback):
    """compute_loss_func: the loss of `loss_fn`; the first non-finite one stops training, naming the optimizer step
    and quant.dtype. Left alone, the Trainer's logging_nan_inf_filter replaces it in the logs and fp16's grad scaler
    skips the steps silently, so a run could train for hours and fail at evaluation (Qwen2-VL overflows in float16:
    transformers #33294). The check reads one number per micro-batch, as the Trainer's own NaN filter does."""

    def __init__(self, loss_fn: OutputLayerLoss, dtype: str):
        self.loss_fn, self.dtype, self.step = loss_fn, dtype, 0

    def on_step_begin(self, args, state, control, **kwargs):
        self.step = state.global_step + 1

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        loss = self.loss_fn(outputs, labels, num_items_in_batch)
        if not bool(torch.isfinite(loss.detach())):
            fix = ("Qwen2-VL overflows in float16 (transformers #33294): use quant.dtype=bfloat16 where the card has it, "
                   "or quant=fp32" if self.dtype == "float16" else "lower train.lr, or look at the samples of that step")
            raise NonFiniteLoss(f"the training loss is {loss.item()} at step {self.step} (quant.dtype={self.dtype}): {fix}")
        return loss


def _needs_graph(tower: torch.nn.Module, args: tuple, kwargs: dict) -> bool:
    """Whether a forward of `tower` must record autograd: a parameter of it trains, or an input carries a gradient."""
    if not torch.is_grad_enabled():
        return False
    if any(p.requires_grad for p in tower.parameters()):
        return True
    return any(isinstance(a, torch.Tensor) and a.requires_grad for a in (*args, *kwargs.values()))


@contextlib.contextmanager
def frozen_towers_without_graph(model: torch.nn.Module) -> Iterator[list[str]]:
    """For the enclosed block, a vision tower (blocks and merger) with no trainable parameter runs without autograd.

    With gradient checkpointing, `Trainer.train()` calls `enable_input_require_grads()`, which hooks the input
    embeddings of every nested model, `visual.patch_embed` included (transformers PR #41993): a frozen tower's output
    then requires grad, its blocks are recomputed in backward and a gradient is computed that nothing uses (1.56x the
    FLOPs of an LLM-only step at the 2B's widths and 988 visual tokens, plus the blocks' checkpoint inputs, which
    vlmsweep.model.memory's estimate counts as not kept). The fix of ms-swift PR #10214: wrap the tower's forward and run
    it under no_grad when all its parameters are frozen and no input needs a gradient, judged at each forward, so
    scope=all (vision LoRA) records the graph as before. When only the merger trains (scope=llm_projector), the
    frozen front of the tower (the patch embedding and the blocks before the first one that trains) runs under
    no_grad the same way: the merger's gradient needs no graph through blocks that nothing upstream trains, and the
    hook's requires_grad on the patch embedding's output then reaches no recorded op. Yields the names of the
    towers wrapped."""
    towers = [(name, module) for name, module in model.named_modules() if name.rsplit(".", 1)[-1] == "visual"]
    wrapped: list[torch.nn.Module] = []

    def guard(module: torch.nn.Module, frozen_front: bool) -> None:
        forward = module.forward

        def guarded(*args, **kwargs):
            if not frozen_front and _needs_graph(module, args, kwargs):
                return forward(*args, **kwargs)
            with torch.no_grad():
                return forward(*args, **kwargs)

        module.forward = guarded  # an instance attribute: nn.Module.__call__ calls it; removed on exit
        wrapped.append(module)

    for _, tower in towers:
        guard(tower, frozen_front=False)
        front = [getattr(tower, "patch_embed", None), *getattr(tower, "blocks", [])]
        for part in front:
            if part is None or any(p.requires_grad for p in part.parameters()):
                break  # from here on something trains: its graph and the graph after it are needed
            guard(part, frozen_front=True)
    try:
        yield [name for name, _ in towers]
    finally:
        for module in wrapped:
            del module.forward


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
        report_to=[],  # the tracker is ours (vlmsweep.pipeline.tracking): never fatal, offline by default
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


def train(model, collator: Collator, records: list[Record], cfg: Config, out_dir: Path, sink=None, memory_probe=None,
          validate: Callable[[], dict[str, float]] | None = None):
    """Train `model` in place; returns training metrics (loss, steps, seconds, samples/s). With `validate` (the
    validation set's metrics for the model as it is) and train.eval_every > 0, a ValidationCallback scores it during
    training (out_dir/metrics_history.jsonl, the sink's val/ curves) and, with train.select, the model ends with the
    selected point's tensors; the validation's wall time is cost.eval_during_train_seconds, not train.seconds."""
    args = training_arguments(cfg, out_dir)
    loss_fn = OutputLayerLoss(cfg.train.loss_impl, cfg.train.loss_chunk)
    if args.n_gpu > 1:  # the Trainer would wrap the model in torch.nn.DataParallel, which splits a batch's flat
        # patches and labels unevenly across the GPUs and runs every non-eager loss on one GPU's output layer input
        raise ValueError(f"{args.n_gpu} GPUs in one process (the Trainer would use torch.nn.DataParallel): launch one "
                         f"process per GPU with torchrun --nproc_per_node={args.n_gpu} -m vlmsweep ... or accelerate "
                         "launch -m vlmsweep ..., or use one GPU (CUDA_VISIBLE_DEVICES=0)")
    counts, finite = TokenCounts(), StopOnNonFiniteLoss(loss_fn, cfg.quant.dtype)
    callbacks: list[TrainerCallback] = [LogCallback(counts, sink, memory_probe), finite]
    validation = None
    if validate is not None and cfg.train.eval_every > 0:
        select = cfg.train.select
        validation = ValidationCallback(model, validate, cfg.train.eval_every, out_dir / HISTORY, sink, select,
                                        higher=higher_is_better(select) if select else True,
                                        patience=cfg.train.early_stop, paused=loss_fn.paused)
        callbacks.append(validation)
    trainer = StagedCheckpointTrainer(
        model=model,
        args=args,
        train_dataset=Records(records),
        data_collator=collator,
        compute_loss_func=finite,
        callbacks=callbacks,
    )
    # The collator's labels are the targets of the kept positions, already shifted: the Trainer's count of a micro-
    # batch's targets (num_items_in_batch, the loss's denominator) must not drop one more, as it does for causal LMs.
    trainer._loss_shifts_labels = False
    check_unsharded_output_layer(trainer, loss_fn.impl)
    resume = None
    if cfg.train.resume:
        resume = last_complete_checkpoint(Path(args.output_dir))
        if resume:
            log.info("resuming from %s", resume)
    else:
        discard_checkpoints(Path(args.output_dir))
    start = time.perf_counter()
    counting = model.register_forward_pre_hook(counts, with_kwargs=True)
    try:
        with loss_fn.attached(model), frozen_towers_without_graph(model):
            result = trainer.train(resume_from_checkpoint=resume)
    finally:
        counting.remove()
    seconds = time.perf_counter() - start
    validated: dict[str, float] = {}
    if validation is not None:
        validation.restore_best()  # train.select: the adapter saved and tested is the selected point's
        validated = validation.metrics()
        seconds -= validation.seconds
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
        "train.supervised_fraction": counts.supervised_fraction(),
        "cost.train_seconds_per_sample": seconds / max(1, samples),
        **validated,
    }
