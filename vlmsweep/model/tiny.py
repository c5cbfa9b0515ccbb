"""The embedded models: replicas of the released Qwen2-VL-2B-Instruct folder with random weights.

`tiny` shrinks the sizes (~20 M parameters, the real vocabulary); `qwen2_vl_2b` keeps the 2B's
sizes (memory and speed without the weights). Both folders are written as the release's is
(`vlmsweep.model.release`): the 4.x flat `config.json`, safetensors under the 4.x parameter names,
the release's chat template (no `{% generation %}` markers), `generation_config.json` (it samples),
`preprocessor_config.json` and tokenizer files. They load through the same `from_pretrained(path)`
code as a downloaded release, so a green test on them means the release's files work too.
`tiny_bnb4` is the tiny replica saved by bitsandbytes in 4-bit, as a pre-quantized checkpoint is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from transformers import BitsAndBytesConfig, Qwen2VLConfig, Qwen2VLForConditionalGeneration

from vlmsweep.model import release
from vlmsweep.model.cache import build_once, damage
from vlmsweep.model.tokenizer import FIRST_SPECIAL_ID, SPECIAL_TOKENS, build_qwen2_tokenizer

# Released Qwen2-VL pads its embedding matrix to a multiple of 128 above the 151,657 used ids.
VOCAB_SIZE = release.CONFIG["vocab_size"]

# Bump when anything that defines the embedded models' files changes: it names the cache folder.
TINY_VERSION = 3

# Sizes of the tiny replica (everything else is the release's). mrope sections sum to head_dim/2 = 16;
# the vision hidden_size is the text hidden size (the merger projects into the LLM).
TINY_SIZES = dict(
    text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_window_layers=2),
    vision=dict(depth=2, embed_dim=64, num_heads=4, mlp_ratio=2, hidden_size=128),
    mrope_section=[4, 6, 6],
)  # fmt: skip

# What `tiny_bnb4` keeps out of 4-bit: its own choice, recorded in its config.json like unsloth's
# list is in theirs (vision tower and output layer in 16/32-bit).
TINY_BNB4_SKIP = ["model.visual", "lm_head"]

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def config_json(architecture: str, dtype: torch.dtype = torch.float32) -> dict:
    """The replica's config.json: the release's, with the architecture's sizes and stored dtype."""
    match architecture:
        case "tiny":
            return release.release_config(**TINY_SIZES, dtype=DTYPE_NAMES[dtype])
        case "qwen2_vl_2b":
            c = release.CONFIG
            return release.release_config(
                {k: c[k] for k in release.TEXT_SIZE_KEYS},
                {k: c["vision_config"][k] for k in release.VISION_SIZE_KEYS},
                c["rope_scaling"]["mrope_section"],
                dtype=DTYPE_NAMES[dtype],
            )
    raise ValueError(f"unknown embedded architecture {architecture!r}: expected one of {sorted(ARCHITECTURES)}")


def _parse(flat: dict) -> Qwen2VLConfig:
    """Read a 4.x flat config exactly as `from_pretrained` reads the release's config.json."""
    return Qwen2VLConfig.from_dict(json.loads(json.dumps(flat)))


def tiny_config() -> Qwen2VLConfig:
    """~20 M parameters, almost all in the (tied) 151,936 x 128 embedding."""
    return _parse(config_json("tiny"))


def shape_config(**text_overrides) -> Qwen2VLConfig:
    """The real Qwen2-VL-2B-Instruct architecture (config.json of the release), for memory/speed.

    `text_overrides` are 4.x top-level keys that reshape the LLM (the memory tests use a mid-size
    one); the merger follows its hidden size.
    """
    flat = config_json("qwen2_vl_2b", torch.bfloat16)
    flat.update(text_overrides)
    flat["vision_config"]["hidden_size"] = flat["hidden_size"]
    return _parse(flat)


ARCHITECTURES = {"tiny": tiny_config, "qwen2_vl_2b": shape_config, "tiny_bnb4": tiny_config}


def write_tokenizer(folder: Path) -> None:
    """tokenizer.json, vocab.json and merges.txt, and a tokenizer_config.json as the release's."""
    tokenizer = build_qwen2_tokenizer()
    tokenizer.save_pretrained(folder)
    tokenizer.backend_tokenizer.model.save(str(folder))  # vocab.json, merges.txt
    token_entry = dict(lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)
    config = {
        "added_tokens_decoder": {str(FIRST_SPECIAL_ID + i): {"content": t, **token_entry} for i, t in enumerate(SPECIAL_TOKENS)},
        "additional_special_tokens": list(SPECIAL_TOKENS[1:]),  # all but <|endoftext|>, as the release lists them
    }
    config |= release.TOKENIZER_CONFIG
    release.write_json(folder / "tokenizer_config.json", config)


def write_replica(config: dict, folder: Path, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
    """Random weights for `config` (4.x layout), and the release's other files beside them."""
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(_parse(config)).to(dtype)
    # transformers 5 writes the weights under the 4.x names already (tests/test_model.py checks);
    # its config.json and generation_config.json are replaced by the release's below.
    model.save_pretrained(folder)
    for name in ("chat_template.jinja", "generation_config.json"):
        (folder / name).unlink(missing_ok=True)
    write_release_files(config, folder)


def write_release_files(config: dict, folder: Path) -> None:
    """Every file of the release's folder but the weights: `config` (4.x layout), the generation, processor and chat
    template configs and the tokenizer files."""
    release.write_json(folder / "config.json", config)
    release.write_json(folder / "generation_config.json", release.GENERATION_CONFIG)
    release.write_json(folder / "preprocessor_config.json", release.PREPROCESSOR_CONFIG)
    release.write_json(folder / "chat_template.json", {"chat_template": release.CHAT_TEMPLATE})
    write_tokenizer(folder)


def write_prequantized(source: Path, folder: Path, skip: list[str] | None = None, device: str = "cpu") -> None:
    """The replica quantized by bitsandbytes (NF4, double quant) and saved in 4-bit, as a
    pre-quantized checkpoint is: packed weights with their quant-state tensors, and a
    `quantization_config` with its own skip list in config.json. `skip`: the list config.json records
    (TINY_BNB4_SKIP, which is what is kept out; another spelling is written as given, the tensors unchanged)."""
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=list(TINY_BNB4_SKIP),
    )
    model = Qwen2VLForConditionalGeneration.from_pretrained(
        source, quantization_config=quantization, dtype=torch.bfloat16, device_map={"": device}
    )
    model.save_pretrained(folder)
    del model
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config["torch_dtype"] = "bfloat16"
    saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["quantization_config"] = saved["quantization_config"]
    if skip is not None:
        config["quantization_config"]["llm_int8_skip_modules"] = list(skip)
    release.write_json(folder / "config.json", config)
    for name in ("generation_config.json", "preprocessor_config.json", "chat_template.json", "tokenizer.json",
                 "tokenizer_config.json", "vocab.json", "merges.txt"):
        shutil.copyfile(source / name, folder / name)


def ensure_embedded_model(
    architecture: str, cache_dir: Path | str, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Path:
    """Build the named embedded model once into the cache and return its folder.

    The folder name carries a hash of the config and TINY_VERSION; it is written to a temporary
    folder and renamed, so concurrent sweep workers never load a half-written model, and checked
    before each use (`vlmsweep.model.cache`: a damaged one is built again).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown embedded architecture {architecture!r}: expected one of {sorted(ARCHITECTURES)}")
    prequantized = architecture == "tiny_bnb4"
    config = config_json("tiny" if prequantized else architecture, dtype)
    key = hashlib.sha256(
        json.dumps([TINY_VERSION, seed, str(dtype), config, prequantized and TINY_BNB4_SKIP], sort_keys=True).encode()
    ).hexdigest()[:12]
    cache_dir = Path(os.path.expanduser(str(cache_dir)))
    folder = cache_dir / "models" / f"{architecture}-{key}"
    if damage(folder) is None:
        return folder
    source = ensure_embedded_model("tiny", cache_dir, seed=seed, dtype=dtype) if prequantized else None

    def write(tmp: Path) -> Path:
        if source is not None:
            write_prequantized(source, tmp)
        else:
            write_replica(config, tmp, seed=seed, dtype=dtype)
        return tmp

    return build_once(folder, write)


def ensure_tiny_model(cache_dir: Path | str) -> Path:
    return ensure_embedded_model("tiny", cache_dir)
