"""The `model` axis: resolve a checkpoint folder, load model + processor, attach LoRA (adapter folders: adapter.py)."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import getproxies

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model, prepare_model_for_kbit_training
from transformers import AutoProcessor, Qwen2VLProcessor

from vlmsweep.config import Config, LoraConfig, ModelConfig, QuantConfig, ScopeConfig
from vlmsweep.model.quant import build_quantization, torch_dtype
from vlmsweep.model.scope import matched_modules, part_of, target_pattern
from vlmsweep.model.shapes import model_class
from vlmsweep.model.tiny import ensure_embedded_model

log = logging.getLogger(__name__)


# Seconds to wait for the hub's TCP handshake before calling it unreachable: without this check a
# machine with no network spends about 3 minutes in hub retries and ends in an httpx traceback.
HUB_PROBE_SECONDS = 3.0


class CheckpointNotFound(FileNotFoundError):
    """No folder and no reachable hub: the message says how to download and pass model.path."""


# The release a folder path stands for, when the user gave a folder that does not exist: the 4-bit one for a
# prequantized model option (exp1/exp2), where the 16-bit release would be refused as not quantized.
RELEASE = {False: "Qwen/Qwen2-VL-2B-Instruct", True: "unsloth/Qwen2-VL-2B-Instruct-bnb-4bit"}


def download_hint(path: str, prequantized: bool = False) -> str:
    repo = path if _is_hub_id(path) else RELEASE[prequantized]
    return (
        f"download the checkpoint once on a machine with network: `huggingface-cli download {repo} "
        f"--local-dir FOLDER`, copy FOLDER here and pass model.path=FOLDER (or use model=tiny, the embedded model)"
    )


def resolve_path(model: ModelConfig, cache_dir: str) -> str:
    """The folder that `from_pretrained` reads (a hub id is resolved to a local snapshot first)."""
    match model.source:
        case "tiny" if model.path == "tiny_warm":
            from vlmsweep.model.shipped import ensure_warm_model  # the warmed replica the package ships, assembled once

            return str(ensure_warm_model(cache_dir))
        case "tiny" if model.path == "tiny_reader":
            from vlmsweep.model.shipped import ensure_reader_model  # the reader the package ships (docs/ocr-hint.md)

            return str(ensure_reader_model(cache_dir))
        case "tiny":
            return str(ensure_embedded_model(model.path or "tiny", cache_dir))
        case "shape":
            # The real 2B architecture with random weights, written once to the cache (bf16, 4.4 GB).
            return str(ensure_embedded_model("qwen2_vl_2b", cache_dir, dtype=torch.bfloat16))
        case "pretrained":
            path = os.path.expanduser(model.path or "")
            if Path(path).is_dir():
                return path
            if not _is_hub_id(path):
                raise CheckpointNotFound(f"model.path={model.path}: no such folder. To get the weights, "
                                         f"{download_hint(path, model.prequantized)}")
            return _hub_snapshot(path)
    raise ValueError(f"model.source={model.source!r}")


def _is_hub_id(path: str) -> bool:
    return path.count("/") == 1 and not path.startswith((".", "/", "~")) and not Path(path).exists()


def _hub_snapshot(repo: str) -> str:
    """A hub id: the local snapshot if it was downloaded before, else a download when the hub answers."""
    from huggingface_hub import constants, snapshot_download

    try:
        return snapshot_download(repo, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (any of the hub's "not found locally" errors)
        pass
    if constants.HF_HUB_OFFLINE:
        raise CheckpointNotFound(
            f"model.path={repo} is a hub id, it is not in the local hub cache and HF_HUB_OFFLINE is set: {download_hint(repo)}"
        )
    endpoint = urlparse(constants.ENDPOINT)
    # Behind a proxy the hub is reached through it: probe the proxy instead of a direct connection.
    proxy = getproxies().get(endpoint.scheme)
    target = urlparse(proxy if "://" in (proxy or "://") else f"http://{proxy}") if proxy else endpoint
    default_port = 443 if target.scheme == "https" else 80
    try:
        socket.create_connection((target.hostname, target.port or default_port), timeout=HUB_PROBE_SECONDS).close()
    except OSError as err:
        raise CheckpointNotFound(
            f"model.path={repo} is a hub id and the hub ({constants.ENDPOINT}) is unreachable ({err}): {download_hint(repo)}"
        ) from None
    return snapshot_download(repo)


def load_processor(path: str) -> Qwen2VLProcessor:
    return AutoProcessor.from_pretrained(path)


def device() -> torch.device:
    """This process's accelerator: under torchrun/accelerate each rank owns cuda:LOCAL_RANK."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    index = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def check_precision(quant: QuantConfig) -> None:
    """bf16 on a CUDA card without it (T4, V100) is an error that names the fp16 option: an automatic
    switch would make two runs of one config differ by card."""
    if quant.dtype != "bfloat16" or not torch.cuda.is_available() or torch.cuda.is_bf16_supported(including_emulation=False):
        return
    fix = "quant.dtype=float16 (nf4 then computes in fp16)" if quant.load_in_4bit else "quant=fp16"
    raise ValueError(f"quant={quant.name} computes in bfloat16, which {torch.cuda.get_device_name()} does not support: use {fix}")


def checkpoint_quantization(path: str) -> dict | None:
    """The `quantization_config` a checkpoint folder's config.json carries (pre-quantized checkpoints)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8")).get("quantization_config")


def check_prequantized(model: ModelConfig, quant: QuantConfig, path: str) -> None:
    """A pre-quantized checkpoint decides its own 4-bit layout; the options that cannot change it warn. What is 4-bit
    per part is judged after loading, from the modules (check_four_bit_parts), not from the config's strings."""
    saved = checkpoint_quantization(path)
    if saved is None:
        if model.prequantized:
            raise ValueError(
                f"model.prequantized=true but {path}/config.json has no quantization_config: set "
                "model.prequantized=false for a 16-bit checkpoint (quant=nf4 then quantizes it while loading)"
            )
        return
    if not model.prequantized:
        raise ValueError(
            f"{path} is a pre-quantized checkpoint ({saved.get('quant_method')}, quantization_config in its "
            "config.json): set model.prequantized=true (as model=qwen2_vl_2b_bnb4 does)"
        )
    disagreements = []
    if not quant.load_in_4bit:
        disagreements.append(f"quant={quant.name} asks for no 4-bit, the checkpoint is 4-bit")
    if saved.get("bnb_4bit_quant_type", quant.quant_type) != quant.quant_type:
        disagreements.append(f"quant.quant_type={quant.quant_type}, the checkpoint holds {saved['bnb_4bit_quant_type']}")
    if bool(saved.get("bnb_4bit_use_double_quant")) != quant.double_quant:
        disagreements.append(f"quant.double_quant={quant.double_quant}, the checkpoint's is {saved.get('bnb_4bit_use_double_quant')}")
    for what in disagreements:
        log.warning("model.prequantized: %s; the checkpoint decides (the per-part 4-bit log shows what was loaded)", what)


# Suffixes of the tensors bitsandbytes saves beside a 4-bit weight (its quant state): a module with one is 4-bit.
_QUANT_STATE = (".weight.absmax", ".weight.quant_map", ".weight.quant_state.", ".weight.nested_absmax")


def module_name(saved: str) -> str:
    """A module's name as saved by transformers 4.x (the release: `visual.*`, `model.layers.*`) as transformers 5 names
    it in Qwen2-VL / Qwen2.5-VL (`model.visual.*`, `model.language_model.*`); 5.x names are returned unchanged."""
    if saved.startswith("visual."):
        return "model." + saved
    if saved.startswith("model.") and not saved.startswith(("model.visual.", "model.language_model.")):
        return "model.language_model." + saved.removeprefix("model.")
    return saved


def saved_linear_layout(path: str) -> tuple[set[str], set[str]]:
    """(4-bit modules, 16/32-bit matrix modules) as the checkpoint's safetensors hold them, by transformers 5 names."""
    from safetensors import safe_open

    packed, plain = set(), set()
    for file in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for key in f.keys():
                if any(tag in key for tag in _QUANT_STATE):
                    packed.add(module_name(key.split(".weight.", 1)[0]))
                elif key.endswith(".weight") and len(f.get_slice(key).get_shape()) == 2 and "embed_tokens" not in key:
                    plain.add(key.removesuffix(".weight"))  # a matrix: a linear layer (the embedding is none)
    return packed, {module_name(m) for m in plain} - packed


def skip_list_from_weights(path: str) -> list[str]:
    """The `llm_int8_skip_modules` that loads a pre-quantized checkpoint as it was saved: every module stored in
    16/32-bit, each under the shortest name that covers no 4-bit module.

    transformers 5 matches skip entries from the start of a module name or as a suffix and does not rename a 4.x
    checkpoint's list, so `["visual", "lm_head"]` (4.x names), unsloth-style lists (`merger`, `visual.blocks.31`) and
    5.x names load differently; an entry that misses a 16-bit module makes a Linear4bit of plain weights, whose first
    forward fails inside bitsandbytes with a bare AssertionError. The saved tensors say what is 4-bit, whatever the
    list's spelling. The output layer is kept out too unless it was saved in 4-bit (tied to the embedding, it is not
    saved at all)."""
    packed, plain = saved_linear_layout(path)
    if not packed:
        raise ValueError(f"model.prequantized=true but no 4-bit weight (bitsandbytes quant state) is saved in {path}: "
                         "set model.prequantized=false for a 16-bit checkpoint")
    skip = set()
    for name in plain:
        parts = name.split(".")
        prefixes = (".".join(parts[:i]) for i in range(1, len(parts) + 1))
        skip.add(next(p for p in prefixes if not any(q == p or q.startswith(p + ".") for q in packed)))
    if "lm_head" not in packed:
        skip.add("lm_head")
    return sorted(skip)


def prequantized_config(path: str, quant: QuantConfig):
    """The checkpoint's config with a quantization_config that loads its saved layout (skip_list_from_weights) and
    computes in the dtype the run asks for: the checkpoint's saved `bnb_4bit_compute_dtype` (bfloat16 in unsloth's)
    would otherwise win over quant.dtype (a T4 needs float16)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    saved = config.quantization_config
    saved = dict(saved if isinstance(saved, dict) else saved.to_dict())
    skip = skip_list_from_weights(path)
    if sorted(saved.get("llm_int8_skip_modules") or []) != skip:
        log.info("model.prequantized: the checkpoint's skip list %s loads as %s (read from its saved 4-bit tensors)",
                 saved.get("llm_int8_skip_modules"), skip)
    dtype = str(torch_dtype(quant)).removeprefix("torch.")
    if saved.get("bnb_4bit_compute_dtype") not in (None, dtype):
        log.info("model.prequantized: 4-bit layers compute in %s (quant.dtype), not the checkpoint's %s",
                 dtype, saved["bnb_4bit_compute_dtype"])
    config.quantization_config = saved | {"llm_int8_skip_modules": skip, "bnb_4bit_compute_dtype": dtype}
    return config


def four_bit_by_part(model) -> dict[str, tuple[int, int]]:
    """(4-bit linear layers, all linear layers) per part, read from the loaded modules."""
    import bitsandbytes as bnb

    linear, packed = Counter(), Counter()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            part = part_of(name)
            linear[part] += 1
            packed[part] += isinstance(module, bnb.nn.Linear4bit)
    return {part: (packed[part], linear[part]) for part in ("vision", "merger", "llm")}


def check_four_bit_parts(model, quant: QuantConfig, prequantized: bool) -> dict[str, tuple[int, int]]:
    """What is 4-bit per part, from the loaded modules, logged; a 4-bit layer that holds no packed weights, or a
    4-bit vision tower the run did not ask for, fails in one line naming the module and the fix."""
    import bitsandbytes as bnb

    parts = four_bit_by_part(model)
    log.info("4-bit linear layers per part: %s", ", ".join(f"{p} {n}/{t}" for p, (n, t) in parts.items()))
    four_bit = {name: m for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    for name, module in four_bit.items():
        if getattr(module.weight, "quant_state", None) is None:
            raise ValueError(f"{name} was loaded as a 4-bit layer but holds {module.weight.dtype} weights, not packed "
                             f"4-bit ones: its checkpoint's skip list misses it. Add {name} to llm_int8_skip_modules "
                             "in the checkpoint's config.json")
    vision_4bit = [name for name in four_bit if part_of(name) in ("vision", "merger")]
    if vision_4bit and not quant.quantize_vision:
        fix = ("load the 16-bit release and quantize it while loading (model=qwen2_vl_2b quant=nf4) or set "
               "quant.quantize_vision=true" if prequantized else "set quant.quantize_vision=true")
        raise ValueError(f"{vision_4bit[0]} (and {len(vision_4bit) - 1} more vision/merger layers) loaded in 4-bit, "
                         f"but quant.quantize_vision=false keeps the vision tower in 16-bit: {fix}")
    if prequantized and quant.quantize_vision and not vision_4bit:
        log.warning("model.prequantized: quant.quantize_vision=true, but the checkpoint holds its vision tower in "
                    "16-bit; the checkpoint decides")
    return parts


def load_base_model(model: ModelConfig, quant: QuantConfig, path: str, grad_checkpointing: bool = False):
    check_precision(quant)
    check_prequantized(model, quant, path)
    quantization = None if model.prequantized else build_quantization(quant)
    kwargs = dict(dtype=torch_dtype(quant), attn_implementation=model.attn_implementation)
    four_bit = quantization is not None or model.prequantized
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if model.prequantized:
        kwargs["config"] = prequantized_config(path, quant)
    if four_bit:
        kwargs["device_map"] = {"": device()}  # bitsandbytes places (and quantizes) while loading
    try:
        base = model_class(model).from_pretrained(path, **kwargs)
    except OSError as err:
        raise OSError(f"could not load model.path={path}: {err}. {download_hint(path)}") from err
    if not four_bit:
        base.to(device())
    if four_bit:
        check_four_bit_parts(base, quant, model.prequantized)
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


# Weights from this size on are a real checkpoint (the 2B: 4.4 GB in bf16, 1.5 GB in 4-bit; the replicas: < 100 MB).
REAL_CHECKPOINT_BYTES = 2**30


def check_training_device(path: str, allow_cpu: bool) -> None:
    """Training a real checkpoint where torch sees no CUDA device fails at start-up with the reason (the CPU takes days
    for what a GPU does in hours, with only a dtype warning to show for it), unless train.allow_cpu=true asks for it."""
    weights = sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))
    if allow_cpu or weights < REAL_CHECKPOINT_BYTES or torch.cuda.is_available():
        return
    if torch.version.cuda is None:
        why = f"this torch ({torch.__version__}) is a CPU-only build"
    elif os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        why = f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} hides every GPU, or none works"
    else:
        why = (f"torch {torch.__version__} is built for CUDA {torch.version.cuda} and finds no device: no GPU, or an "
               "NVIDIA driver older than that CUDA needs (nvidia-smi shows the driver's CUDA version)")
    raise RuntimeError(f"model.path={path} ({weights / 2**30:.1f} GiB of weights) would train on the CPU: {why}. "
                       "Fix the GPU setup, or set train.allow_cpu=true to train on the CPU anyway")


def load(cfg: Config, path: str | None = None):
    """Base model (quantized as the config says) and processor, from one folder."""
    path = path or resolve_path(cfg.model, cfg.cache_dir)
    if cfg.train.enabled:
        check_training_device(path, cfg.train.allow_cpu)
    processor = load_processor(path)
    base = load_base_model(cfg.model, cfg.quant, path, cfg.train.grad_checkpointing)
    return base, processor, path
