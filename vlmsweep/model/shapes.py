"""Model families and the architectures of the releases the model options name, without weights: the class of
each family, and what a memory estimate needs on a machine that has not downloaded them (model=qwen2_5_vl_3b)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vlmsweep.config import ModelConfig
from vlmsweep.model.release import TOKEN_IDS

MODEL_CLASSES = {"qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}

# Qwen/Qwen2.5-VL-3B-Instruct config.json (the release's 4.x flat layout, sizes only; token ids as Qwen2-VL's).
QWEN2_5_VL_3B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "model_type": "qwen2_5_vl",
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "max_window_layers": 70,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "max_position_embeddings": 128000,
    "tie_word_embeddings": True,
    "vocab_size": 151936,
    **TOKEN_IDS,
    "torch_dtype": "bfloat16",
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
}


def model_class(model: ModelConfig):
    """The transformers class of a model option's family."""
    import transformers

    return getattr(transformers, MODEL_CLASSES[model.family])


def parse(flat: dict) -> Any:
    """A config.json dict as `from_pretrained` reads it, for its model_type (qwen2_vl, qwen2_5_vl)."""
    from transformers import CONFIG_MAPPING

    model_type = flat.get("model_type")
    if model_type not in ("qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"config model_type={model_type!r}: vlmsweep knows qwen2_vl and qwen2_5_vl")
    return CONFIG_MAPPING[model_type].from_dict(json.loads(json.dumps(flat)))


def released() -> dict[str, Any]:
    """Hub id -> its architecture, for the releases the model options name."""
    from vlmsweep.model.tiny import shape_config

    two_b = shape_config
    return {
        "Qwen/Qwen2-VL-2B-Instruct": two_b,
        "unsloth/Qwen2-VL-2B-Instruct-bnb-4bit": two_b,
        "Qwen/Qwen2.5-VL-3B-Instruct": lambda: parse(QWEN2_5_VL_3B),
    }


def model_config_of(model: ModelConfig) -> Any:
    """The transformers config of a model option, reading no weights: the embedded architectures, a local
    folder's config.json, or a known release's architecture (no download)."""
    from vlmsweep.model.tiny import shape_config, tiny_config

    match model.source:
        case "tiny":
            return tiny_config()  # tiny, tiny_bnb4, tiny_warm and tiny_reader share the architecture
        case "shape":
            return shape_config()
        case "pretrained":
            path = Path(os.path.expanduser(model.path or ""))
            if (path / "config.json").is_file():
                return parse(json.loads((path / "config.json").read_text(encoding="utf-8")))
            known = released()
            if model.path in known:
                return known[model.path]()
            raise FileNotFoundError(
                f"model.path={model.path}: no config.json there and not a release vlmsweep knows "
                f"({', '.join(sorted(known))}); pass model.path=FOLDER of a downloaded checkpoint")
    raise ValueError(f"model.source={model.source!r}")
