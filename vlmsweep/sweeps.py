"""Resolvers of the sweep configs: direction from the metric, SQLite path, one run folder per DDP launch.

The sweeper itself (a total of trials shared by workers and restarts) is vlmsweep/sweeper.py."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from vlmsweep.metric_names import direction_of


def sqlite_url(path: str) -> str:
    """`sqlite:///PATH` with PATH's folder created: the sweeper opens the study before any job runs."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


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
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
