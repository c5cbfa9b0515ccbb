"""The typed Config a command line would build, outside a Hydra run (no run folder made)."""

from __future__ import annotations

from pathlib import Path

from vlmsweep.config import CONF_DIR, Config


PACKAGE_CONF = CONF_DIR


def compose(overrides: list[str], output_dir: str | Path = "unused") -> Config:
    """The typed Config `python -m vlmsweep OVERRIDES` would build, outside a Hydra run (no run folder made):
    for commands that read a run's options (memory, predict, export) and for tests."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    from vlmsweep.config import register_configs, to_config
    from vlmsweep.config.resolvers import register_resolvers

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(PACKAGE_CONF), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/") and v is not None}
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.output_dir = str(output_dir)
    return to_config(cfg, choices)
