"""The `quant` axis: nf4 really is 4-bit (bitsandbytes on the CPU), the vision tower stays out unless asked."""

from __future__ import annotations

import builtins

import pytest
import torch

from vlmsweep.config import ModelConfig, QuantConfig
from vlmsweep.model.load import load_base_model
from vlmsweep.model.quant import build_quantization

NF4 = QuantConfig(name="nf4", dtype="bfloat16", load_in_4bit=True)


def test_16_and_32_bit_need_no_quantization_config():
    assert build_quantization(QuantConfig(name="bf16", dtype="bfloat16")) is None


def test_nf4_config_is_double_quantized_and_keeps_vision_and_lm_head_out():
    q = build_quantization(NF4)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    assert q.llm_int8_skip_modules == ["model.visual", "lm_head"]
    q_all = build_quantization(QuantConfig(name="nf4", dtype="bfloat16", load_in_4bit=True, quantize_vision=True))
    assert q_all.llm_int8_skip_modules == ["lm_head"]


@pytest.mark.parametrize("quantize_vision", [False, True])
def test_nf4_model_is_4bit_where_it_should_be(tiny_path, quantize_vision):
    import bitsandbytes as bnb

    quant = QuantConfig(name="nf4", dtype="bfloat16", load_in_4bit=True, quantize_vision=quantize_vision)
    model = load_base_model(ModelConfig(name="tiny"), quant, str(tiny_path))
    llm_q = model.model.language_model.layers[0].self_attn.q_proj
    vision_qkv = model.model.visual.blocks[0].attn.qkv
    assert isinstance(llm_q, bnb.nn.Linear4bit)
    assert llm_q.weight.quant_state.quant_type == "nf4"
    assert isinstance(vision_qkv, bnb.nn.Linear4bit) == quantize_vision
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)


def test_nf4_without_bitsandbytes_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_bnb(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError("no module named bitsandbytes")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    with pytest.raises(ImportError, match="pip install 'bitsandbytes"):
        build_quantization(NF4)


@pytest.mark.parametrize("upcast,vision_dtype", [(True, torch.float32), (False, torch.bfloat16)])
def test_fp32_upcast_of_non_4bit_weights_is_an_option(tiny_path, upcast, vision_dtype):
    quant = QuantConfig(name="nf4", dtype="bfloat16", load_in_4bit=True, fp32_upcast=upcast)
    model = load_base_model(ModelConfig(name="tiny"), quant, str(tiny_path))
    assert model.model.visual.blocks[0].attn.qkv.weight.dtype == vision_dtype
    assert not any(p.requires_grad for p in model.parameters())  # frozen until LoRA is attached
