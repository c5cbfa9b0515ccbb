"""The `model` axis: resolve a checkpoint folder, load model + processor, attach or load LoRA."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoProcessor, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

from vlmsweep.config import Config, LoraConfig, ModelConfig, QuantConfig, ScopeConfig
from vlmsweep.model.quant import build_quantization, torch_dtype
from vlmsweep.model.scope import matched_modules, target_pattern
from vlmsweep.model.tiny import ensure_embedded_model

log = logging.getLogger(__name__)

MODEL_CLASSES = {"qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}


def resolve_path(model: ModelConfig, cache_dir: str) -> str:
    """The folder (or hub id) that `from_pretrained` reads."""
    match model.source:
        case "tiny":
            return str(ensure_embedded_model("tiny", cache_dir))
        case "shape":
            # The real 2B architecture with random weights, written once to the cache (bf16, 4.4 GB).
            return str(ensure_embedded_model("qwen2_vl_2b", cache_dir, dtype=torch.bfloat16))
        case "pretrained":
            path = os.path.expanduser(model.path or "")
            looks_local = path.startswith((".", "/", "~")) or os.sep in path and not _is_hub_id(path)
            if looks_local and not Path(path).is_dir():
                raise FileNotFoundError(
                    f"model.path={model.path}: no such folder. Download the weights once with "
                    f"`huggingface-cli download Qwen/Qwen2-VL-2B-Instruct --local-dir {model.path}`, "
                    "or pass a hub id (needs network), or use model=tiny for the embedded model"
                )
            return path
    raise ValueError(f"model.source={model.source!r}")


def _is_hub_id(path: str) -> bool:
    return path.count("/") == 1 and not Path(path).exists() and not path.startswith((".", "/", "~"))


def model_class(model: ModelConfig):
    import transformers

    return getattr(transformers, MODEL_CLASSES[model.family])


def load_processor(path: str) -> Qwen2VLProcessor:
    return AutoProcessor.from_pretrained(path)


def load_base_model(model: ModelConfig, quant: QuantConfig, path: str, grad_checkpointing: bool = False):
    quantization = None if model.prequantized else build_quantization(quant)
    kwargs = dict(dtype=torch_dtype(quant), attn_implementation=model.attn_implementation)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": _device()}  # bitsandbytes quantizes while placing the weights
    try:
        base = model_class(model).from_pretrained(path, **kwargs)
    except OSError as err:
        raise OSError(
            f"could not load model.path={path}: {err}. For a machine without network, download the "
            "checkpoint to a folder first and pass model.path=FOLDER"
        ) from err
    if quantization is None and not model.prequantized:
        base.to(_device())
    if quant.load_in_4bit or model.prequantized:
        if quant.fp32_upcast:
            base = prepare_model_for_kbit_training(
                base,
                use_gradient_checkpointing=grad_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
        else:
            # prepare_model_for_kbit_training minus its fp32 upcast, which on Qwen2-VL-2B turns the
            # 0.68 B-parameter vision tower into 2.7 GB of fp32 weights.
            for p in base.parameters():
                p.requires_grad_(False)
            if grad_checkpointing:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                base.enable_input_require_grads()
    return base


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def attach_lora(base, scope: ScopeConfig, lora: LoraConfig, seed: int):
    pattern = target_pattern(scope, vision_depth=base.config.vision_config.depth)
    if not matched_modules(base, pattern):
        raise ValueError(f"scope={scope.name}: the pattern {pattern} matches no module of this model")
    torch.manual_seed(seed)  # LoRA A matrices are random: same seed, same adapter init
    config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=pattern,
        modules_to_save=list(lora.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, config)


def load_adapter(base, adapter: str, trainable: bool):
    if not (Path(adapter) / "adapter_config.json").exists():
        raise FileNotFoundError(
            f"model.adapter={adapter}: no adapter_config.json there; point it at a run's adapter/ folder"
        )
    return PeftModel.from_pretrained(base, adapter, is_trainable=trainable)


def load(cfg: Config, path: str | None = None):
    """Base model (quantized as the config says) and processor, from one folder."""
    path = path or resolve_path(cfg.model, cfg.cache_dir)
    processor = load_processor(path)
    base = load_base_model(cfg.model, cfg.quant, path, cfg.train.grad_checkpointing)
    return base, processor, path
