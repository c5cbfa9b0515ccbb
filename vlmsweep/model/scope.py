"""The `scope` axis: which parts of Qwen2-VL get LoRA adapters, as anchored module-name patterns."""

from __future__ import annotations

import re
from collections import Counter

from torch import nn

from vlmsweep.config import ScopeConfig

# Anchored on the full module name (peft full-matches a string `target_modules`), so the LLM
# pattern can never catch Qwen2.5-VL's vision MLP, which also has gate/up/down_proj.
LLM = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
MERGER = r"model\.visual\.merger\.mlp\.(0|2)"
# Qwen2-VL vision blocks: attn.qkv/attn.proj + mlp.fc1/fc2; Qwen2.5-VL: mlp.gate/up/down_proj.
VISION_LAYERS = r"(attn\.(qkv|proj)|mlp\.(fc1|fc2|gate_proj|up_proj|down_proj))"


def vision_blocks_pattern(depth: int, last_n: int) -> str:
    if last_n <= 0 or last_n >= depth:
        blocks = r"\d+"
    else:
        blocks = "(" + "|".join(str(i) for i in range(depth - last_n, depth)) + ")"
    return rf"model\.visual\.blocks\.{blocks}\.{VISION_LAYERS}"


def target_pattern(scope: ScopeConfig, vision_depth: int) -> str:
    parts = []
    if "llm" in scope.parts:
        parts.append(LLM)
    if "merger" in scope.parts:
        parts.append(MERGER)
    if "vision" in scope.parts:
        parts.append(vision_blocks_pattern(vision_depth, scope.vision_last_n))
    return "(" + "|".join(f"({p})" for p in parts) + ")"


def matched_modules(model: nn.Module, pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [name for name, _ in model.named_modules() if rx.fullmatch(name)]


def part_of(name: str) -> str:
    """The part a parameter belongs to, for per-part trainable counts."""
    if ".visual.merger." in f".{name}":
        return "merger"
    if ".visual." in f".{name}":
        return "vision"
    return "llm"


def trainable_by_part(model: nn.Module) -> dict[str, int]:
    counts: Counter[str] = Counter({"vision": 0, "merger": 0, "llm": 0})
    for name, p in model.named_parameters():
        if p.requires_grad:
            counts[part_of(name)] += p.numel()
    return dict(counts)
