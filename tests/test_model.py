"""The embedded model is a replica of the released Qwen2-VL-2B-Instruct folder and loads through the
production from_pretrained path; the 2B shape is the real one; a missing checkpoint fails in seconds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

from conftest import FAST, compose
from vlmsweep.config import ModelConfig
from vlmsweep.model import release
from vlmsweep.model.load import CheckpointNotFound, resolve_path
from vlmsweep.train.template import has_generation_markers
from vlmsweep.model.tiny import TINY_SIZES, config_json, ensure_embedded_model, shape_config

# The release's non-weight files, kept beside the repository for development; a user has no such folder.
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "qwen2-vl-2b-instruct"
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"release reference files not present ({REFERENCE.name})")


def reference(name: str) -> dict:
    return json.loads((REFERENCE / name).read_text(encoding="utf-8"))


def test_tiny_model_folder_loads_with_from_pretrained_and_no_key_problems(tiny_path):
    model, info = Qwen2VLForConditionalGeneration.from_pretrained(tiny_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    processor = AutoProcessor.from_pretrained(tiny_path)
    assert type(processor).__name__ == "Qwen2VLProcessor"
    assert type(processor.image_processor).__name__.startswith("Qwen2VLImageProcessor")
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id == 151655
    n = sum(p.numel() for p in model.parameters())
    assert 15e6 < n < 30e6  # tied 151,936 x 128 embedding dominates
    # the release's template, without markers, is what the loaded processor and tokenizer carry
    assert processor.chat_template == release.CHAT_TEMPLATE == processor.tokenizer.chat_template
    assert not has_generation_markers(processor.chat_template)
    assert model.config.text_config.hidden_size == TINY_SIZES["text"]["hidden_size"]
    assert model.config.text_config.rope_parameters["mrope_section"] == TINY_SIZES["mrope_section"]


def test_replica_files_are_written_in_the_release_layout(tiny_path):
    config = json.loads((tiny_path / "config.json").read_text())
    assert "text_config" not in config and "rope_parameters" not in config  # not transformers 5's layout
    assert config["rope_scaling"]["type"] == "mrope" and "in_chans" in config["vision_config"]
    assert json.loads((tiny_path / "generation_config.json").read_text()) == release.GENERATION_CONFIG
    assert json.loads((tiny_path / "preprocessor_config.json").read_text()) == release.PREPROCESSOR_CONFIG
    assert json.loads((tiny_path / "chat_template.json").read_text())["chat_template"] == release.CHAT_TEMPLATE
    tok_config = json.loads((tiny_path / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "Qwen2Tokenizer" and tok_config["chat_template"] == release.CHAT_TEMPLATE
    assert {"vocab.json", "merges.txt", "tokenizer.json"} <= {p.name for p in tiny_path.iterdir()}
    with safe_open(str(tiny_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    # transformers 4.x names, as the release's safetensors; tied embeddings: no lm_head
    assert "model.embed_tokens.weight" in keys and "visual.merger.mlp.0.weight" in keys
    assert any(k.startswith("model.layers.0.") for k in keys) and any(k.startswith("visual.blocks.0.") for k in keys)
    assert not any(k.startswith(("model.language_model.", "model.visual.", "lm_head")) for k in keys)


@needs_reference
def test_release_constants_are_the_release_files():
    for name, constant in [("generation_config.json", release.GENERATION_CONFIG),
                           ("preprocessor_config.json", release.PREPROCESSOR_CONFIG),
                           ("config.json", release.CONFIG)]:  # fmt: skip
        assert reference(name) == constant, name
        # written byte for byte as the release writes its files
        assert json.dumps(constant, indent=2, ensure_ascii=False) == (REFERENCE / name).read_text(encoding="utf-8")
    assert reference("chat_template.json")["chat_template"] == release.CHAT_TEMPLATE


@needs_reference
def test_replica_config_has_the_release_keys_and_values_apart_from_sizes(tiny_path):
    ref, ours = reference("config.json"), json.loads((tiny_path / "config.json").read_text())
    assert list(ours) == list(ref) and list(ours["vision_config"]) == list(ref["vision_config"])
    sizes = set(release.TEXT_SIZE_KEYS) | {"torch_dtype", "rope_scaling", "vision_config"}
    assert {k: v for k, v in ours.items() if k not in sizes} == {k: v for k, v in ref.items() if k not in sizes}
    vision_sizes = set(release.VISION_SIZE_KEYS)
    assert {k: v for k, v in ours["vision_config"].items() if k not in vision_sizes} == {
        k: v for k, v in ref["vision_config"].items() if k not in vision_sizes
    }
    # the 2B replica is the release's config.json itself
    assert config_json("qwen2_vl_2b", torch.bfloat16) == ref
    for name in ("generation_config.json", "preprocessor_config.json", "chat_template.json"):
        assert (tiny_path / name).read_bytes() == (REFERENCE / name).read_bytes(), name


def test_cached_model_is_reused_and_identical(tiny_path, cache_dir):
    again = ensure_embedded_model("tiny", cache_dir)
    assert again == tiny_path
    a = Qwen2VLForConditionalGeneration.from_pretrained(tiny_path).state_dict()
    b = Qwen2VLForConditionalGeneration.from_pretrained(again).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_shape_config_is_the_2b_architecture():
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration._from_config(shape_config())
    n = sum(p.numel() for p in model.parameters())
    assert 2.1e9 < n < 2.3e9  # Qwen2-VL-2B: 2.21 B parameters with the tied embedding
    assert len(model.model.visual.blocks) == 32 and len(model.model.language_model.layers) == 28


def test_hub_id_without_network_fails_in_seconds_with_the_download_command(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty hub cache
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    model = ModelConfig(name="qwen2_vl_2b", source="pretrained", path="Qwen/Qwen2-VL-2B-Instruct")
    # HF_HUB_OFFLINE (set for the tests): no attempt at all
    start = time.perf_counter()
    with pytest.raises(CheckpointNotFound, match=r"huggingface-cli download Qwen/Qwen2-VL-2B-Instruct.*model\.path=FOLDER"):
        resolve_path(model, str(tmp_path))
    # online mode but the hub unreachable (a closed local port stands for it): detected, not waited out
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(CheckpointNotFound, match=r"unreachable.*model\.path=FOLDER"):
        resolve_path(model, str(tmp_path))
    assert time.perf_counter() - start < 10
    with pytest.raises(CheckpointNotFound, match="no such folder"):
        resolve_path(ModelConfig(name="qwen2_vl_2b", source="pretrained", path=str(tmp_path / "nope")), str(tmp_path))


@pytest.mark.parametrize("exp", ["exp1", "exp2", "exp3", "exp4"])
def test_presets_on_a_real_checkpoint_get_real_training_settings_and_tiny_keeps_its_own(exp):
    from conftest import compose

    real = compose([f"+experiment={exp}"])
    assert 1e-4 <= real.train.lr <= 2e-4 and real.train.grad_checkpointing
    assert real.train.max_steps >= 1000 and real.train.grad_accum > 1 and real.train.lr_scheduler == "cosine"
    tiny = compose([f"+experiment={exp}", "model=tiny_bnb4" if exp in ("exp1", "exp2") else "model=tiny"])
    default = compose([])
    assert (tiny.train.lr, tiny.train.max_steps, tiny.train.grad_checkpointing) == (
        default.train.lr, default.train.max_steps, default.train.grad_checkpointing)
    assert compose([f"+experiment={exp}", "train.lr=3e-4"]).train.lr == 3e-4  # the command line wins


def test_training_a_real_checkpoint_without_cuda_fails_at_start_up_unless_asked(tmp_path, monkeypatch):
    from vlmsweep.model.load import check_training_device
    from vlmsweep.run import run

    folder = tmp_path / "Qwen2-VL-2B-Instruct"
    folder.mkdir()
    with open(folder / "model-00001-of-00002.safetensors", "wb") as f:
        f.truncate(3 * 2**30)  # sparse: a 2B's size on disk, no disk used
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a driver too old for torch's CUDA, say
    with pytest.raises(RuntimeError, match=r"\(3\.0 GiB of weights\) would train on the CPU: .*train\.allow_cpu=true"):
        run(compose(FAST + ["model=qwen2_vl_2b", f"model.path={folder}"], output_dir=tmp_path / "run"))
    check_training_device(str(folder), allow_cpu=True)  # asked for: no error
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_training_device(str(folder), allow_cpu=False)  # a GPU: no error
