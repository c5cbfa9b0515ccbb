"""Peak accelerator-memory estimate for a training config, and its measurement (CUDA peak or CPU RSS)."""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterator

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

# Module names of Qwen2-VL in transformers 5 (FACTS.md). LoRA targets are the same anchored patterns
# the scope axis uses: attention + MLP projections of the LLM, vision blocks and merger.
_LORA_TARGETS = {
    "llm": re.compile(r"^model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)$"),
    "vision": re.compile(r"^model\.visual\.blocks\.(\d+)\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))$"),
    "merger": re.compile(r"^model\.visual\.merger\.mlp\.\d+$"),
}
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
    linear_weight: bool  # weight of an nn.Linear: what bitsandbytes turns into 4-bit
    group: str
    block: int | None  # vision block index, for vision_last_n
    lora_in: int = 0  # for a LoRA-targetable Linear weight: in/out features
    lora_out: int = 0
    lora_part: str | None = None


@lru_cache(maxsize=8)
def _params_of(config_json: str) -> tuple[_Param, ...]:
    """Parameter inventory of a Qwen2-VL built on the meta device (no memory, no weights, ~0.1 s for 2B)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    import json

    config = Qwen2VLConfig.from_dict(json.loads(config_json))
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration._from_config(config)
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
            lora_part = None
            if is_linear:
                lora_part = next((part for part, rx in _LORA_TARGETS.items() if rx.match(mod_name)), None)
            out.append(
                _Param(
                    name=full,
                    module=mod_name,
                    numel=p.numel(),
                    linear_weight=is_linear,
                    group=group,
                    block=int(m.group(1)) if m else None,
                    lora_in=module.in_features if lora_part else 0,
                    lora_out=module.out_features if lora_part else 0,
                    lora_part=lora_part,
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
            ("logits", self.logits_bytes, f"{self.settings.get('supervised_tokens')} supervised tokens"),
            ("transients", max(self.tied_grad_bytes, self.optimizer_step_bytes), "tied-embedding grad / optimizer step (peak takes the larger phase)"),
            ("total", self.total_bytes, ""),
        ]
        lines = [title, f"{'component':<14} {'GiB':>8}  note"]
        lines += [f"{name:<14} {value / GiB:>8.3f}  {note}" for name, value, note in rows]
        return "\n".join(lines)


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


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
) -> MemoryEstimate:
    """Peak memory of one training step.

    lora_r=0 means a full fine-tune of `trainable_parts`. visual_tokens are per image (one image per
    sample), counted after the 2x2 merge; the LLM sequence is text_tokens + visual_tokens. Logits are
    computed only at the `supervised_tokens` answer positions (our trainer does that; default: all
    text_tokens). `kbit_fp32_upcast`: peft's prepare_model_for_kbit_training casts every non-4-bit
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
    params = _params_of(model_config_hf.to_json_string(use_diff=False))
    text_cfg = model_config_hf.text_config
    vis_cfg = model_config_hf.vision_config
    depth = vis_cfg.depth
    first_trainable_block = depth - vision_last_n if 0 < vision_last_n <= depth else 0
    compute_bytes = DTYPE_BYTES[quant]  # activations dtype (nf4 computes in 16-bit)

    def in_part(p: _Param) -> bool:
        """Parameter belongs to a trainable part (for a full fine-tune; LoRA uses lora_part)."""
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
        for p in params:
            if p.lora_part is None or p.lora_part not in trainable_parts:
                continue
            if p.lora_part == "vision" and (p.block is None or p.block < first_trainable_block):
                continue
            lora_params += lora_r * (p.lora_in + p.lora_out)
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

    e = vis_cfg.embed_dim
    mlp = int(e * vis_cfg.mlp_ratio)
    merge = vis_cfg.spatial_merge_size**2
    patches = batch_size * visual_tokens * merge  # patches before the 2x2 merge
    vision_stores = "vision" in trainable_parts
    block_patch = _vision_block_bytes(e, mlp, vis_cfg.num_heads, visual_tokens * merge, compute_bytes, attn_implementation)
    vision_lora = lora_r > 0 and vision_stores
    if vision_lora:
        block_patch += per_lora_input * (e + e + e + mlp) + 4 * lora_r * 4
    if vision_stores:
        n_blocks = depth - first_trainable_block
        if grad_checkpointing:
            vision_act = patches * (n_blocks * e * compute_bytes + block_patch)
        else:
            vision_act = patches * n_blocks * block_patch
    else:
        vision_act = patches * block_patch  # no graph is kept: one block's working set at a time
    merger_stores = vision_stores or "merger" in trainable_parts
    # merger: ln_q over the patches, then Linear(4e,4e) -> GELU -> Linear(4e,h) per visual token.
    merger_tok = compute_bytes * (merge * e * 2 + 4 * merge * e) + (per_lora_input * 2 * merge * e if lora_r > 0 and "merger" in trainable_parts else 0)
    merger_act = batch_size * visual_tokens * merger_tok if merger_stores else 0

    # Logits at supervised positions, per element: the compute-dtype logits, the fp32 copy for the loss,
    # log-softmax's saved output, and in backward the fp32 gradient, softmax's exp temporary and the
    # gradient cast back (measured on the CPU: ~20 bytes per element in fp32, ~18 in bf16).
    logits_bytes = batch_size * supervised * text_cfg.vocab_size * (compute_bytes + 16)
    activations = int(llm_act + vision_act + merger_act)
    # Transients. Tied embeddings trained in full get two full-size gradients (from lm_head and from the
    # lookup) before autograd sums them. Foreach AdamW holds one trainable-sized temporary (sqrt of the
    # second moment) during step(), when the activations are already freed.
    tied = bool(getattr(text_cfg, "tie_word_embeddings", False) or getattr(model_config_hf, "tie_word_embeddings", False))
    tied_grad_bytes = 0
    if lora_r == 0 and tied and "llm" in trainable_parts:
        tied_grad_bytes = text_cfg.vocab_size * h * (4 if quant == "fp32" else 2)
    step_bytes = state_param_bytes if optimizer == "adamw" else 0
    backward_phase = activations + logits_bytes + tied_grad_bytes

    total = weights_bytes + lora_bytes + grad_bytes + optimizer_bytes + max(backward_phase, step_bytes)
    return MemoryEstimate(
        weights_bytes=int(weights_bytes),
        lora_params=int(lora_params),
        lora_bytes=int(lora_bytes),
        trainable_params=int(trainable),
        gradients_bytes=int(grad_bytes),
        optimizer_bytes=optimizer_bytes,
        activations_bytes=activations,
        logits_bytes=int(logits_bytes),
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


def _vision_block_bytes(e: int, mlp: int, heads: int, patches: int, a: int, attn: str) -> int:
    """Bytes one vision block keeps for backward, per patch: 2 LayerNorms (input + output), qkv output,
    q/k after rotary, attention output, fc1 output, QuickGELU's sigmoid and output."""
    norms = 2 * a * 2 * e
    attention = a * (3 * e + 2 * e + e)
    mlp_bytes = a * 3 * mlp
    scores = heads * patches * (2 * a + 1) if attn == "eager" else 0
    return norms + attention + mlp_bytes + scores


def estimate_from_config(
    config: "Config", model_config_hf: Any, *, text_tokens: int, supervised_tokens: int | None = None
) -> MemoryEstimate:
    """`estimate` with the run's typed config supplying every axis."""
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
    )


def _quant_from_dtype(config: "Config") -> str:
    if config.quant.load_in_4bit:
        return "nf4"
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[config.quant.dtype]


# ---------------------------------------------------------------- measurement


@dataclass
class MemoryMeasurement:
    """peak_bytes: on CUDA torch.cuda.max_memory_allocated() (absolute: weights loaded before count);
    on the CPU the peak resident-set growth over the RSS at entry (so enter before building the model)."""

    device: str = "cpu"
    baseline_bytes: int = 0
    peak_bytes: int = 0
    samples: int = 0


@contextlib.contextmanager
def measure(device: str | None = None, interval_s: float = 0.01) -> Iterator[MemoryMeasurement]:
    """Measure peak memory of the enclosed block; read `.peak_bytes` after the block.

    CUDA: resets the peak statistics at entry (Hydra's basic launcher runs multirun jobs in one process
    and would otherwise carry the previous job's peak, Hydra #2631). CPU: VmHWM in /proc is the
    process-lifetime peak and cannot be reset per block, so a thread samples RSS with psutil every
    `interval_s` (torch releases the GIL in its kernels, so the sampler keeps running).
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    result = MemoryMeasurement(device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        result.baseline_bytes = torch.cuda.memory_allocated(device)
        try:
            yield result
        finally:
            torch.cuda.synchronize(device)
            result.peak_bytes = torch.cuda.max_memory_allocated(device)
            result.samples = 1
        return

    import psutil

    _malloc_trim()
    proc = psutil.Process()
    result.baseline_bytes = proc.memory_info().rss
    peak = [result.baseline_bytes]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            result.peak_bytes = peak[0] - result.baseline_bytes  # readable while the block runs
            result.samples += 1
            time.sleep(interval_s)

    thread = threading.Thread(target=sample, name="vlmsweep-rss-sampler", daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], proc.memory_info().rss)
        result.peak_bytes = peak[0] - result.baseline_bytes


def _malloc_trim() -> None:
    """Hand glibc's freed-but-kept heap back to the OS, so earlier work in this process cannot hide growth."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)  # glibc only; elsewhere RSS growth may read low


def measure_training_step(
    config_hf: Any, dtype, *, lora_r: int, batch_size: int, visual_tokens: int, text_tokens: int, supervised_tokens: int
) -> tuple[int, int]:
    """(estimate, measured) bytes of two forward+backward+AdamW steps of a random model of this config on
    the CPU (LoRA r on the LLM, or lora_r=0: full fine-tune of the LLM). measured = exact tensor bytes of
    the built model + peak RSS growth during the steps (building is outside: it has its own transient)."""
    import gc as _gc

    import torch
    from transformers import Qwen2VLForConditionalGeneration
    from transformers.initialization import no_init_weights

    from vlmsweep.model.scope import LLM

    torch.manual_seed(0)
    quant = "fp32" if dtype == torch.float32 else "bf16"
    est = estimate(config_hf, quant=quant, trainable_parts=["llm"], lora_r=lora_r, batch_size=batch_size,
                   text_tokens=text_tokens, visual_tokens=visual_tokens, supervised_tokens=supervised_tokens,
                   grad_checkpointing=False)  # fmt: skip
    with no_init_weights():  # random init of many parameters is slow; filling uniformly is not
        model = Qwen2VLForConditionalGeneration._from_config(config_hf, dtype=dtype)
    model.tie_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.02, 0.02)
    if lora_r:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05, target_modules=LLM))
        base = model.base_model.model
    else:
        base = model
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith("model.visual"))
    assert base.lm_head.weight is base.model.language_model.embed_tokens.weight
    tensors = sum(p.numel() * p.element_size() for p in model.parameters())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vis, text, sup = visual_tokens, text_tokens, supervised_tokens
    ids = torch.randint(0, 1000, (batch_size, text + vis))
    ids[:, 2 : 2 + vis] = config_hf.image_token_id
    grid = int((vis * 4) ** 0.5)  # vis visual tokens = 4*vis patches before the 2x2 merge
    pixels = torch.randn(batch_size * grid * grid, 3 * 2 * 14 * 14, dtype=dtype)
    thw = torch.tensor([[1, grid, grid]] * batch_size)
    _gc.collect()
    with measure("cpu") as m:
        for _ in range(2):  # step 2 runs with the optimizer states alive
            hidden = base.model(input_ids=ids, pixel_values=pixels, image_grid_thw=thw,
                                mm_token_type_ids=(ids == config_hf.image_token_id).long()).last_hidden_state  # fmt: skip
            logits = base.lm_head(hidden[:, -sup:])  # logits only at the supervised positions, as the trainer does
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, -sup:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            del hidden, logits, loss
    return est.total_bytes, tensors + m.peak_bytes


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


def experiment_estimates(visual_tokens: int = 1024, text_tokens: int = 300, lora_r: int = 16) -> dict[str, MemoryEstimate]:
    shape = preset_configs()["shape"]
    return {
        name: estimate(shape, quant=quant, trainable_parts=parts, lora_r=lora_r, batch_size=1,
                       text_tokens=text_tokens, visual_tokens=visual_tokens, grad_checkpointing=True)
        for name, (quant, parts, _) in EXPERIMENTS.items()
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    import argparse

    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(prog="python -m vlmsweep.memory", description=__doc__)
    ap.add_argument("--visual-tokens", type=int, default=1024, help="visual tokens per image (after the 2x2 merge)")
    ap.add_argument("--text-tokens", type=int, default=300, help="prompt + answer tokens per sample")
    ap.add_argument("--lora-r", type=int, default=16)
    args = ap.parse_args(argv)
    console = Console()
    tiny = estimate(preset_configs()["tiny"], quant="fp32", trainable_parts=["llm"], lora_r=args.lora_r, batch_size=4,
                    text_tokens=args.text_tokens, visual_tokens=64, grad_checkpointing=False)  # fmt: skip
    console.print(tiny.table("tiny (fp32, LoRA on the LLM, batch 4, 64 visual tokens)"))
    table = Table(title=f"Qwen2-VL-2B shape: {args.visual_tokens} visual + {args.text_tokens} text tokens, "
                        f"batch 1, LoRA r={args.lora_r}, gradient checkpointing")  # fmt: skip
    for col in ("exp", "quant", "scope", "weights", "LoRA+grad+opt", "activ.", "logits", "total GiB", "plan GB"):
        table.add_column(col, justify="right")
    for name, est in experiment_estimates(args.visual_tokens, args.text_tokens, args.lora_r).items():
        quant, parts, plan = EXPERIMENTS[name]
        train_state = est.lora_bytes + est.gradients_bytes + est.optimizer_bytes
        table.add_row(
            name, quant, "llm" if parts == ["llm"] else "all", f"{est.weights_bytes / GiB:.2f}", f"{train_state / GiB:.2f}",
            f"{est.activations_bytes / GiB:.2f}", f"{est.logits_bytes / GiB:.2f}", f"{est.total_bytes / GiB:.2f}", f"~{plan}",
        )  # fmt: skip
    console.print(table)
    console.print("Not counted: CUDA context, allocator fragmentation, evaluation-time KV cache.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
