"""The regression guard: which metrics it watches, and a warning for each that got worse than the margin allows."""

from __future__ import annotations

from typing import Sequence

from vlmsweep.config import Config
from vlmsweep.metrics import higher_is_better
from vlmsweep.report.runs import HEADLINE_METRICS


def headline_metrics(cfg: Config) -> list[str]:
    """What the regression guard watches: the sweep objective, the comparison report's headline metrics, coverage."""
    return list(dict.fromkeys([cfg.sweep.objective, *HEADLINE_METRICS, "content.coverage"]))


def regression_drops(history: Sequence[dict[str, float]], margin: float, names: Sequence[str]) -> list[str]:
    """Warnings for the last cycle's regression metrics that dropped by more than `margin` (absolute, in the
    metric's own direction) against the previous cycle or against cycle 0. Metrics absent on either side
    (content metrics without any answer object) are not compared: content.coverage stands for them."""
    if len(history) < 2:
        return []
    cycle, now = len(history) - 1, history[-1]
    refs = [(cycle - 1, history[-2])] + ([(0, history[0])] if cycle - 1 != 0 else [])
    out = []
    for name in names:
        if name not in now:
            continue
        sign = 1.0 if higher_is_better(name) else -1.0
        for ref_cycle, ref in refs:
            if name not in ref:
                continue
            drop = sign * (ref[name] - now[name])
            if drop > margin + 1e-12:
                out.append(f"cycle {cycle}: regression {name} {now[name]:.3f} vs {ref[name]:.3f} at cycle {ref_cycle} "
                           f"(worse by {drop:.3f} > loop.regression_margin={margin})")
    return out
