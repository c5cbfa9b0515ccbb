"""`hydra/sweeper=optuna` on today's Optuna: the Hydra-facing class; the logic is vlmsweep.sweep.sweeper.

Why not the upstream plugin: hydra-optuna-sweeper 1.3.0, the last release on PyPI, requires optuna < 3
(so SQLAlchemy < 2, alembic < 1.14), and the Optuna 4 port on Hydra's main branch is unreleased and
requires optuna < 5. This one keeps upstream's config keys (hydra_plugins/vlmsweep_optuna/config.py)
and adds a shared study: n_trials is the total that every worker and restart reach together."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: Any, **options: Any) -> None:
        from vlmsweep.sweep.sweeper import SharedStudySweeperImpl  # optuna is imported only when a sweep starts

        if OmegaConf.is_config(sampler):  # Hydra 1.3.8 instantiates the sweeper's nodes itself; older ones did not
            sampler = instantiate(sampler)
        self.sweeper = SharedStudySweeperImpl(sampler=sampler, **options)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)

