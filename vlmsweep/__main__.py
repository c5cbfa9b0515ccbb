"""`python -m vlmsweep`: Hydra composes the config; it becomes typed dataclasses; run() does the work."""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vlmsweep.config import register_configs, to_config
from vlmsweep.metric_names import direction_of
from vlmsweep.sweeps import register_resolvers

register_configs()
# vlmsweep/conf/sweep/*.yaml: hydra.sweeper.direction: ${vlmsweep.direction:${sweep.objective}} - an unknown
# metric fails when the sweeper is built, before any training.
register_resolvers()

log = logging.getLogger("vlmsweep")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from vlmsweep.run import objective, run

    hc = HydraConfig.get()
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/") and v is not None}
    config = to_config(cfg, choices)
    direction_of(config.sweep.objective)  # unknown objective: an error at start-up
    # A failed run re-raises after run() recorded it in run_info.json: Hydra's basic sweeper finishes
    # the batch and reports the failure; the Optuna sweeper (max_failure_rate: 1.0 in vlmsweep/conf/sweep)
    # marks the trial FAIL and goes on.
    metrics = run(config, overrides=list(hc.overrides.task))
    if "optuna" not in str(hc.sweeper.get("_target_", "")):
        return float(metrics.get(config.sweep.objective, float("nan")))  # nobody optimises it
    return objective(config, metrics)  # a missing or non-finite objective fails the trial, with the reason


if __name__ == "__main__":
    main()
