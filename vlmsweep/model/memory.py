"""Peak accelerator-memory estimate of a training config, for Qwen2-VL and Qwen2.5-VL (read from the model config).

`python -m vlmsweep.memory OVERRIDES` prints it for the config `python -m vlmsweep OVERRIDES` would train.
Measuring a step: vlmsweep.train.peak (during a run), benchmarks/memory_harness.py (estimate vs measured).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch/transformers only at call time: `python -m vlmsweep.memory` stays light to import
    from vlmsweep.config import Config

GiB = 1024**3

# bitsandbytes 4-bit storage, blocksize 64 (bnb's default for 4-bit): 4 bits per weight plus one absmax
# per block. Without double quant the absmax is fp32: 4 + 32/64 = 4.5 bits. With double quant the absmax
# is itself 8-bit quantized in blocks of 256 with one fp32 scale each: 4 + 8/64 + 32/(64*256) ~ 4.127 bits.
NF4_BLOCK = 64
NF4_DQ_BLOCK = 256


def nf4_bits_per_param(double_quant: bool) -> float:
    if double_quant:
        return 4 + 8 / NF4_BLOCK + 32 / (NF4_BLOCK * NF4_DQ_BLOCK)
    return 4 + 32 / NF4_BLOCK


DTYPE_BYTES = {"nf4": 2, "bf16": 2, "fp16": 2, "fp32": 4}  # bytes of the non-4-bit weights / compute dtype

# Module names in transformers 5 (FACTS.md), the same for Qwen2-VL and Qwen2.5-VL. Which Linear layers get
# LoRA comes from the scope axis (vlmsweep.model.scope.target_pattern), the very patterns a run gives peft.
_GROUPS = (  # (group label, name prefix) in table order; the first matching prefix wins
    ("vision.patch_embed", "model.visual.patch_embed"),
    ("vision.blocks", "model.visual.blocks"),
    ("vision.merger", "model.visual.merger"),
    ("llm.embed_tokens", "model.language_model.embed_tokens"),
    ("llm.layers", "model.language_model.layers"),
    ("llm.norm", "model.language_model.norm"),
    ("lm_head", "lm_head"),
)


@dataclass(frozen=True)
class _Param:
    name: str  # parameter name
    module: str  # owning module name
    numel: int
    linear_weight: bool  # weight of an nn.Linear: what bitsandbytes turns into 4-bit, and what LoRA can adapt
    group: str
    block: int | None  # vision block index, for vision_last_n
    linear_in: int = 0  # an nn.Linear weight's in/out features (LoRA adds r * (in + out))
    linear_out: int = 0


def family(model_config_hf: Any) -> str:
    """qwen2_vl or qwen2_5_vl, from the transformers config (its model_type), as model.family names them."""
    model_type = getattr(model_config_hf, "model_type", None)
    if model_type not in ("qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"model_type={model_type!r}: the memory estimate knows qwen2_vl and qwen2_5_vl")
    return model_type


@lru_cache(maxsize=8)
def _params_of(config_json: str) -> tuple[_Param, ...]:
    """Parameter inventory of the model built on the meta device (no memory, no weights, ~0.1 s for 2B)."""
    import json

    import torch
    import transformers

    from vlmsweep.model.shapes import MODEL_CLASSES

    config_dict = json.loads(config_json)
    config = transformers.CONFIG_MAPPING[config_dict["model_type"]].from_dict(config_dict)
    with torch.device("meta"):
        model = getattr(transformers, MODEL_CLASSES[family(config)])._from_config(config)
    out = []
    seen: set[int] = set()  # a tied lm_head shares embed_tokens' Parameter: count it once
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            group = next((g for g, prefix in _GROUPS if full.startswith(prefix + ".")), "other")
            m = re.match(r"^model\.visual\.blocks\.(\d+)\.", full)
            is_linear = isinstance(module, torch.nn.Linear) and p_name == "weight"
            out.append(
                _Param(
                    name=full,
                    module=mod_name,
                    numel=p.numel(),
                    linear_weight=is_linear,
                    group=group,
                    block=int(m.group(1)) if m else None,
                    linear_in=module.in_features if is_linear else 0,
                    linear_out=module.out_features if is_linear else 0,
                )
            )
    return tuple(out)


def param_counts(model_config_hf: Any) -> dict[str, int]:
    """Parameters per module group (vision.blocks, llm.layers, ...), tied weights counted once."""
    counts: dict[str, int] = {g: 0 for g, _ in _GROUPS}
    for p in _params_of(model_config_hf.to_json_string(use_diff=False)):
        counts[p.group] = counts.get(p.group, 0) + p.numel
    return counts


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per component of a training step's peak. From step 2 on, the optimizer states live through
    forward and backward; the peak is either late in backward (activations not yet freed while gradients
    fill up -- counted as all of both, an upper-side estimate) or inside optimizer.step()."""

    weights_bytes: int
    lora_params: int
    lora_bytes: int
    trainable_params: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    logits_bytes: int
    tied_grad_bytes: int  # transient in backward (full fine-tune of tied embeddings)
    optimizer_step_bytes: int  # transient in optimizer.step(), when activations are already freed
    total_bytes: int  # weights + LoRA + grads + states + max(activations + logits + tied grad, step temp)
    weights_by_precision: dict[str, int] = field(default_factory=dict)  # "nf4" / "16-bit" / "fp32" -> bytes
    activations_by_part: dict[str, int] = field(default_factory=dict)  # llm / vision / merger -> bytes
    params_by_group: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self, title: str = "memory estimate") -> str:
        rows = [
            ("weights", self.weights_bytes, ", ".join(f"{k} {_gib(v)}" for k, v in self.weights_by_precision.items() if v)),
            ("LoRA weights", self.lora_bytes, f"{self.lora_params / 1e6:.2f} M params" if self.lora_params else "full fine-tune" if self.trainable_params else ""),
            ("gradients", self.gradients_bytes, f"{self.trainable_params / 1e6:.2f} M trainable params"),
            ("optimizer", self.optimizer_bytes, str(self.settings.get("optimizer", ""))),
            ("activations", self.activations_bytes, ", ".join(f"{k} {_gib(v)}" for k, v in self.activations_by_part.items() if v)),
            ("logits", self.logits_bytes, _logits_note(self.settings)),
            ("transients", max(self.tied_grad_bytes, self.optimizer_step_bytes), "tied-embedding grad / optimizer step (peak takes the larger phase)"),
            ("total", self.total_bytes, ""),
        ]
        lines = [title, f"{'component':<14} {'GiB':>8}  note"]
        lines += [f"{name:<14} {value / GiB:>8.3f}  {note}" for name, value, note in rows]
        return "\n".join(lines)


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


def _logits_note(s: dict[str, Any]) -> str:
    rows = s.get("logits_rows")
    at_once = f", {rows} at a time" if s.get("loss_impl") in ("chunked", "liger") else ""
    return f"{s.get('supervised_tokens')} supervised tokens per sample, loss_impl={s.get('loss_impl')}{at_once}"


def liger_chunk_rows(rows: int, vocab: int, hidden: int) -> int:
    """Rows of logits Liger-Kernel's fused linear cross-entropy computes at once (its own rule, liger_kernel.ops.
    fused_linear_cross_entropy): about rows / ceil(vocab / hidden), rounded up to a power of two, so that a chunk's
    logits are about as large as the hidden states."""
    inc = -(-vocab // hidden)
    return min(rows, 1 << max(0, math.ceil(math.log2(max(1, -(-rows // inc))))))


def logits_bytes(loss_impl: str, rows: int, vocab: int, hidden: int, compute_bytes: int, chunk: int,
                 output_layer_trained: bool = False) -> int:
    """Peak bytes of the output layer + cross-entropy over `rows` supervised tokens (vlmsweep.train.loss).

    eager: all rows' logits at once; per element the compute-dtype logits, the fp32 copy for the loss,
    log-softmax's saved output, and in backward the fp32 gradient, softmax's exp temporary and the gradient cast
    back (measured on the CPU: ~20 bytes per element in fp32, ~18 in bf16).
    chunked: `chunk` rows at a time, two fp32 (rows, vocab) buffers (logits, log-probabilities): 8 bytes per
    element; the gradient of the hidden states (rows, hidden) is kept for backward.
    liger: Liger's chunk of logits in the compute dtype, the gradient written in place, plus the hidden gradient.
    cce: no vocabulary-wide buffer (blocks stay in on-chip memory): the hidden gradient and two fp32 per row.
    A trained output layer (full fine-tune) adds, for chunked and liger, its fp32 gradient accumulator.
    """
    grad_hidden = rows * hidden * compute_bytes
    accumulator = vocab * hidden * 4 if output_layer_trained else 0
    match loss_impl:
        case "eager":
            return rows * vocab * (compute_bytes + 16)
        case "chunked":
            return min(chunk, rows) * vocab * 8 + grad_hidden + accumulator
        case "liger":
            return liger_chunk_rows(rows, vocab, hidden) * vocab * compute_bytes + grad_hidden + accumulator
        case "cce":
            return grad_hidden + rows * 8
    raise ValueError(f"loss_impl={loss_impl!r}: expected one of eager, chunked, liger, cce")


def estimate(
    model_config_hf: Any,
    *,
    quant: str,
    quantize_vision: bool = False,
    trainable_parts: list[str] | tuple[str, ...] = ("llm",),
    vision_last_n: int = 0,
    lora_r: int = 16,
    batch_size: int = 1,
    text_tokens: int = 300,
    visual_tokens: int = 1024,
    grad_checkpointing: bool = True,
    optimizer: str = "adamw",
    supervised_tokens: int | None = None,
    lora_dropout: float = 0.05,
    double_quant: bool = True,
    kbit_fp32_upcast: bool = True,
    attn_implementation: str = "sdpa",
    loss_impl: str = "chunked",
    loss_chunk: int = 128,
) -> MemoryEstimate:
    """Peak memory of one training step.

    lora_r=0 means a full fine-tune of `trainable_parts`. visual_tokens are per image (one image per
    sample), counted after the 2x2 merge; the LLM sequence is text_tokens + visual_tokens. Logits are
    computed only at the `supervised_tokens` answer positions (our trainer does that; default: all
    text_tokens), and with `loss_impl` other than eager only `loss_chunk` rows of them at a time
    (`logits_bytes`). `kbit_fp32_upcast`: peft's prepare_model_for_kbit_training casts every non-4-bit
    parameter (vision tower, embeddings, norms, biases) to fp32 -- a large share of a QLoRA run's weights.
    Not counted: the CUDA context, allocator fragmentation, the processor and data.
    """
    if quant not in DTYPE_BYTES:
        raise ValueError(f"quant={quant!r}: expected one of {sorted(DTYPE_BYTES)}")
    unknown = set(trainable_parts) - {"llm", "merger", "vision"}
    if unknown:
        raise ValueError(f"trainable_parts={list(trainable_parts)}: choose from llm, merger, vision")
    if optimizer not in _OPTIMIZER_STATE_BYTES:
        raise ValueError(f"optimizer={optimizer!r}: expected one of {sorted(_OPTIMIZER_STATE_BYTES)}")
    family(model_config_hf)  # an architecture the estimate does not know fails here, by name
    params = _params_of(model_config_hf.to_json_string(use_diff=False))
    text_cfg = model_config_hf.text_config
    vis_cfg = model_config_hf.vision_config
    depth = vis_cfg.depth
    first_trainable_block = depth - vision_last_n if 0 < vision_last_n <= depth else 0
    compute_bytes = DTYPE_BYTES[quant]  # activations dtype (nf4 computes in 16-bit)

    def in_part(p: _Param) -> bool:
        """Parameter belongs to a trainable part (for a full fine-tune; LoRA uses the scope's patterns)."""
        if p.group.startswith("llm") or p.group == "lm_head":
            return "llm" in trainable_parts
        if p.group == "vision.merger":
            return "merger" in trainable_parts
        if p.group == "vision.blocks":
            return "vision" in trainable_parts and p.block is not None and p.block >= first_trainable_block
        if p.group == "vision.patch_embed":
            return "vision" in trainable_parts and first_trainable_block == 0
        return False

    # -- weights
    by_precision = {"nf4": 0, "16-bit": 0, "fp32": 0}
    for p in params:
        vision = p.group.startswith("vision")
        quantized = quant == "nf4" and p.linear_weight and p.group != "lm_head" and (quantize_vision or not vision)
        if quant == "nf4" and p.group == "vision.patch_embed":
            quantized = False  # a Conv3d: bitsandbytes only replaces nn.Linear
        if quantized:
            by_precision["nf4"] += math.ceil(p.numel * nf4_bits_per_param(double_quant) / 8)
        elif quant == "fp32" or (quant == "nf4" and kbit_fp32_upcast):
            by_precision["fp32"] += p.numel * 4
        else:
            by_precision["16-bit"] += p.numel * 2
    weights_bytes = sum(by_precision.values())

    # -- trainable parameters, gradients, optimizer states
    lora_params = 0
    trainable = 0
    grad_bytes = 0
    state_param_bytes = 0  # bytes of the trainable params the optimizer keeps states for
    if lora_r > 0:
        from vlmsweep.config import ScopeConfig
        from vlmsweep.model.scope import target_pattern

        scope = ScopeConfig(name="estimate", parts=list(trainable_parts), vision_last_n=vision_last_n)
        targets = re.compile(target_pattern(scope, depth))
        for p in params:
            if p.linear_weight and targets.fullmatch(p.module):
                lora_params += lora_r * (p.linear_in + p.linear_out)
        trainable = lora_params
        # peft upcasts adapter weights to fp32 (get_peft_model(autocast_adapter_dtype=True)); grads follow.
        lora_bytes = lora_params * 4
        grad_bytes = lora_params * 4
        state_param_bytes = lora_params * 4
    else:
        lora_bytes = 0
        weight_bytes_each = 4 if quant == "fp32" else 2
        if quant == "nf4":
            raise ValueError("quant=nf4 with lora_r=0: 4-bit weights cannot be fully fine-tuned; use LoRA (lora_r > 0)")
        for p in params:
            if in_part(p):
                trainable += p.numel
        grad_bytes = trainable * weight_bytes_each  # torch keeps a grad in the param's dtype
        state_param_bytes = trainable * weight_bytes_each
    optimizer_bytes = int(state_param_bytes * _OPTIMIZER_STATE_BYTES[optimizer])

    # -- activations
    supervised = text_tokens if supervised_tokens is None else supervised_tokens
    seq = text_tokens + visual_tokens
    tokens = batch_size * seq
    lora_cast = lora_r > 0 and compute_bytes != 4  # peft casts a 16-bit input to the fp32 adapter dtype
    per_lora_input = (4 if (lora_cast or lora_dropout > 0) else 0) + (1 if lora_dropout > 0 else 0)

    h = text_cfg.hidden_size
    heads = text_cfg.num_attention_heads
    kv = text_cfg.num_key_value_heads * (h // heads)
    inter = text_cfg.intermediate_size
    n_layers = text_cfg.num_hidden_layers
    llm_lora = lora_r > 0 and "llm" in trainable_parts
    layer_tok = _decoder_layer_bytes(h, kv, inter, heads, seq, compute_bytes, attn_implementation)
    if llm_lora:  # each adapted projection keeps its (fp32, dropped-out) input and the r-dim hidden
        layer_tok += per_lora_input * (6 * h + inter) + 7 * lora_r * 4
    # Anything trainable needs the LLM's backward, so the LLM always stores activations.
    if grad_checkpointing:
        # Checkpointed layers keep only their input; one layer is recomputed at a time during backward.
        llm_act = tokens * (n_layers * h * compute_bytes + layer_tok)
    else:
        llm_act = tokens * n_layers * layer_tok
    llm_act += tokens * h * compute_bytes * 2  # embeddings output + final norm output

    # Vision tower: Qwen2-VL blocks are LayerNorm + a GELU MLP (fc1/fc2) of width embed_dim * mlp_ratio;
    # Qwen2.5-VL blocks are RMSNorm + a SwiGLU MLP (gate/up/down_proj) of width intermediate_size.
    gated = family(model_config_hf) == "qwen2_5_vl"
    e = vis_cfg.hidden_size if gated else vis_cfg.embed_dim
    mlp = vis_cfg.intermediate_size if gated else int(e * vis_cfg.mlp_ratio)
    merge = vis_cfg.spatial_merge_size**2
    patches = batch_size * visual_tokens * merge  # patches before the 2x2 merge
    vision_stores = "vision" in trainable_parts
    block_patch = _vision_block_bytes(e, mlp, vis_cfg.num_heads, visual_tokens * merge, compute_bytes, attn_implementation,
                                      gated)
    vision_lora = lora_r > 0 and vision_stores
    if vision_lora:  # adapted inputs: qkv, proj and the MLP's (fc1, fc2 | gate, up, down); one r-dim hidden each
        mlp_inputs = (2 * e + mlp) if gated else (e + mlp)
        block_patch += per_lora_input * (2 * e + mlp_inputs) + (5 if gated else 4) * lora_r * 4
    if vision_stores:
        n_blocks = depth - first_trainable_block
        if grad_checkpointing:
            vision_act = patches * (n_blocks * e * compute_bytes + block_patch)
        else:
            vision_act = patches * n_blocks * block_patch
    else:
        # no graph is kept: one block's working set at a time. True under gradient checkpointing too since the
        # frozen tower runs under no_grad (vlmsweep.train.trainer.frozen_towers_without_graph); before, the Trainer's
        # input-grad hook on visual.patch_embed kept every block's checkpoint input and recomputed the blocks.
        vision_act = patches * block_patch
    merger_stores = vision_stores or "merger" in trainable_parts
    # merger: ln_q over the patches, then Linear(4e,4e) -> GELU -> Linear(4e,h) per visual token.
    merger_tok = compute_bytes * (merge * e * 2 + 4 * merge * e) + (per_lora_input * 2 * merge * e if lora_r > 0 and "merger" in trainable_parts else 0)
    merger_act = batch_size * visual_tokens * merger_tok if merger_stores else 0

    # Logits at the supervised positions only, all at once (eager) or a chunk at a time (logits_bytes).
    output_trained = lora_r == 0 and "llm" in trainable_parts
    rows = batch_size * supervised
    logits = logits_bytes(loss_impl, rows, text_cfg.vocab_size, h, compute_bytes, loss_chunk, output_trained)
    activations = int(llm_act + vision_act + merger_act)
    # Transients. Tied embeddings trained in full get two full-size gradients (from lm_head and from the
    # lookup) before autograd sums them. Foreach AdamW holds one trainable-sized temporary (sqrt of the
    # second moment) during step(), when the activations are already freed.
    tied = bool(getattr(text_cfg, "tie_word_embeddings", False) or getattr(model_config_hf, "tie_word_embeddings", False))
    tied_grad_bytes = 0
    if lora_r == 0 and tied and "llm" in trainable_parts:
        tied_grad_bytes = text_cfg.vocab_size * h * (4 if quant == "fp32" else 2)
    step_bytes = state_param_bytes if optimizer == "adamw" else 0
    backward_phase = activations + logits + tied_grad_bytes

    total = weights_bytes + lora_bytes + grad_bytes + optimizer_bytes + max(backward_phase, step_bytes)
    return MemoryEstimate(
        weights_bytes=int(weights_bytes),
        lora_params=int(lora_params),
        lora_bytes=int(lora_bytes),
        trainable_params=int(trainable),
        gradients_bytes=int(grad_bytes),
        optimizer_bytes=optimizer_bytes,
        activations_bytes=activations,
        logits_bytes=int(logits),
        tied_grad_bytes=int(tied_grad_bytes),
        optimizer_step_bytes=int(step_bytes),
        total_bytes=int(total),
        weights_by_precision=by_precision,
        activations_by_part={"llm": int(llm_act), "vision": int(vision_act), "merger": int(merger_act)},
        params_by_group=param_counts(model_config_hf),
        settings=dict(
            quant=quant,
            quantize_vision=quantize_vision,
            trainable_parts=list(trainable_parts),
            vision_last_n=vision_last_n,
            lora_r=lora_r,
            batch_size=batch_size,
            text_tokens=text_tokens,
            visual_tokens=visual_tokens,
            supervised_tokens=supervised,
            grad_checkpointing=grad_checkpointing,
            optimizer=optimizer,
            loss_impl=loss_impl,
            loss_chunk=loss_chunk,
            logits_rows={"eager": rows, "chunked": min(loss_chunk, rows), "cce": 0,
                         "liger": liger_chunk_rows(rows, text_cfg.vocab_size, h)}.get(loss_impl, rows),
        ),
    )


# Optimizer state bytes per byte of trainable parameter: AdamW keeps exp_avg and exp_avg_sq like the param;
# 8-bit AdamW keeps two 1-byte states per element (for fp32 params: 2/4 of the param bytes).
_OPTIMIZER_STATE_BYTES = {"adamw": 2.0, "adamw_8bit": 0.5, "sgd": 0.0}


def _decoder_layer_bytes(h: int, kv: int, inter: int, heads: int, seq: int, a: int, attn: str) -> int:
    """Bytes one Qwen2 decoder layer keeps for backward, per token.

    Hand count in the spirit of Korthikanti et al. 2022 ("Reducing Activation Recomputation", their
    34*h + 5*heads*seq bytes per token for a GPT layer in 16-bit), redone for RMSNorm, rotary, GQA and a
    SwiGLU MLP: 2 RMSNorms (fp32 upcast of the input + normalized output), q/k before and after rotary,
    v, attention output, the gate/up outputs, SiLU output and their product. The heads*seq term (scores,
    softmax, dropout mask) exists only with eager attention; sdpa/flash keep no seq x seq matrix.
    """
    norms = 2 * (4 * h + a * h)
    attention = a * (2 * h + 2 * kv) + a * (h + kv + h)  # q,k pre-rotary; q,k post-rotary, v, output
    mlp = a * 4 * inter
    scores = heads * seq * (2 * a + 1) if attn == "eager" else 0
    return norms + attention + mlp + scores


def _vision_block_bytes(e: int, mlp: int, heads: int, patches: int, a: int, attn: str, gated: bool = False) -> int:
    """Bytes one vision block keeps for backward, per patch: 2 norms (Qwen2-VL LayerNorm: input + output;
    Qwen2.5-VL RMSNorm: fp32 upcast + output), qkv output, q/k after rotary, attention output, and the MLP's
    (Qwen2-VL: fc1 output, QuickGELU's sigmoid and output; Qwen2.5-VL: gate, up, SiLU output and product)."""
    norms = 2 * (4 * e + a * e) if gated else 2 * a * 2 * e
    attention = a * (3 * e + 2 * e + e)
    mlp_bytes = a * (4 if gated else 3) * mlp
    scores = heads * patches * (2 * a + 1) if attn == "eager" else 0
    return norms + attention + mlp_bytes + scores


def estimate_from_config(
    config: "Config", model_config_hf: Any, *, text_tokens: int, supervised_tokens: int | None = None,
    loss_impl: str | None = None,
) -> MemoryEstimate:
    """`estimate` with the run's typed config supplying every axis (`loss_impl`: another than the run's)."""
    return estimate(
        model_config_hf,
        quant=config.quant.name if config.quant.name in DTYPE_BYTES else _quant_from_dtype(config),
        quantize_vision=config.quant.quantize_vision,
        trainable_parts=list(config.scope.parts),
        vision_last_n=config.scope.vision_last_n,
        lora_r=config.lora.r,
        batch_size=config.train.batch_size,
        text_tokens=text_tokens,
        visual_tokens=config.max_pixels.visual_tokens,
        grad_checkpointing=config.train.grad_checkpointing,
        supervised_tokens=supervised_tokens,
        lora_dropout=config.lora.dropout,
        double_quant=config.quant.double_quant,
        kbit_fp32_upcast=config.quant.fp32_upcast,
        attn_implementation=config.model.attn_implementation,
        loss_impl=loss_impl or config.train.loss_impl,
        loss_chunk=config.train.loss_chunk,
    )


def _quant_from_dtype(config: "Config") -> str:
    if config.quant.load_in_4bit:
        return "nf4"
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[config.quant.dtype]


# ---------------------------------------------------------------- presets and CLI

# The practitioner's plan (SPEC.md): exp -> (quant, trainable parts, planned VRAM in GB).
EXPERIMENTS = {
    "exp1": ("nf4", ["llm"], 9),
    "exp2": ("nf4", ["vision", "merger", "llm"], 12),
    "exp3": ("bf16", ["llm"], 16),
    "exp4": ("bf16", ["vision", "merger", "llm"], 22),
}


def preset_configs() -> dict[str, Any]:
    """{"tiny": ..., "shape": ...}: the embedded tiny model and the real 2B architecture (no weights)."""
    from vlmsweep.model.tiny import shape_config, tiny_config

    return {"tiny": tiny_config(), "shape": shape_config()}


def experiment_estimates(visual_tokens: int = 1024, text_tokens: int = 300, lora_r: int = 16,
                         loss_impl: str = "chunked") -> dict[str, MemoryEstimate]:
    shape = preset_configs()["shape"]
    return {
        name: estimate(shape, quant=quant, trainable_parts=parts, lora_r=lora_r, batch_size=1,
                       text_tokens=text_tokens, visual_tokens=visual_tokens, grad_checkpointing=True,
                       loss_impl=loss_impl)
        for name, (quant, parts, _) in EXPERIMENTS.items()
    }  # fmt: skip


# What the command line assumes about a sample when it has no data to measure (a run measures its own
# before training): a prompt plus a prescription answer, of which the answer is supervised.
TEXT_TOKENS, SUPERVISED_TOKENS = 300, 200
