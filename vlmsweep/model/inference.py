"""Open a trained folder for inference: an adapter (with its base) or a model folder, with its own settings.

A run's adapter folder carries what inference needs besides the base weights (adapter.py): the processor at
the run's pixel budget, the instructions it was trained with (domain tag included) and the schemas its answers
follow. `open_folder` loads the base the adapter records, checks it is the trained-on one (adapter.check_base),
and returns those settings, so `predict` and `export` ask exactly what training taught. A model folder (an
exported merged model, or a checkpoint) is read the same way; without vlmsweep_adapter.json it gets the
project's current prompts and schemas and its own processor's pixel budget, and says so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmsweep import prompts
from vlmsweep.config import Config
from vlmsweep.model import adapter as model_adapter
from vlmsweep.model import load as model_load
from vlmsweep.config.compose import compose

log = logging.getLogger(__name__)

GENERIC_MODEL = "qwen2_vl_2b"  # the `model` option of any local checkpoint folder (model.path=FOLDER)


@dataclass(frozen=True)
class Settings:
    """What a folder was trained to answer: prompts, pixel budget and schemas (all from its own files)."""

    domain_tag: bool
    instructions: dict[str, str]  # domain -> the instruction text, domain tag included when trained so
    min_pixels: int
    max_pixels: int
    schemas: dict[str, dict]  # schema name -> JSON schema
    source: str  # where they came from: the folder's vlmsweep_adapter.json, or the project's defaults
    ocr_hint: dict | None = None  # {engine, resolution, max_tokens} when trained with the page's OCR text in the prompt

    def schema_for(self, domain: str) -> dict:
        return self.schemas[prompts.schema_name(domain)]

    def instruction(self, domain: str) -> str:
        prompts.schema_name(domain)  # an unknown domain is a ValueError that lists the known ones
        return self.instructions.get(domain) or prompts.instruction(domain, self.domain_tag)

    def chat_text(self, processor, domain: str, hint: str | None = None) -> str:
        """The prompt for one image of `domain` (and its OCR text when the folder was trained with ocr_hint), through
        the folder's chat template, ready to generate."""
        messages = prompts.messages(domain, self.domain_tag, text=self.instruction(domain), hint=hint)
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@dataclass
class Opened:
    model: Any  # a PeftModel (adapter folder) or the model itself (model folder), in eval mode
    processor: Any  # the folder's own processor
    cfg: Config  # the composed config the base was loaded with (model and quant options)
    folder: Path
    kind: str  # adapter | model
    settings: Settings
    info: dict | None  # the folder's vlmsweep_adapter.json, when it has one


def folder_kind(folder: Path) -> str:
    if (folder / "adapter_config.json").is_file():
        return "adapter"
    if (folder / "config.json").is_file():
        return "model"
    if (folder / "adapter" / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{folder} is a run folder: give its adapter, {folder / 'adapter'}")
    raise FileNotFoundError(
        f"{folder}: neither adapter_config.json (a run's adapter/ folder) nor config.json (a model folder, e.g. "
        "one written by `python -m vlmsweep.export`) is there"
    )


def settings_of(folder: Path, info: dict | None, processor) -> Settings:
    if info is not None:
        return Settings(
            domain_tag=bool(info["prompt"]["domain_tag"]),
            instructions=dict(info["prompt"]["instructions"]),
            min_pixels=int(info["pixels"]["min_pixels"]),
            max_pixels=int(info["pixels"]["max_pixels"]),
            schemas=dict(info["schemas"]),
            source=f"{folder / model_adapter.INFO_FILE}",
            ocr_hint=info.get("ocr_hint"),
        )
    from vlmsweep.data.schema import SCHEMA_NAMES, load_schema

    # transformers 5's Qwen2-VL image processor keeps the budget in `size` (shortest_edge / longest_edge, in pixels);
    # 4.x kept it in min_pixels / max_pixels attributes as well, which 5.x no longer sets.
    size = processor.image_processor.size
    min_pixels, max_pixels = int(size["shortest_edge"]), int(size["longest_edge"])
    log.warning("%s has no %s: prompting with the project's current instructions and schemas, and the folder's "
                "processor budget (max_pixels %s)", folder, model_adapter.INFO_FILE, max_pixels)
    return Settings(
        domain_tag=False,
        instructions={},
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        schemas={name: load_schema(name) for name in SCHEMA_NAMES},
        source="the project's defaults",
    )


def base_config(info: dict, tag: bool) -> tuple[Config, str | None]:
    """The config the adapter's base loads with, and the recorded base folder when it still exists."""
    base = info["base"]
    # The prompt it was trained with, and the dtype it was trained and evaluated in (an adapter folder written
    # before that was recorded computes in its quant option's dtype)
    computed = (info.get("precision") or {}).get("compute")
    hint = (info.get("ocr_hint") or {}).get("engine", "none")  # predict OCRs as training did (Settings.ocr_hint)
    trained = [f"domain_tag={'prompt' if tag else 'none'}", f"ocr_hint={hint}"] + (
        [f"quant.dtype={computed}"] if computed else [])
    recorded = base.get("path") if base.get("path") and Path(base["path"]).is_dir() else None
    from hydra.errors import MissingConfigException

    try:
        cfg = compose([f"model={base['model']}", f"quant={base['quant']}", *trained])
    except MissingConfigException:  # a model option from the user's own config folder: load by path
        if recorded is None:
            raise FileNotFoundError(
                f"the adapter's base ({base['model']} at {base.get('path')}) is not a folder here: copy the base "
                "checkpoint there, or train the adapter again on a base this machine has"
            ) from None
        cfg = None
    if cfg is None or (cfg.model.source == "pretrained" and recorded):
        cfg = compose([f"model={GENERIC_MODEL}", f"model.path={recorded}", f"model.family={base['family']}",
                       f"model.prequantized={str(bool(base['prequantized'])).lower()}", f"quant={base['quant']}",
                       *trained])
    return cfg, recorded


# The `quant` option that computes in a 16/32-bit folder's own dtype (config.json's `dtype`, `torch_dtype` in 4.x)
QUANT_OF_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def model_config(folder: Path, info: dict | None) -> Config:
    """A model folder loads as a local checkpoint: its family from config.json, 4-bit when it is saved so, else in
    the dtype it is saved in (an export written in float32 computes in float32, not in the release's bf16)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    family = "qwen2_5_vl" if config.get("model_type") == "qwen2_5_vl" else "qwen2_vl"
    prequantized = config.get("quantization_config") is not None
    saved = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    quant = "nf4" if prequantized else QUANT_OF_DTYPE.get(str(saved), "bf16")
    tag = bool(info and info["prompt"]["domain_tag"])
    return compose([f"model={GENERIC_MODEL}", f"model.path={folder}", f"model.family={family}",
                    f"model.prequantized={str(prequantized).lower()}", f"quant={quant}",
                    f"domain_tag={'prompt' if tag else 'none'}"])


def open_folder(folder: Path | str, *, with_adapter: bool = True) -> Opened:
    """Load a trained folder for inference. `with_adapter=False` returns the adapter's base alone (export
    attaches the adapter itself, after dequantising a 4-bit base)."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (give a run's adapter/ folder or a model folder)")
    kind = folder_kind(folder)
    info = model_adapter.read_info(folder)
    processor = model_load.load_processor(str(folder))
    settings = settings_of(folder, info, processor)
    if kind == "adapter":
        if info is None:
            raise FileNotFoundError(
                f"{folder} has no {model_adapter.INFO_FILE}, so its base, prompts and pixel budget are unknown: "
                "give the adapter/ folder of a vlmsweep run (it writes that file next to peft's)"
            )
        cfg, recorded = base_config(info, settings.domain_tag)
        path = recorded or model_load.resolve_path(cfg.model, cfg.cache_dir)
        base = model_load.load_base_model(cfg.model, cfg.quant, path)
        model = model_adapter.load_adapter(base, str(folder), trainable=False, cfg=cfg) if with_adapter else base
    else:
        cfg = model_config(folder, info)
        model = model_load.load_base_model(cfg.model, cfg.quant, str(folder))
    model.eval()
    if kind == "adapter":
        from vlmsweep.model.quant import torch_dtype

        what = f"base {cfg.model.name}, quant {cfg.quant.name}, computing in " \
               f"{str(torch_dtype(cfg.quant)).removeprefix('torch.')}"
    else:  # a checkpoint (an export, say): its own weights; what it was merged from, where recorded
        merged = (info or {}).get("merged", {}).get("base", {})
        dtype = next(iter(model.parameters())).dtype
        what = f"{cfg.model.family} checkpoint, {str(dtype).removeprefix('torch.')} weights" + (
            f", merged from an adapter on {merged.get('model')}" if merged.get("model") else "")
    log.info("loaded %s folder %s (%s); prompts, budget and schemas from %s", kind, folder, what, settings.source)
    return Opened(model=model, processor=processor, cfg=cfg, folder=folder, kind=kind, settings=settings, info=info)


def with_settings(info: dict, **changes: Any) -> dict:
    """A copy of a vlmsweep_adapter.json dict with top-level sections replaced (export records its base)."""
    out = json.loads(json.dumps(info))
    out.update(changes)
    return out

