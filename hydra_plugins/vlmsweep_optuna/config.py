# Config schema of `hydra/sweeper=optuna` and `hydra/sweeper/sampler=...`: the keys as hydra-optuna-sweeper
# documents them (https://hydra.cc/docs/plugins/optuna_sweeper/), plus the shared-study keys of vlmsweep.
# Adapted from facebookresearch/hydra, plugins/hydra_optuna_sweeper/hydra_plugins/hydra_optuna_sweeper/config.py
# (MIT License, Copyright (c) Facebook, Inc. and its affiliates). Hydra imports every module under
# hydra_plugins when it starts, so these nodes are in the ConfigStore before any config is composed.
import inspect
import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, NoReturn, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


log = logging.getLogger(__name__)


def sampler(name: str, **options: Any) -> Any:
    """optuna.samplers.<name>(**options) without the options that sampler has no parameter for, said in the log.

    The sweep presets (conf/sweep/*.yaml) set `seed` and `n_startup_trials` for TPE, the default; upstream's schema makes
    `hydra/sweeper/sampler=random` (or nsgaii, qmc, grid) with such a preset a composition error that no override
    can undo, since the preset's keys are merged before the command line's. Here those samplers accept the keys and
    drop the ones they cannot use."""
    import optuna

    cls = getattr(optuna.samplers, name)
    accepted = inspect.signature(cls).parameters
    dropped = sorted(k for k, v in options.items() if k not in accepted and v is not None)
    if dropped:
        log.info("hydra.sweeper.sampler: %s takes no %s; left out", name, ", ".join(dropped))
    return cls(**{k: v for k, v in options.items() if k in accepted})


def raise_motpe_removed(*args: Any, **kwargs: Any) -> NoReturn:
    raise ValueError("hydra/sweeper/sampler=motpe: MOTPESampler was removed in Optuna 4; "
                     "hydra/sweeper/sampler=tpe optimises several objectives itself")


class Direction(Enum):
    minimize = 1
    maximize = 2


@dataclass
class SamplerConfig:
    _target_: str = MISSING


@dataclass
class TPESamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.TPESampler.html"""

    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    consider_prior: Optional[bool] = None
    prior_weight: Optional[float] = None
    consider_magic_clip: Optional[bool] = None
    consider_endpoints: Optional[bool] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    warn_independent_sampling: Optional[bool] = None


@dataclass
class LenientSamplerConfig(SamplerConfig):
    """A sampler built by `sampler`, which takes the presets' TPE keys and leaves out those it has no parameter for."""

    _target_: str = "hydra_plugins.vlmsweep_optuna.config.sampler"
    name: str = MISSING  # the class in optuna.samplers
    seed: Optional[int] = None
    n_startup_trials: Optional[int] = None  # a preset's TPE setting: accepted, not used


@dataclass
class RandomSamplerConfig(LenientSamplerConfig):
    name: str = "RandomSampler"


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    # restart_strategy and inc_popsize are gone: deprecated in Optuna 4.4 (a FutureWarning even when None)
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: Optional[int] = None
    x0: Optional[Dict[str, Any]] = None
    sigma0: Optional[float] = None
    n_startup_trials: int = 1
    independent_sampler: Optional[Any] = None
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    popsize: Optional[int] = None
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False
    source_trials: Optional[Any] = None


@dataclass
class NSGAIISamplerConfig(LenientSamplerConfig):
    name: str = "NSGAIISampler"
    population_size: int = 50
    mutation_prob: Optional[float] = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Optional[Any] = None


@dataclass
class MOTPESamplerConfig(SamplerConfig):
    _target_: str = "hydra_plugins.vlmsweep_optuna.config.raise_motpe_removed"


@dataclass
class GridSamplerConfig(LenientSamplerConfig):
    _partial_: bool = True  # the grid is hydra.sweeper.params, filled in when the sweep starts; seed: its visiting order
    name: str = "GridSampler"


@dataclass
class GPSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.GPSampler"
    seed: Optional[int] = None
    independent_sampler: Optional[Any] = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    constraints_func: Optional[Any] = None
    warn_independent_sampling: bool = True


@dataclass
class QMCSamplerConfig(LenientSamplerConfig):
    name: str = "QMCSampler"
    qmc_type: str = "sobol"
    scramble: bool = False
    independent_sampler: Optional[Any] = None
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.vlmsweep_optuna.OptunaSweeper"
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])

    sampler: SamplerConfig = MISSING
    direction: Any = Direction.minimize  # minimize | maximize, or a list of them: a multi-objective study
    storage: Optional[Any] = None  # None: in memory (one process); sqlite:///PATH (one machine); postgresql://... (many)
    study_name: Optional[str] = None
    n_trials: int = 20  # the study's TOTAL: finished (COMPLETE, PRUNED, FAIL) + running in live workers
    n_jobs: int = 1  # trials this worker launches at once (submitit: jobs in flight); upstream's default is 2
    max_failure_rate: float = 1.0  # a failed trial (OOM, exception) is recorded and the sweep goes on; upstream: 0.0
    params: Optional[Dict[str, str]] = None  # name: choice(...) | range(...) | interval(...) | tag(log, interval(...))
    custom_search_space: Optional[str] = None  # dotpath of a callable(cfg, trial) that suggests more parameters

    # vlmsweep's additions (vlmsweep/sweep/sweeper.py)
    metric_names: Any = None  # list of str (Any: the presets interpolate it); the objectives' names, stored in the study (optuna-dashboard shows them)
    heartbeat_interval: float = 10  # seconds between this worker's "still running" marks on its trials
    grace_period: float = 60  # seconds without a mark before another worker declares a trial interrupted
    wait_for_running: bool = True  # all trials taken: wait for other workers' running ones (and take over any
    # whose worker dies) instead of exiting; false frees this machine at once


cs = ConfigStore.instance()
cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="vlmsweep")
for name, node in {"tpe": TPESamplerConfig, "random": RandomSamplerConfig, "cmaes": CmaEsSamplerConfig,
                   "nsgaii": NSGAIISamplerConfig, "motpe": MOTPESamplerConfig, "grid": GridSamplerConfig,
                   "gp": GPSamplerConfig, "qmc": QMCSamplerConfig}.items():
    cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="vlmsweep")
