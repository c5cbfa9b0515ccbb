"""What a finished study can claim: a best trial, a tie, or a Pareto front.

The sweeper itself (a total of trials shared by workers and restarts) is vlmsweep/sweep/sweeper.py; the resolvers of
the sweep configs are vlmsweep/config/resolvers.py."""

from __future__ import annotations


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


def params_text(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(params.items())) or "(no parameters)"
