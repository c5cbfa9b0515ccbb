"""Evaluation during training (train.eval_every, train.select, train.early_stop): a Trainer callback that scores the
validation set every N optimizer steps and at the last one, with the model of the moment.

Each point is one line of <run>/metrics_history.jsonl ({"step", "seconds", then the contract, content, text and rate
metrics: vlmsweep.metrics.VALIDATION_PREFIXES}) and the tracker's val/<metric> curves at that step. With
train.select=<metric> the trainable tensors of the best point (direction from the metric registry; a NaN is never
better, ties keep the earlier step) are copied aside and put back when training ends, so the adapter the run saves
and the test set scores is the selected one; with train.save_steps the checkpoint of that step is also spared by the
Trainer's rotation (state.best_model_checkpoint). train.early_stop=P stops after P points without improvement.

What is scored is the caller's (vlmsweep.pipeline.stages.train_stage: an EvalSet over the validation split, predicted
by the run's generation and decoding); this module knows no evaluation, only a function that returns metrics. The
evaluation runs outside the training graph and outside the training loss's output-layer hook (`paused`), in eval
mode, and leaves the random state as it found it: the training steps are those of the same run without it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import torch
from transformers import TrainerCallback

from vlmsweep.files import write_text
from vlmsweep.metrics import VALIDATION_PREFIXES

log = logging.getLogger(__name__)

HISTORY = "metrics_history.jsonl"


def curve_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics a validation point records: the overall contract, content, text and rate figures."""
    return {k: float(v) for k, v in metrics.items() if k.startswith(VALIDATION_PREFIXES)}


def read_history(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


CURVE = "metrics_history.png"


def plot_history(points: list[dict], metrics: list[str], path: Path, selected_step: int | None = None) -> Path | None:
    """The validation curve, metric against step (matplotlib Agg), the selected step marked; None when nothing is drawn
    (a missing plot never fails a run that trained and evaluated)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        log.warning("no validation curve (%s)", err)
        return None
    steps = [p["step"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    drawn = 0
    for m in metrics:
        ys = [p.get(m, float("nan")) for p in points]
        if any(y == y for y in ys):  # not all NaN
            ax.plot(steps, ys, marker="o", label=m)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    if selected_step is not None:
        ax.axvline(selected_step, color="grey", linestyle="--", linewidth=1, label=f"selected: step {selected_step}")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation set")
    ax.set_title("Validation during training")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def better(value: float, best: float | None, higher: bool) -> bool:
    """Whether `value` improves on `best` (None: nothing yet); a NaN never improves, and is beaten by any number."""
    if best is None:
        return True
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value > best if higher else value < best


@contextlib.contextmanager
def random_state_kept() -> ContextManager[None]:
    """The Python, NumPy and torch (CPU and CUDA) random states as they were, after the enclosed block."""
    py, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


class ValidationCallback(TrainerCallback):
    """Scores `evaluate()` (the validation set, with `model` as it is) every `every` steps and at the last step."""

    def __init__(self, model: torch.nn.Module, evaluate: Callable[[], dict[str, float]], every: int, history: Path,
                 sink: Callable[[dict, int], None] | None = None, select: str | None = None, higher: bool = True,
                 patience: int = 0, paused: Callable[[], ContextManager] = contextlib.nullcontext):
        self.model, self.evaluate, self.every, self.history = model, evaluate, every, Path(history)
        self.sink, self.select, self.higher, self.patience, self.paused = sink, select, higher, patience, paused
        self.points: list[dict] = []
        self.best: tuple[float, int] | None = None  # (value, step) of the selected metric
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stale = 0  # points since the last improvement
        self.seconds = 0.0
        self.stopped_early = False

    def on_train_begin(self, args, state, control, **kwargs):
        # a resumed run keeps the points of the steps its checkpoint holds; selection starts again from here
        self.points = [p for p in read_history(self.history) if p["step"] <= state.global_step]

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if step % self.every and step < state.max_steps:
            return control
        self.point(step, args, state)
        if self.patience and self.stale >= self.patience and step < state.max_steps:
            log.info("train.early_stop=%d: %s has not improved since step %d; training stops at step %d",
                     self.patience, self.select, self.best[1], step)
            self.stopped_early = True
            control.should_training_stop = True
        return control

    def point(self, step: int, args, state) -> None:
        start = time.perf_counter()
        was_training = self.model.training
        with random_state_kept(), self.paused(), torch.no_grad():
            metrics = curve_metrics(self.evaluate())
        self.model.train(was_training)
        seconds = time.perf_counter() - start
        self.seconds += seconds
        self.points.append({"step": step, "seconds": round(seconds, 3), **metrics})
        if state.is_world_process_zero:
            write_text(self.history, "".join(json.dumps(p, sort_keys=False) + "\n" for p in self.points))
            if self.sink is not None:
                self.sink({f"val/{k}": v for k, v in metrics.items()}, step)
        if self.select is None:
            log.info("validation at step %d (%.1fs): %s", step, seconds, _short(metrics))
            return
        value = metrics.get(self.select, float("nan"))
        if better(value, self.best[0] if self.best else None, self.higher):
            self.best, self.stale = (value, step), 0
            self.best_state = {n: p.detach().to("cpu", copy=True) for n, p in self.model.named_parameters()
                               if p.requires_grad}
            state.best_model_checkpoint = str(Path(args.output_dir) / f"checkpoint-{step}")  # spared by rotation
            state.best_metric = value
        else:
            self.stale += 1
        log.info("validation at step %d (%.1fs): %s=%.4f (best %.4f at step %d)", step, seconds, self.select, value,
                 self.best[0], self.best[1])

    def restore_best(self) -> None:
        """Put the selected point's trainable tensors back into the model (nothing to do without a selection)."""
        if self.best_state is None:
            return
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name in self.best_state:
                    param.copy_(self.best_state[name].to(param.device))

    def metrics(self) -> dict[str, float]:
        out = {"train.eval_points": float(len(self.points)), "cost.eval_during_train_seconds": self.seconds}
        if self.select is not None:
            out |= {"train.selected_step": float(self.best[1]) if self.best else float("nan"),
                    "train.selected_value": float(self.best[0]) if self.best else float("nan"),
                    "train.stopped_early": float(self.stopped_early)}
        return out


def _short(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in ("contract.strict_parse_rate", "content.field_em") if k in metrics)
