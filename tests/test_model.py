"""The embedded model loads through the production from_pretrained path; the 2B shape is the real one."""

from __future__ import annotations

import torch
from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

from vlmsweep.model.tiny import CHAT_TEMPLATE, ensure_embedded_model, shape_config


def test_tiny_model_folder_loads_with_from_pretrained(tiny_path):
    model = Qwen2VLForConditionalGeneration.from_pretrained(tiny_path)
    processor = AutoProcessor.from_pretrained(tiny_path)
    assert type(processor).__name__ == "Qwen2VLProcessor"
    assert type(processor.image_processor).__name__.startswith("Qwen2VLImageProcessor")
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id == 151655
    n = sum(p.numel() for p in model.parameters())
    assert 15e6 < n < 30e6  # tied 151,936 x 128 embedding dominates
    assert processor.chat_template == CHAT_TEMPLATE


def test_cached_model_is_reused_and_identical(tiny_path, cache_dir):
    again = ensure_embedded_model("tiny", cache_dir)
    assert again == tiny_path
    a = Qwen2VLForConditionalGeneration.from_pretrained(tiny_path).state_dict()
    b = Qwen2VLForConditionalGeneration.from_pretrained(again).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_shape_config_is_the_2b_architecture():
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration._from_config(shape_config())
    n = sum(p.numel() for p in model.parameters())
    assert 2.1e9 < n < 2.3e9  # Qwen2-VL-2B: 2.21 B parameters with the tied embedding
    assert len(model.model.visual.blocks) == 32 and len(model.model.language_model.layers) == 28
