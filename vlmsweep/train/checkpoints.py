"""Checkpoints that appear whole: written into checkpoints/.staging/ and renamed; a resume takes the newest complete one.

The HF Trainer writes checkpoint-N in place, trainer_state.json last: a kill -9 mid-save left an empty or
half-written checkpoint-N that every later resume picked and failed on (issue 37).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from transformers import Trainer
from transformers.trainer_utils import rotate_checkpoints

from vlmsweep.files import write_failed

log = logging.getLogger(__name__)

STAGING = ".staging"  # inside checkpoints/: the Trainer's own checkpoint-N name pattern never matches it
STATE_FILE = "trainer_state.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin",
           "model.safetensors.index.json", "pytorch_model.bin.index.json")
_STEP = re.compile(r"^checkpoint-(\d+)$")


class StagedCheckpointTrainer(Trainer):
    """The HF Trainer, its checkpoints written aside (checkpoints/.staging/checkpoint-N) and renamed into place."""

    _staging = False

    def _get_output_dir(self, trial) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING) if self._staging else run_dir

    def _save_checkpoint(self, model, trial) -> None:
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        except Exception as err:  # a full disk: the error names the checkpoint (traceback in run_info.json), its half copy goes
            self._staging = False
            run_dir = Path(self._get_output_dir(trial))
            shutil.rmtree(run_dir / STAGING, ignore_errors=True)
            raise write_failed(run_dir / f"checkpoint-{self.state.global_step}", err) from err
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()  # sharded saves (FSDP) write from every rank
        if not self.args.should_save:
            return
        run_dir = Path(self._get_output_dir(trial))
        name = f"checkpoint-{self.state.global_step}"
        final, old = run_dir / name, run_dir / STAGING / f"{name}.old"
        if final.exists():  # the same step saved again (a resume that redoes it): the new one wins
            os.replace(final, old)
        os.replace(run_dir / STAGING / name, final)
        shutil.rmtree(run_dir / STAGING, ignore_errors=True)  # `old` and whatever a kill left there
        rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                           best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)


def incomplete(checkpoint: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (None: it can)."""
    state = checkpoint / STATE_FILE
    if not any(checkpoint.iterdir()):
        return "empty"
    if not state.is_file():
        return f"no {STATE_FILE}"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{STATE_FILE} is cut short"
    if not any((checkpoint / w).is_file() for w in WEIGHTS):
        return "no weights"
    return None


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint-N in `folder` that can be resumed from. Incomplete ones (a kill during a save before
    saves were staged, or a copy cut short) are removed with a warning that names them: left there, the Trainer's
    rotation would count them and delete a good one. Also clears a staging folder left by a kill."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    main = int(os.environ.get("RANK", "0")) == 0  # torchrun / accelerate: one rank tidies the shared folder
    if main:
        shutil.rmtree(folder / STAGING, ignore_errors=True)
    steps = sorted(((int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _STEP.match(p.name))),
                   reverse=True)
    for _, path in steps:
        reason = incomplete(path)
        if reason is None:
            return str(path)
        if main:
            log.warning("skipping incomplete checkpoint %s (%s): removed; resuming from the one before it, if any",
                        path, reason)
            shutil.rmtree(path, ignore_errors=True)
    return None


def discard_checkpoints(folder: Path) -> None:
    """train.resume=false starts over: the folder's checkpoints are another run's, and left beside this run's
    config.yaml a later resume would take them for this config's (issue 37)."""
    folder = Path(folder)
    old = [p for p in folder.iterdir() if p.is_dir() and _STEP.match(p.name)] if folder.is_dir() else []
    if old and int(os.environ.get("RANK", "0")) == 0:
        log.warning("train.resume=false: removing the %d checkpoint(s) of an earlier run in %s", len(old), folder)
        for path in old:
            shutil.rmtree(path, ignore_errors=True)


def resumed_at(checkpoint: str | None) -> int:
    """The step a resume starts from (0: a fresh start)."""
    m = _STEP.match(Path(checkpoint).name) if checkpoint else None
    return int(m.group(1)) if m else 0


def loss_over_all_steps(log_history: list[dict], start: int, steps_run: int, loss_run: float) -> float:
    """train.loss of a resumed run over all its steps, not only this call's (the Trainer's training_loss): the
    checkpoint's logged losses, each the mean of its logging window, weighted by their steps with this call's mean."""
    total, last = 0.0, 0
    for step, loss in sorted((h["step"], float(h["loss"])) for h in log_history if "loss" in h and h["step"] <= start):
        total, last = total + loss * (step - last), step
    if last + steps_run == 0:
        # resumed at the end with no logged loss before it (train.logging_steps > the steps run): the checkpoint keeps
        # no figure of the loss, and the Trainer's 0.0 for no step is none either
        return loss_run if steps_run else float("nan")
    return (total + loss_run * steps_run) / (last + steps_run)
