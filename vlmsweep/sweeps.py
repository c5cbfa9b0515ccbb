"""Resolvers of the sweep configs (direction from the metric, SQLite path, one run folder per DDP launch)
and what a finished study can claim (a best trial, or a tie).

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


def best_or_tie(values: list[tuple[int, float, str]], maximize: bool) -> str:
    """(trial number, objective, params as text) of the completed trials -> one sentence. Different
    settings sharing the best value are a tie, never a "best" picked by trial order ("all 2 trials score
    0: no best"); the same setting run twice is one setting."""
    if not values:
        return "no trial completed: no best"
    top = max(v for _, v, _ in values) if maximize else min(v for _, v, _ in values)
    tied = [(n, p) for n, v, p in values if v == top]
    settings = list(dict.fromkeys(p for _, p in tied))
    if len(settings) == 1:
        numbers = ", ".join(str(n) for n, _ in tied)
        return f"best: {settings[0]} (trial{'s' if len(tied) > 1 else ''} {numbers}) with {top:.4g}"
    if len(tied) == len(values):
        return f"all {len(values)} trials score {top:.4g}: no best"
    return f"{', '.join(settings)} tie at {top:.4g} ({len(tied)} of {len(values)} completed trials): no best"


def params_text(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(params.items())) or "(no parameters)"


def register_resolvers() -> None:
    for name, fn in {
        "vlmsweep.run_name": run_name,
        "vlmsweep.direction": direction_of,
        "vlmsweep.sqlite": sqlite_url,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
