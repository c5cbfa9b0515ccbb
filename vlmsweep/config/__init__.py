"""Typed configuration: the schema (schema.py: one frozen dataclass per config section, each field with its default,
help and closed choices), its checks (checks.py: to_config), the config a command line builds (compose.py) and the
`${vlmsweep.*:...}` resolvers (resolvers.py).

Only the entry point sees a DictConfig; `to_config` turns it into `Config` at once and everything
below takes these dataclasses. Registering `Config` as the schema of `conf/config.yaml` makes a
typo or a wrong type fail when the config is composed, not in the middle of a run.
"""

from vlmsweep.config.checks import adapters_errors, check, choice_errors, range_errors, to_config
from vlmsweep.config.schema import (
    CONF_DIR,
    GROUPS,
    LOSS_IMPLS,
    PIXELS_PER_VISUAL_TOKEN,
    AdaptersConfig,
    Config,
    DataConfig,
    DataMixConfig,
    DecodingConfig,
    DomainTagConfig,
    EvalConfig,
    LoopConfig,
    LoraConfig,
    LossConfig,
    MaxPixelsConfig,
    ModelConfig,
    OcrHintConfig,
    PerturbConfig,
    QuantConfig,
    ScopeConfig,
    SweepConfig,
    TrackerConfig,
    TrainConfig,
    choices_of,
    config_dict,
    knob,
    pixel_budget,
    register_configs,
    schema,
    visual_tokens_to_pixels,
)

__all__ = [
    "CONF_DIR", "GROUPS", "LOSS_IMPLS", "PIXELS_PER_VISUAL_TOKEN", "AdaptersConfig", "Config", "DataConfig",
    "DataMixConfig", "DecodingConfig", "DomainTagConfig", "EvalConfig", "LoopConfig", "LoraConfig", "LossConfig",
    "MaxPixelsConfig", "ModelConfig", "OcrHintConfig", "PerturbConfig", "QuantConfig", "ScopeConfig", "SweepConfig", "TrackerConfig",
    "TrainConfig", "adapters_errors", "check", "choice_errors", "choices_of", "config_dict", "knob", "pixel_budget",
    "range_errors", "register_configs", "schema", "to_config", "visual_tokens_to_pixels",
]
