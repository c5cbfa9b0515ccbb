"""Which way is better for a metric name: what a sweep's direction and every report's arrow come from."""

from __future__ import annotations

from typing import Any

# Metrics the run adds beside the evaluation's own (vlmsweep.evaluate.metrics.METRICS).
RUN_METRICS = {
    "train.loss": False,
    "train.samples_per_second": True,
    "cost.train_seconds_per_sample": False,
    "cost.train_peak_memory_mb": False,
    "routing.accuracy": True,  # adapters=per_domain: share of test pages the router sends to their own group
    "routing.samples": True,  # pages the router judged (a count, not an outcome)
    "cost.routing_seconds_per_sample": False,
}


# Wall-clock measurements: one average over the run's batches, taken under whatever else the machine was
# doing. Without repeats (seeds) a difference between two runs is one measurement each: the report gives
# it no interval and no better/worse verdict.
WALL_CLOCK = frozenset({
    "cost.eval_seconds_per_sample",
    "cost.train_seconds_per_sample",
    "train.samples_per_second",
    "train.seconds",
    "cost.routing_seconds_per_sample",
})


def base_metric(name: str) -> str:
    """The metric a scoped name measures: slice/<name>/<metric>, by_domain.<domain>.<metric> and
    by_group.<group>.<metric> (adapters=per_domain) -> <metric>."""
    if name.startswith("slice/") and name.count("/") >= 2:
        name = name.split("/", 2)[2]
    return name.split(".", 2)[2] if name.startswith(("by_domain.", "by_group.")) and name.count(".") >= 2 else name


def is_wall_clock(name: str) -> bool:
    return base_metric(name) in WALL_CLOCK


def higher_is_better(name: str) -> bool:
    """Direction from the registries (by_domain.<domain>.<metric> takes <metric>'s); KeyError if unknown."""
    from vlmsweep.evaluate.metrics import METRICS, metric_info

    try:
        return metric_info(base_metric(name)).higher_is_better
    except KeyError:
        if name in RUN_METRICS:
            return RUN_METRICS[name]
    known = sorted(set(METRICS) | set(RUN_METRICS))
    raise KeyError(f"unknown metric {name!r}: sweep.objective must be one of {known} (or by_domain.<domain>.<metric>, slice/<slice>/<metric>)")


def direction_of(name: str) -> str:
    """'maximize' or 'minimize', for hydra.sweeper.direction."""
    return "maximize" if higher_is_better(name) else "minimize"


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics dict as floats (booleans and strings are not metrics)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
