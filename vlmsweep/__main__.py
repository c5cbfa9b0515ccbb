"""`python -m vlmsweep`: Hydra composes the config; it becomes typed dataclasses; run() does the work."""

from __future__ import annotations

import logging
import math

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from vlmsweep.config import register_configs, to_config
from vlmsweep.metric_names import direction_of

register_configs()
# hydra.sweeper.direction: ${vlmsweep.direction:${sweep.objective}} - an unknown metric fails here,
# when the sweeper is built, before any training.
if not OmegaConf.has_resolver("vlmsweep.direction"):
    OmegaConf.register_new_resolver("vlmsweep.direction", direction_of)

log = logging.getLogger("vlmsweep")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from vlmsweep.run import objective, run

    hc = HydraConfig.get()
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/") and v is not None}
    config = to_config(cfg, choices)
    direction_of(config.sweep.objective)  # unknown objective: an error at start-up
    try:
        metrics = run(config, overrides=list(hc.overrides.task))
    except Exception as err:
        if hc.mode is not None and hc.mode.name == "MULTIRUN":
            # One failed trial (out of memory, a bad option) is recorded in its run_info.json and
            # the sweep goes on; the sweeper sees NaN, which Optuna records as a failed trial.
            log.error("run failed, sweep continues: %s: %s", type(err).__name__, err)
            return math.nan
        raise
    return run_objective(config, metrics, objective)


def run_objective(config, metrics, objective) -> float:
    try:
        return objective(config, metrics)
    except KeyError as err:
        log.warning("%s", err)
        return math.nan


if __name__ == "__main__":
    main()
