"""The `quant` axis: a QuantConfig becomes a torch dtype and, for nf4, a BitsAndBytesConfig."""

from __future__ import annotations

import logging

import torch
from transformers import BitsAndBytesConfig

from vlmsweep.config import QuantConfig

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Modules kept in 16/32-bit under nf4. transformers 5 matches skip entries from the start of the
# module name or as a suffix, so the vision tower must be named `model.visual`: a bare "visual"
# no longer keeps it out of 4-bit. A fully 4-bit Qwen2-VL-2B was reported to describe the wrong
# image, hence vision stays 16-bit unless `quant.quantize_vision=true` asks for that ablation.
KEEP_OUT_OF_4BIT = ("model.visual", "lm_head")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 / AMX, as oneDNN reports it)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def torch_dtype(quant: QuantConfig) -> torch.dtype:
    """The dtype weights and LoRA compute use. On the CPU, `quant=bf16` (and nf4's compute dtype) computes in float32
    unless `quant.cpu_bf16=keep`, and says so once:
    - where bf16 is emulated (an AVX2-only x86) a training step of the embedded model took 63.4 s against 3.1 s in
      float32 (benchmarks/bench_cpu_dtype.py);
    - where it is native (AVX512-BF16, AMX), bf16 would make the CPU's figures depend on the CPU (the same run
      rounds apart on an AVX2 machine), and a LoRA computed in bf16 has no merge that answers as it does, so the
      default run's `export` would fail there and pass elsewhere.
    A GPU gets what the option asks for."""
    dtype = DTYPES[quant.dtype]
    if dtype is torch.bfloat16 and quant.cpu_bf16 == "float32" and not torch.cuda.is_available():
        if not _warned:
            _warned.append(True)
            why = ("this CPU computes bfloat16 natively, but float32 gives the same numbers on every CPU and an adapter "
                   "whose merge answers as it does" if cpu_has_native_bf16() else
                   "this CPU has no native bfloat16 (no AVX512-BF16/AMX), where bf16 is emulated and a training step "
                   "~20x slower")
            log.warning("quant=%s on the CPU: %s; computing in float32 (quant.cpu_bf16=keep to keep bfloat16)",
                        quant.name, why)
        return torch.float32
    return dtype


_warned: list[bool] = []


def build_quantization(quant: QuantConfig) -> BitsAndBytesConfig | None:
    if not quant.load_in_4bit:
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ImportError(
            f"quant={quant.name} needs bitsandbytes: pip install 'bitsandbytes>=0.50' "
            "(it runs 4-bit on the CPU too), or choose quant=bf16 / quant=fp32"
        ) from None
    skip = [m for m in KEEP_OUT_OF_4BIT if not (quant.quantize_vision and m == "model.visual")]
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(quant),
        llm_int8_skip_modules=skip,
    )
