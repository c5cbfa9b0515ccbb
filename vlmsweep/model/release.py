"""The files of the released Qwen/Qwen2-VL-2B-Instruct folder (besides weights), as the release writes them.

The embedded model (`vlmsweep.model.tiny`) is written from these so that it is a replica of the
release, not a friendlier cousin: the transformers 4.x flat `config.json`, a chat template with no
`{% generation %}` markers, a generation config that samples, the release's image-processor budget.
A test compares every constant here with the release's files; nothing reads those at run time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmsweep import files

# The special-token ids every Qwen2-VL and Qwen2.5-VL release shares (the Qwen2 vocabulary's).
TOKEN_IDS = {
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
}

# chat_template.json, verbatim. No {% generation %} markers: an assistant-token mask built from it
# is all zeros (vlmsweep.train.template installs a training template proven identical to it).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: "
    "{% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# config.json in the transformers 4.x flat layout (text settings at the top level, rope_scaling,
# vision_config.in_chans / embed_dim). The sizes are the 2B's; `release_config` swaps in others.
CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    **TOKEN_IDS,
    "hidden_act": "silu",
    "hidden_size": 1536,
    "initializer_range": 0.02,
    "intermediate_size": 8960,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "model_type": "qwen2_vl",
    "num_attention_heads": 12,
    "num_hidden_layers": 28,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 32,
        "embed_dim": 1280,
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_chans": 3,
        "hidden_size": 1536,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 151936,
}

# generation_config.json, verbatim: it samples (do_sample true). Evaluation passes its own greedy config.
GENERATION_CONFIG: dict[str, Any] = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.0,
    "temperature": 0.01,
    "top_p": 0.001,
    "top_k": 1,
    "transformers_version": "4.37.0",
}

# preprocessor_config.json, verbatim: 4 to 16,384 visual tokens per image unless a run sets its budget.
PREPROCESSOR_CONFIG: dict[str, Any] = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2VLProcessor",
}

# The release's tokenizer_config.json as far as it is known (its exact bytes are not recorded): the
# slow-class name, no bos, eos <|im_end|>, pad <|endoftext|>, 32k context, the same chat template;
# the remaining keys are the ones every Qwen2 tokenizer config carries, at their Qwen2 values.
TOKENIZER_CONFIG: dict[str, Any] = {
    "add_prefix_space": False,
    "bos_token": None,
    "chat_template": CHAT_TEMPLATE,
    "clean_up_tokenization_spaces": False,
    "eos_token": "<|im_end|>",
    "errors": "replace",
    "model_max_length": 32768,
    "pad_token": "<|endoftext|>",
    "split_special_tokens": False,
    "tokenizer_class": "Qwen2Tokenizer",
    "unk_token": None,
}

# The 4.x config keys that carry sizes; everything else in a replica's config.json is the release's.
TEXT_SIZE_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "max_window_layers",
)
VISION_SIZE_KEYS = ("depth", "embed_dim", "mlp_ratio", "num_heads", "hidden_size")


def release_config(text: dict[str, Any], vision: dict[str, Any], mrope_section: list[int], dtype: str) -> dict:
    """The release's config.json with other sizes (and the dtype the weights are stored in)."""
    config = json.loads(json.dumps(CONFIG))
    unknown = (set(text) - set(TEXT_SIZE_KEYS)) | (set(vision) - set(VISION_SIZE_KEYS))
    if unknown:
        raise ValueError(f"release_config: {sorted(unknown)} are not size keys of the release's config.json")
    config.update(text)
    config["vision_config"].update(vision)
    config["rope_scaling"]["mrope_section"] = list(mrope_section)
    config["torch_dtype"] = dtype
    return config


def write_json(path: Path, obj: dict) -> None:
    """As the release's files are written: two-space indent, UTF-8 kept, no trailing newline (written aside and
    renamed, as every JSON file: files.write_json)."""
    files.write_json(path, obj, end="")
