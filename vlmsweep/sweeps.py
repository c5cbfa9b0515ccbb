"""Resolvers of the sweep configs (directions from the metrics, SQLite path, one run folder per DDP launch)
and what a finished study can claim (a best trial, a tie, or a Pareto front).

The sweeper itself (a total of trials shared by workers and restarts) is vlmsweep/sweeper.py."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from vlmsweep.metric_names import direction_of


def sqlite_url(path: str) -> str:
    """`sqlite:///PATH` with PATH's folder created: the sweeper opens the study before any job runs."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def run_dir(parent: str, name: str) -> str:
    """The default run folder parent/name, made now (vlmsweep.run_folder.claim: TIME-2 when TIME exists). Every rank
    of `torchrun`/`accelerate launch` must write to one run folder, but each rank composes its own config and their
    clocks may straddle a second; the launcher's run id is shared."""
    import os

    from vlmsweep.run_folder import claim

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("TORCHELASTIC_RUN_ID"):
        return f"{parent}/ddp-{os.environ['TORCHELASTIC_RUN_ID']}"
    return claim(parent, name)


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


def pareto_summary(front: list[tuple[int, list[float], str]], names: list[str], directions: list[str],
                   completed: int) -> str:
    """(trial number, values, params as text) of the non-dominated trials -> one sentence. The front is a
    trade-off, not a best: every listed trial is better than each other one in some objective."""
    if not front:
        return "no trial completed: no Pareto front"
    arrows = [f"{n} {'↑' if d == 'maximize' else '↓'}" for n, d in zip(names, directions)]
    points = "; ".join(f"trial {n} ({p}): " + ", ".join(f"{name}={v:.4g}" for name, v in zip(names, values))
                       for n, values, p in front)
    return f"Pareto front of {' vs '.join(arrows)}: {len(front)} of {completed} completed trials: {points}"


def objectives(objective: str, trade_off: list[str] | None) -> list[str]:
    """sweep.objective, then the metrics traded against it (sweep.trade_off): the study's objective names."""
    return [objective, *(trade_off or [])]


def directions(objective: str, trade_off: list[str] | None) -> str | list[str]:
    """hydra.sweeper.direction: one direction, or a list (a multi-objective study) when there is a trade-off."""
    names = objectives(objective, trade_off)
    return direction_of(names[0]) if len(names) == 1 else [direction_of(n) for n in names]


def params_text(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(params.items())) or "(no parameters)"


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
