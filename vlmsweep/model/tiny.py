"""The embedded models: a tiny random Qwen2-VL built locally, and the real 2B architecture's shape.

Both are real `Qwen2VLForConditionalGeneration` classes with the real Qwen2 vocabulary and the
Qwen2-VL processor, saved to a folder and loaded back through the same `from_pretrained(path)`
code that loads a released checkpoint, so the tiny model exercises the production path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from vlmsweep.model.tokenizer import build_qwen2_tokenizer

# Qwen2-VL's chat template with `{% generation %}` markers around the assistant answer and its
# <|im_end|>, so `return_assistant_tokens_mask=True` marks exactly what the loss should see. The
# marker cannot open in one `{% if %}` and close in another (jinja), so each role branch renders
# its content in full.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Released Qwen2-VL pads its embedding matrix to a multiple of 128 above the 151,657 used ids.
VOCAB_SIZE = 151936
SPECIAL_IDS = dict(
    bos_token_id=151643,
    eos_token_id=151645,
    pad_token_id=151643,
    vision_start_token_id=151652,
    vision_end_token_id=151653,
    vision_token_id=151654,
    image_token_id=151655,
    video_token_id=151656,
)

# Bump when anything that defines the embedded model changes: it names the cache folder.
TINY_VERSION = 2


def _qwen2_vl_config(text: dict, vision: dict) -> Qwen2VLConfig:
    """A Qwen2-VL config with the release's vocabulary, special ids, patching and tied embeddings."""
    text_ids = {k: SPECIAL_IDS[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    other_ids = {k: v for k, v in SPECIAL_IDS.items() if k not in text_ids}
    return Qwen2VLConfig(
        text_config=dict(vocab_size=VOCAB_SIZE, max_position_embeddings=32768, tie_word_embeddings=True, **text, **text_ids),
        vision_config=dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, hidden_act="quick_gelu", **vision),
        tie_word_embeddings=True,
        **other_ids,
    )


def tiny_config() -> Qwen2VLConfig:
    """~20 M parameters, almost all in the (tied) 151,936 x 128 embedding."""
    return _qwen2_vl_config(
        text=dict(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_window_layers=2,
            rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6], "rope_theta": 1e6},  # sums to head_dim/2
        ),
        # hidden_size = the text hidden size: the merger projects into the LLM
        vision=dict(depth=2, embed_dim=64, num_heads=4, mlp_ratio=2, hidden_size=128),
    )


def shape_config(**text_overrides) -> Qwen2VLConfig:
    """The real Qwen2-VL-2B-Instruct architecture (config.json of the release), for memory/speed.

    `text_overrides` reshape the LLM (the memory tests use a mid-size one); the merger follows it.
    """
    text = dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_window_layers=28,
        rms_norm_eps=1e-6,
        rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24], "rope_theta": 1e6},
    )
    text.update(text_overrides)
    return _qwen2_vl_config(
        text=text,
        vision=dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, hidden_size=text["hidden_size"]),
    )


ARCHITECTURES = {"tiny": tiny_config, "qwen2_vl_2b": shape_config}


def build_processor(min_pixels: int = 4 * 28 * 28, max_pixels: int = 1280 * 28 * 28) -> Qwen2VLProcessor:
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
    # The processor refuses video_processor=None (TypeError), even for image-only use.
    video_processor = Qwen2VLVideoProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=build_qwen2_tokenizer(),
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def save_random_model(config: Qwen2VLConfig, folder: Path, seed: int = 0, dtype=torch.float32) -> None:
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).to(dtype)
    model.generation_config.eos_token_id = SPECIAL_IDS["eos_token_id"]
    model.generation_config.pad_token_id = SPECIAL_IDS["pad_token_id"]
    model.generation_config.do_sample = False
    model.save_pretrained(folder)
    build_processor().save_pretrained(folder)


def ensure_embedded_model(
    architecture: str, cache_dir: Path | str, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Path:
    """Build the named embedded model once into the cache and return its folder.

    The folder name carries a hash of the config and TINY_VERSION; it is written to a temporary
    folder and renamed, so concurrent sweep workers never load a half-written model.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown embedded architecture {architecture!r}: expected one of {sorted(ARCHITECTURES)}")
    config = ARCHITECTURES[architecture]()
    key = hashlib.sha256(
        json.dumps([TINY_VERSION, seed, str(dtype), config.to_dict()], sort_keys=True, default=str).encode()
    ).hexdigest()[:12]
    cache_dir = Path(os.path.expanduser(str(cache_dir)))
    folder = cache_dir / "models" / f"{architecture}-{key}"
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{architecture}-", dir=folder.parent))
    try:
        save_random_model(config, tmp, seed=seed, dtype=dtype)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first
            if not (folder / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def ensure_tiny_model(cache_dir: Path | str) -> Path:
    return ensure_embedded_model("tiny", cache_dir)
