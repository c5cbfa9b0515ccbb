"""The `quant` axis: a QuantConfig becomes a torch dtype and, for nf4, a BitsAndBytesConfig."""

from __future__ import annotations

import torch
from transformers import BitsAndBytesConfig

from vlmsweep.config import QuantConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Modules kept in 16/32-bit under nf4. transformers 5 matches skip entries from the start of the
# module name or as a suffix, so the vision tower must be named `model.visual`: a bare "visual"
# no longer keeps it out of 4-bit. A fully 4-bit Qwen2-VL-2B was reported to describe the wrong
# image, hence vision stays 16-bit unless `quant.quantize_vision=true` asks for that ablation.
KEEP_OUT_OF_4BIT = ("model.visual", "lm_head")


def torch_dtype(quant: QuantConfig) -> torch.dtype:
    return DTYPES[quant.dtype]


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
