"""The adapter folder, self-sufficient: LoRA weights, processor, prompt settings, schemas and base identity.

Next to peft's files a run writes the processor (tokenizer, the checkpoint's chat template, an image
processor set to the run's pixel budget) and `vlmsweep_adapter.json`: the instruction and domain-tag
settings, the schemas the answers follow, the identity of the base it was trained on, and the precision it
was trained and evaluated in (inference computes in it again, export merges in it). Loading an adapter reads
that file and refuses a base whose architecture or weights are not the trained-on ones.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
from peft import PeftModel

from vlmsweep import prompts
from vlmsweep.config import Config
from vlmsweep.config.schema import hint_token_budget
from vlmsweep.files import folder_aside, write_json

log = logging.getLogger(__name__)

INFO_FILE = "vlmsweep_adapter.json"
PROBE_TOKEN = 151645  # <|im_end|>: its embedding row (never quantized) fingerprints the base's weights
PROBE_WIDTH = 16
PROBE_TOLERANCE = 1e-2  # relative: bf16 / fp32 copies of one checkpoint agree, two checkpoints do not


def base_identity(base, cfg: Config) -> dict:
    """What makes a base this base: where it came from, how it was loaded, its sizes, a weight probe."""
    config = base.config
    text = getattr(config, "text_config", config)
    embedding = base.get_input_embeddings().weight
    probe = embedding[PROBE_TOKEN, :PROBE_WIDTH] if embedding.shape[0] > PROBE_TOKEN else embedding[0, :PROBE_WIDTH]
    return {
        "path": str(getattr(config, "name_or_path", "") or cfg.model.path),
        "model": cfg.model.name,
        "family": cfg.model.family,
        "prequantized": cfg.model.prequantized,
        "quant": cfg.quant.name,
        "architecture": {
            "model_type": config.model_type,
            "hidden_size": text.hidden_size,
            "num_hidden_layers": text.num_hidden_layers,
            "vocab_size": text.vocab_size,
            "vision_depth": config.vision_config.depth,
        },
        "embedding_probe": [round(float(v), 6) for v in probe.detach().float().cpu()],
    }


def precision(model, cfg: Config) -> dict:
    """The dtypes the adapter was trained and evaluated in: `compute` (activations, and the 4-bit layers' matmuls)
    and `weights` (the base's 16/32-bit weights: float32 under nf4 with quant.fp32_upcast). peft keeps the LoRA
    matrices in float32 whatever the base (autocast_adapter_dtype), so they are left out."""
    from vlmsweep.model.quant import torch_dtype

    held = {p.dtype for n, p in model.named_parameters()
            if p.dtype.is_floating_point and ".lora_" not in n}  # 4-bit weights are packed uint8: not floating
    name = lambda d: str(d).removeprefix("torch.")  # noqa: E731
    weights = max(held, key=lambda d: d.itemsize) if held else torch_dtype(cfg.quant)
    return {"compute": name(torch_dtype(cfg.quant)), "weights": name(weights), "four_bit": bool(cfg.quant.load_in_4bit)}


def save_adapter(model, processor, cfg: Config, folder: Path, min_pixels: int, max_pixels: int,
                 hint_tokens: int | None = None) -> None:
    """peft's adapter files plus everything evaluation or inference needs besides the base weights, written
    aside and renamed into `folder`: a crash or a full disk leaves the old folder or none, never half of one.
    `hint_tokens`: with ocr_hint, the hints' token budget the run trained with (default: the config's)."""
    with folder_aside(Path(folder)) as tmp:
        _write_adapter(model, processor, cfg, tmp, min_pixels, max_pixels, hint_tokens)


def _write_adapter(model, processor, cfg: Config, folder: Path, min_pixels: int, max_pixels: int,
                   hint_tokens: int | None = None) -> None:
    from vlmsweep.data.schema import SCHEMA_NAMES, load_schema

    model.save_pretrained(folder)
    # A copy whose image and video processors are the run's own copies (the tokenizer is shared, unchanged: a deep
    # copy of its 151k-entry vocabulary cost seconds a save)
    processor = copy.copy(processor)
    for attr in ("image_processor", "video_processor"):
        if getattr(processor, attr, None) is not None:  # the run's budget, not the release's 16,384 visual tokens
            sub = copy.deepcopy(getattr(processor, attr))
            sub.size = {"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)}
            sub.min_pixels, sub.max_pixels = int(min_pixels), int(max_pixels)
            setattr(processor, attr, sub)
    processor.save_pretrained(folder)
    tag = cfg.domain_tag.in_prompt
    info = {
        "base": base_identity(model.get_base_model(), cfg),
        "prompt": {
            "domain_tag": tag,
            "instructions": {d: prompts.instruction(d, tag) for d in prompts.SCHEMA_OF_DOMAIN},
        },
        "pixels": {"min_pixels": int(min_pixels), "max_pixels": int(max_pixels)},
        # ocr_hint: the page's OCR text was in every trained prompt; predict and export give it the same way
        "ocr_hint": None if cfg.ocr_hint.engine == "none" else {
            "engine": cfg.ocr_hint.engine, "resolution": cfg.ocr_hint.resolution,
            "max_tokens": hint_tokens if hint_tokens is not None else hint_token_budget(cfg)},
        "precision": precision(model, cfg),
        "loss": cfg.loss.name,
        "schemas": {name: load_schema(name) for name in SCHEMA_NAMES},
    }
    write_json(folder / INFO_FILE, info)


def read_info(folder: Path | str) -> dict | None:
    path = Path(folder) / INFO_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_base(info: dict, base, cfg: Config, adapter: str) -> None:
    """Refuse a base other than the trained-on one; warn where only the run's settings differ."""
    trained, here = info["base"], base_identity(base, cfg)
    described = lambda b: f"{b['model']} at {b['path']} ({b['quant']})"  # noqa: E731
    differs = [k for k in trained["architecture"] if trained["architecture"][k] != here["architecture"].get(k)]
    a, b = torch.tensor(trained["embedding_probe"]), torch.tensor(here["embedding_probe"])
    if not differs and (a.shape != b.shape or not torch.allclose(a, b, rtol=PROBE_TOLERANCE, atol=PROBE_TOLERANCE * 1e-1)):
        differs.append("weights (embedding probe)")
    if differs:
        raise ValueError(
            f"model.adapter={adapter} was trained on {described(trained)}, but this run loads {described(here)}: "
            f"their {', '.join(differs)} differ, so the adapter would produce garbage. Pass the trained-on base "
            f"(model.path={trained['path']}) or an adapter trained on this one"
        )
    if trained["quant"] != here["quant"]:
        log.warning("model.adapter=%s was trained with quant=%s, this run uses quant=%s", adapter, trained["quant"], here["quant"])
    from vlmsweep.model.quant import torch_dtype

    computed, computes = (info.get("precision") or {}).get("compute"), str(torch_dtype(cfg.quant)).removeprefix("torch.")
    if computed and computed != computes:
        log.warning("model.adapter=%s was trained and evaluated computing in %s, this run computes in %s: greedy answers "
                    "can differ from the run's (quant.dtype=%s computes as it did)", adapter, computed, computes, computed)
    trained_hint = (info.get("ocr_hint") or {}).get("engine", "none")
    if trained_hint != cfg.ocr_hint.engine:
        log.warning("model.adapter=%s was trained with ocr_hint=%s, this run prompts with ocr_hint=%s: the prompt "
                    "differs from the trained one", adapter, trained_hint, cfg.ocr_hint.engine)
    if info["prompt"]["domain_tag"] != cfg.domain_tag.in_prompt:
        log.warning(
            "model.adapter=%s was trained with domain_tag.in_prompt=%s, this run prompts with %s: the instruction differs "
            "from the trained one", adapter, info["prompt"]["domain_tag"], cfg.domain_tag.in_prompt,
        )


class AdapterNotFound(FileNotFoundError):
    """model.adapter names no adapter folder: a user's mistake, told in one line (vlmsweep.__main__)."""


def load_adapter(base, adapter: str, trainable: bool, cfg: Config):
    if not (Path(adapter) / "adapter_config.json").exists():
        what = "no adapter_config.json there" if Path(adapter).is_dir() else "no such folder"
        raise AdapterNotFound(f"model.adapter={adapter}: {what}; point it at a run's adapter/ folder")
    info = read_info(adapter)
    if info is None:
        log.warning("model.adapter=%s has no %s: its base cannot be checked", adapter, INFO_FILE)
    else:
        check_base(info, base, cfg, adapter)
    return PeftModel.from_pretrained(base, adapter, is_trainable=trainable)
