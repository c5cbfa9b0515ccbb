"""The `scope` axis: anchored patterns pick the right modules; frozen weights stay, trainable ones move."""

from __future__ import annotations

import re

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from vlmsweep.config import LoraConfig, ModelConfig, QuantConfig, ScopeConfig
from vlmsweep.data import Record
from vlmsweep.model.load import attach_lora, load_base_model
from vlmsweep.model.scope import LLM, matched_modules, target_pattern, trainable_by_part
from vlmsweep.train.collator import Collator, masked_lm_loss

SCOPES = {
    "llm": ScopeConfig(name="llm", parts=["llm"]),
    "projector": ScopeConfig(name="projector", parts=["merger"]),
    "llm_projector": ScopeConfig(name="llm_projector", parts=["llm", "merger"]),
    "vision_last_n": ScopeConfig(name="vision_last_n", parts=["llm", "merger", "vision"], vision_last_n=1),
    "all": ScopeConfig(name="all", parts=["llm", "merger", "vision"]),
}
# which parts must carry trainable (LoRA) parameters under each scope
EXPECTED_PARTS = {
    "llm": {"llm"}, "projector": {"merger"}, "llm_projector": {"llm", "merger"},
    "vision_last_n": {"llm", "merger", "vision"}, "all": {"llm", "merger", "vision"},
}


def test_llm_pattern_never_catches_a_qwen2_5_vision_mlp():
    qwen25_vision = "model.visual.blocks.3.mlp.gate_proj"
    assert not re.fullmatch(LLM, qwen25_vision)
    assert re.fullmatch(LLM, "model.language_model.layers.11.mlp.gate_proj")
    assert re.fullmatch(target_pattern(SCOPES["all"], 32), qwen25_vision)
    assert not re.fullmatch(target_pattern(SCOPES["llm"], 32), "model.visual.merger.mlp.0")


def test_vision_last_n_selects_only_the_last_blocks(tiny_path):
    base = load_base_model(ModelConfig(name="tiny"), QuantConfig(name="fp32"), str(tiny_path))
    names = matched_modules(base, target_pattern(SCOPES["vision_last_n"], base.config.vision_config.depth))
    vision = [n for n in names if ".visual.blocks." in n]
    assert vision and all(n.startswith("model.visual.blocks.1.") for n in vision)
    assert {n for n in names if "merger" in n} == {"model.visual.merger.mlp.0", "model.visual.merger.mlp.2"}
    llm = [n for n in names if "language_model" in n]
    assert len(llm) == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)


def _batch(tiny_path, tmp_path):
    processor = AutoProcessor.from_pretrained(tiny_path)
    recs = []
    for i in range(2):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (112, 112), (255, 255 - 40 * i, 255)).save(path)
        recs.append(Record(id=str(i), image=path, domain="prescription_ko", target={"patient_id": f"1234{i}"},
                           image_domain="prescription_ko"))
    return Collator(processor, False, True, 4 * 784, 16 * 784, 512)(recs)


@pytest.mark.parametrize("scope", list(SCOPES))
def test_after_steps_frozen_weights_unchanged_and_trainable_changed(scope, tiny_path, tmp_path):
    base = load_base_model(ModelConfig(name="tiny"), QuantConfig(name="fp32"), str(tiny_path))
    model = attach_lora(base, SCOPES[scope], LoraConfig(r=4, alpha=8, dropout=0.0), seed=0)
    parts = trainable_by_part(model)
    assert {p for p, n in parts.items() if n > 0} == EXPECTED_PARTS[scope]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = _batch(tiny_path, tmp_path)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss = masked_lm_loss(model(**{k: v for k, v in batch.items() if k != "labels"}), batch["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad()
    for name, p in model.named_parameters():
        moved = not torch.equal(before[name], p.detach())
        if p.requires_grad:
            assert "lora_" in name
            if "lora_B" in name:  # B starts at zero: it must have moved; A moves once B is non-zero
                assert moved, name
        else:
            assert not moved, f"frozen {name} changed"
