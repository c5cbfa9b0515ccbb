"""Hydra plugin shim: Hydra instantiates sweepers only from the `hydra_plugins` package; the logic is vlmsweep.sweeper."""

from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class VlmsweepOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper whose n_trials is the study's total, shared by every worker (conf/hydra/sweeper/vlmsweep_optuna.yaml)."""

    def __init__(self, heartbeat_interval: float, grace_period: float, wait_for_running: bool, **optuna_sweeper: Any) -> None:
        from vlmsweep.sweeper import SharedStudySweeperImpl  # optuna is imported only when a sweep starts

        self.sweeper = SharedStudySweeperImpl(heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                              wait_for_running=wait_for_running, **optuna_sweeper)
