"""The `${vlmsweep.*:...}` resolvers of the config tree: a sweep's directions from the metric registry, its SQLite
path, the default run folder (made now: TIME-2 when TIME exists; one folder per DDP launch)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from vlmsweep.files import claim
from vlmsweep.metrics import direction_of


def sqlite_url(path: str) -> str:
    """`sqlite:///PATH` with PATH's folder created: the sweeper opens the study before any job runs."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def run_dir(parent: str, name: str) -> str:
    """The default run folder parent/name, made now (vlmsweep.files.claim: TIME-2 when TIME exists). Every rank
    of `torchrun`/`accelerate launch` must write to one run folder, but each rank composes its own config and their
    clocks may straddle a second; the launcher's run id is shared."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("TORCHELASTIC_RUN_ID"):
        return f"{parent}/ddp-{os.environ['TORCHELASTIC_RUN_ID']}"
    return claim(parent, name)


def objectives(objective: str, trade_off: list[str] | None) -> list[str]:
    """sweep.objective, then the metrics traded against it (sweep.trade_off): the study's objective names."""
    return [objective, *(trade_off or [])]


def directions(objective: str, trade_off: list[str] | None) -> str | list[str]:
    """hydra.sweeper.direction: one direction, or a list (a multi-objective study) when there is a trade-off."""
    names = objectives(objective, trade_off)
    return direction_of(names[0]) if len(names) == 1 else [direction_of(n) for n in names]


def register_resolvers() -> None:
    for name, fn in {
        "vlmsweep.run_dir": run_dir,
        "vlmsweep.direction": direction_of,
        "vlmsweep.directions": directions,
        "vlmsweep.objectives": objectives,
        "vlmsweep.sqlite": sqlite_url,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
