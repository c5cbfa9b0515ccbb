"""Which way is better for a metric name: what a sweep's direction and every report's arrow come from."""

from __future__ import annotations

# Metrics the run adds beside the evaluation's own (vlmsweep.evaluate.metrics.METRICS).
RUN_METRICS = {
    "train.loss": False,
    "train.samples_per_second": True,
    "cost.train_seconds_per_sample": False,
    "cost.train_peak_memory_mb": False,
}


def higher_is_better(name: str) -> bool:
    """Direction from the registries (by_domain.<domain>.<metric> takes <metric>'s); KeyError if unknown."""
    from vlmsweep.evaluate.metrics import METRICS, metric_info

    try:
        return metric_info(name).higher_is_better
    except KeyError:
        if name in RUN_METRICS:
            return RUN_METRICS[name]
    known = sorted(set(METRICS) | set(RUN_METRICS))
    raise KeyError(f"unknown metric {name!r}: sweep.objective must be one of {known} (or by_domain.<domain>.<metric>)")


def direction_of(name: str) -> str:
    """'maximize' or 'minimize', for hydra.sweeper.direction."""
    return "maximize" if higher_is_better(name) else "minimize"
