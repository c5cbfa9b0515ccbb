"""Optuna sweeps through hydra-optuna-sweeper: direction from the metric, SQLite storage, resumable totals."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from vlmsweep.metric_names import direction_of

log = logging.getLogger(__name__)

FINISHED = ("COMPLETE", "FAIL", "PRUNED")


def sqlite_url(path: str) -> str:
    """`sqlite:///PATH` with PATH's folder created: the sweeper opens the study before any job runs."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def trials_left(storage: str | None, study_name: str, total: int) -> int:
    """hydra-optuna-sweeper runs `n_trials` *more* trials per invocation; a sweep config asks for a
    total, so an interrupted sweep resumed with the same command stops at that total. Trials left
    RUNNING by a killed process are not counted (they never finished)."""
    total = int(total)
    if not storage:
        return total
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet
        return total
    done = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED)
    if done:
        log.info("study %s: %d of %d trials finished before; running %d more", study_name, done, total, max(0, total - done))
    return max(0, total - done)


def run_name(default: str) -> str:
    """Every rank of `torchrun`/`accelerate launch` must write to one run folder, but each rank
    composes its own config and their clocks may straddle a second; the launcher's run id is shared."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("TORCHELASTIC_RUN_ID"):
        return f"ddp-{os.environ['TORCHELASTIC_RUN_ID']}"
    return default


def register_resolvers() -> None:
    for name, fn in {
        "vlmsweep.run_name": run_name,
        "vlmsweep.direction": direction_of,
        "vlmsweep.sqlite": sqlite_url,
        "vlmsweep.trials_left": trials_left,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
