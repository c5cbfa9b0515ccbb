"""export --vllm-lora on adapter files alone (no model): the rename to the release's names, and the refusal of an
adapter with LoRA outside the language model. The merge itself (tiny and the 4-bit replica, reloaded and compared)
runs from the command line in tests/test_readme_commands.py (export steps)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlmsweep.export import main, vllm_lora

LLM = "base_model.model.model.language_model.layers.0.self_attn.q_proj"
VISION = "base_model.model.model.visual.blocks.0.attn.qkv"


def _adapter(folder, modules, modules_to_save=None):
    folder.mkdir(parents=True)
    weights = {}
    for i, m in enumerate(modules):
        weights[f"{m}.lora_A.weight"] = torch.full((4, 8), float(i + 1))
        weights[f"{m}.lora_B.weight"] = torch.full((8, 4), float(-i - 1))
    save_file(weights, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "base_model_name_or_path": "BASE",
              "target_modules": r"^model\.language_model\.layers\.\d+\.self_attn\.q_proj$",
              "modules_to_save": modules_to_save}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return weights


def test_an_llm_adapter_is_written_under_the_release_names(tmp_path):
    mlp = "base_model.model.model.language_model.layers.1.mlp.down_proj"
    weights = _adapter(tmp_path / "adapter", [LLM, mlp])
    done = vllm_lora(tmp_path / "adapter", tmp_path / "lora")
    out = load_file(str(tmp_path / "lora" / "adapter_model.safetensors"))
    assert sorted(out) == sorted(k.replace(".model.language_model.", ".model.", 1) for k in weights)
    assert all(torch.equal(out[k.replace(".model.language_model.", ".model.", 1)], v) for k, v in weights.items())
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["target_modules"] == ["down_proj", "q_proj"] == done["target_modules"]
    assert (config["r"], config["lora_alpha"], config["base_model_name_or_path"]) == (4, 8, "BASE")


@pytest.mark.parametrize("modules, to_save", [([LLM, VISION], None), ([LLM], ["lm_head"])])
def test_an_adapter_beyond_the_language_model_is_refused_with_the_fix(tmp_path, capsys, modules, to_save):
    _adapter(tmp_path / "adapter", modules, to_save)
    assert main([str(tmp_path / "adapter"), "--out", str(tmp_path / "lora"), "--vllm-lora"]) == 2
    err = capsys.readouterr().err
    assert "covers the language model only" in err and "python -m vlmsweep.export" in err
    assert (VISION if to_save is None else "lm_head") in err
    assert not (tmp_path / "lora").exists()


def test_a_folder_that_is_no_adapter_is_named(tmp_path, capsys):
    assert main([str(tmp_path), "--out", str(tmp_path / "merged")]) == 2
    assert "neither adapter_config.json" in capsys.readouterr().err
    _adapter(tmp_path / "run" / "adapter", [LLM])  # a run folder instead of its adapter/: the fix is named
    assert main([str(tmp_path / "run"), "--out", str(tmp_path / "merged")]) == 2
    assert f"give its adapter, {tmp_path / 'run' / 'adapter'}" in capsys.readouterr().err
