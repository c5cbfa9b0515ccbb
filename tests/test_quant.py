"""The `quant` axis: nf4 really is 4-bit (bitsandbytes on the CPU), the vision tower stays out unless asked;
the pre-quantized replica decides its own 4-bit layout; precision and device follow the hardware."""

from __future__ import annotations

import builtins
import json
import logging
import re

import pytest
import torch

from vlmsweep.config import ModelConfig, QuantConfig
from vlmsweep.model.load import check_precision, check_prequantized, device, four_bit_by_part, load_base_model
from vlmsweep.model.quant import build_quantization
from vlmsweep.model.tiny import TINY_BNB4_SKIP

NF4 = QuantConfig(name="nf4", dtype="bfloat16", load_in_4bit=True, cpu_bf16="keep")


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
    quant = QuantConfig(name="nf4", dtype="bfloat16", load_in_4bit=True, fp32_upcast=upcast, cpu_bf16="keep")
    model = load_base_model(ModelConfig(name="tiny"), quant, str(tiny_path))
    assert model.model.visual.blocks[0].attn.qkv.weight.dtype == vision_dtype
    assert not any(p.requires_grad for p in model.parameters())  # frozen until LoRA is attached


# --- the pre-quantized replica (model=tiny_bnb4) ---------------------------------------------------

PREQUANTIZED = ModelConfig(name="tiny_bnb4", source="tiny", path="tiny_bnb4", prequantized=True)


@pytest.fixture(scope="module")
def bnb4_path(cache_dir):
    from vlmsweep.model.tiny import ensure_embedded_model

    return ensure_embedded_model("tiny_bnb4", cache_dir)


def test_prequantized_replica_holds_packed_4bit_weights_and_its_own_skip_list(bnb4_path):
    from safetensors import safe_open

    saved = json.loads((bnb4_path / "config.json").read_text())
    q = saved["quantization_config"]
    assert q["quant_method"] == "bitsandbytes" and q["load_in_4bit"] and q["bnb_4bit_quant_type"] == "nf4"
    assert q["llm_int8_skip_modules"] == TINY_BNB4_SKIP and "text_config" not in saved  # still the release layout
    with safe_open(str(bnb4_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("model.layers.0.self_attn.q_proj.weight").dtype == torch.uint8  # packed nibbles
    assert "model.layers.0.self_attn.q_proj.weight.absmax" in keys or any(".quant_state." in k for k in keys)
    assert not any(k.startswith("visual.blocks.0.attn.qkv.weight.") for k in keys)  # skipped: full precision


def test_prequantized_load_logs_4bit_per_part_as_the_skip_list_says(bnb4_path, caplog):
    import bitsandbytes as bnb

    with caplog.at_level(logging.INFO, logger="vlmsweep.model.load"):
        model = load_base_model(PREQUANTIZED, NF4, str(bnb4_path))
    assert isinstance(model.model.language_model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    parts = four_bit_by_part(model)
    # skip list ["model.visual", "lm_head"]: no 4-bit in vision or merger, all LLM linears but lm_head
    assert parts["vision"][0] == 0 and parts["merger"][0] == 0
    assert parts["llm"] == (parts["llm"][1] - 1, parts["llm"][1]) and parts["llm"][1] > 1
    line = next(r.getMessage() for r in caplog.records if "4-bit linear layers per part" in r.getMessage())
    assert f"vision 0/{parts['vision'][1]}" in line and f"llm {parts['llm'][0]}/{parts['llm'][1]}" in line


def test_quant_options_that_disagree_with_the_checkpoint_are_warned(bnb4_path, caplog):
    fp4_vision = QuantConfig(name="nf4", dtype="bfloat16", load_in_4bit=True, quant_type="fp4", quantize_vision=True)
    with caplog.at_level(logging.WARNING, logger="vlmsweep.model.load"):
        check_prequantized(PREQUANTIZED, fp4_vision, str(bnb4_path))
        check_prequantized(PREQUANTIZED, NF4, str(bnb4_path))  # agrees: nothing more
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "quant.quant_type=fp4, the checkpoint holds nf4" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vlmsweep.model.load"):  # judged from the loaded modules
        load_base_model(PREQUANTIZED, fp4_vision, str(bnb4_path))
    assert any("quant.quantize_vision=true, but the checkpoint holds its vision tower in 16-bit" in r.getMessage()
               for r in caplog.records)


def rewritten(bnb4_path, tmp_path, skip: list[str]):
    """A copy of the pre-quantized replica whose config.json lists `skip` (its saved tensors unchanged)."""
    import shutil

    folder = tmp_path / "bnb4"
    shutil.copytree(bnb4_path, folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"]["llm_int8_skip_modules"] = skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# The spellings a pre-quantized Qwen2-VL's skip list comes in: 4.x names (transformers 5 matches them from the start
# of a 5.x name or as a suffix, and renames none), 5.x names, an unsloth-style list naming the merger and no tower,
# single vision blocks. The replica's tensors keep the whole tower in 16-bit in every case.
SPELLINGS = {
    "4.x": ["visual", "lm_head"],
    "5.x": ["model.visual", "lm_head"],
    "unsloth": ["lm_head", "multi_modal_projector", "merger", "modality_projection"],
    "blocks": ["visual.blocks.0", "visual.blocks.1", "visual.merger.mlp.0", "visual.merger.mlp.2", "lm_head"],
}


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_skip_list_in_any_spelling_loads_the_vision_tower_as_saved(bnb4_path, tmp_path, spelling):
    folder = rewritten(bnb4_path, tmp_path, SPELLINGS[spelling])
    model = load_base_model(PREQUANTIZED, NF4, str(folder))
    parts = four_bit_by_part(model)
    assert parts["vision"][0] == 0 and parts["merger"][0] == 0 and parts["llm"][0] == parts["llm"][1] - 1
    qkv = model.model.visual.blocks[0].attn.qkv
    assert type(qkv) is torch.nn.Linear and qkv.weight.dtype == torch.float32  # fp32_upcast: 16-bit, then fp32
    grid = torch.tensor([[1, 4, 4]])  # 16 patches of 3 x 2 x 14 x 14 values: the tower's forward runs
    with torch.no_grad():
        model.model.visual(torch.randn(16, 3 * 2 * 14 * 14), grid_thw=grid)


def test_a_4bit_vision_tower_or_a_4bit_layer_of_plain_weights_fails_in_one_line(bnb4_path, tmp_path):
    from vlmsweep.model.load import check_four_bit_parts

    with pytest.raises(ValueError, match=r"model\.visual\.blocks\.0\.attn\.qkv .*4-bit.*quant\.quantize_vision=false.*"
                                         r"model=qwen2_vl_2b quant=nf4"):
        check_four_bit_parts(load_base_model(ModelConfig(name="tiny"), NF4_VISION, str(tiny_of(bnb4_path))),
                             NF4, prequantized=True)
    # the parent's failure: a 4.x list loaded as written leaves plain weights in Linear4bit layers
    from transformers import Qwen2VLForConditionalGeneration

    folder = rewritten(bnb4_path, tmp_path, ["visual", "lm_head"])
    broken = Qwen2VLForConditionalGeneration.from_pretrained(folder, device_map={"": "cpu"})
    with pytest.raises(ValueError, match=r"model\.visual\.blocks\.0\.attn\.qkv was loaded as a 4-bit layer but holds "
                                         r"torch\.bfloat16 weights.*llm_int8_skip_modules"):
        check_four_bit_parts(broken, NF4, prequantized=True)


def tiny_of(bnb4_path):
    from vlmsweep.model.tiny import ensure_tiny_model

    return ensure_tiny_model(bnb4_path.parent.parent)


NF4_VISION = QuantConfig(name="nf4", dtype="bfloat16", load_in_4bit=True, cpu_bf16="keep", quantize_vision=True)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_the_4bit_layers_of_a_prequantized_checkpoint_compute_in_quant_dtype(bnb4_path, dtype):
    # the replica saved bnb_4bit_compute_dtype=bfloat16, as unsloth's does; a T4 asks for float16
    quant = QuantConfig(name="nf4", dtype=dtype, load_in_4bit=True)
    model = load_base_model(PREQUANTIZED, quant, str(bnb4_path))
    assert model.model.language_model.layers[0].self_attn.q_proj.compute_dtype == getattr(torch, dtype)


def test_prequantized_flag_must_match_the_checkpoint(bnb4_path, tiny_path):
    with pytest.raises(ValueError, match="set model.prequantized=true"):
        check_prequantized(ModelConfig(name="tiny_bnb4"), NF4, str(bnb4_path))
    with pytest.raises(ValueError, match="no quantization_config"):
        check_prequantized(PREQUANTIZED, NF4, str(tiny_path))


@pytest.mark.parametrize("quant,fix", [(QuantConfig(name="bf16", dtype="bfloat16"), "quant=fp16"), (NF4, "quant.dtype=float16")])
def test_bf16_on_a_card_without_it_names_the_fp16_option(monkeypatch, quant, fix):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    with pytest.raises(ValueError, match=f"Tesla T4 does not support: use {re.escape(fix)}"):
        check_precision(quant)
    check_precision(QuantConfig(name="fp16", dtype="float16"))  # fp16 is fine there


def test_each_rank_loads_onto_its_local_rank_device(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert device() == torch.device("cuda", 3) and chosen == [3]


def test_bf16_computes_in_float32_on_any_cpu_unless_kept(monkeypatch, caplog):
    from vlmsweep.config import QuantConfig
    from vlmsweep.model import quant as q

    bf16 = QuantConfig(name="bf16", dtype="bfloat16")
    monkeypatch.setattr(q.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(q, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(q, "_warned", [])
    with caplog.at_level("WARNING"):
        assert q.torch_dtype(bf16) is q.torch.float32
    assert "no native bfloat16" in caplog.text and "quant.cpu_bf16=keep" in caplog.text
    assert q.torch_dtype(QuantConfig(name="bf16", dtype="bfloat16", cpu_bf16="keep")) is q.torch.bfloat16
    assert q.torch_dtype(QuantConfig(name="fp32", dtype="float32")) is q.torch.float32
    monkeypatch.setattr(q, "cpu_has_native_bf16", lambda: True)  # native bf16: still float32, for another reason
    monkeypatch.setattr(q, "_warned", [])
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert q.torch_dtype(bf16) is q.torch.float32
    assert "natively" in caplog.text and "same numbers on every CPU" in caplog.text
    assert q.torch_dtype(QuantConfig(name="bf16", dtype="bfloat16", cpu_bf16="keep")) is q.torch.bfloat16
    monkeypatch.setattr(q.torch.cuda, "is_available", lambda: True)  # a GPU gets what the option asks for
    assert q.torch_dtype(bf16) is q.torch.bfloat16
