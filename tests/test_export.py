"""export without a model: --vllm-lora on adapter files alone (the rename to the release's names, the refusal of an
adapter with LoRA outside the language model), the mismatch error, and the dtype a model folder computes in. The
merge itself (a default, a quant=nf4 and a per-domain run's adapter, and the 4-bit replica's; reloaded, compared,
loaded with from_pretrained and evaluated) runs from the command line in tests/test_readme_commands.py (export steps)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlmsweep.cli.export import main
from vlmsweep.pipeline.export import vllm_lora

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


def _compared(differ, diff):
    return {"greedy_equal": not differ, "differ": differ, "max_abs_logit_diff": diff}


def test_a_mismatch_names_the_dtype_that_answers_alike_or_says_none_does():
    from vlmsweep.pipeline.export import mismatch_message

    check = _compared(["check-0-prescription_ko"], 0.13) | {"max_abs_logit": 12.7}
    found = mismatch_message("bfloat16", "float32", "float32", check, {"float32": _compared([], 6.2e-6)})
    assert "in bfloat16 answers ['check-0-prescription_ko'] differently" in found and "0.13" in found
    assert "export with --dtype float32 (the dtype the adapter was trained in)" in found and "6.2e-06" in found
    none = mismatch_message("bfloat16", "bfloat16", "bfloat16", check, {"float32": _compared(["check-0-prescription_ko"], 0.052)})
    assert "--dtype" not in none.split("no other dtype")[1] and "float32: 1 differ, largest logit difference 0.052" in none
    assert "computed in bfloat16" in none and "quant=fp32" in none


@pytest.mark.parametrize("saved, quant", [("float32", "fp32"), ("bfloat16", "bf16"), ("float16", "fp16")])
def test_a_model_folder_computes_in_the_dtype_it_is_saved_in(tmp_path, saved, quant):
    from vlmsweep.model.inference import model_config

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_vl", "dtype": saved}))
    cfg = model_config(tmp_path, None)
    assert (cfg.quant.name, cfg.quant.dtype, cfg.model.path) == (quant, saved, str(tmp_path))


def test_a_16bit_adapter_is_warned_of_the_expected_mismatch_before_merging(tmp_path, monkeypatch, caplog):
    import logging
    from types import SimpleNamespace

    from vlmsweep.pipeline import export
    from vlmsweep.config import QuantConfig
    from vlmsweep.model import inference

    quant = QuantConfig(name="bf16", dtype="bfloat16", cpu_bf16="keep")  # a GPU's bf16 run, as its folder records it
    opened = SimpleNamespace(cfg=SimpleNamespace(quant=quant), info={"precision": {"weights": "bfloat16"}}, folder=tmp_path)
    monkeypatch.setattr(inference, "open_folder", lambda folder, **kw: opened)

    class Merging(Exception):
        pass

    def merging(*args):
        raise Merging

    monkeypatch.setattr(export, "merged_model", merging)
    with caplog.at_level(logging.WARNING, logger="vlmsweep.pipeline.export"), pytest.raises(Merging):
        export.export_merged(tmp_path, tmp_path / "merged", checks=0, max_new_tokens=4)
    assert any("the adapter computed in bfloat16" in r.getMessage() and "ExportMismatch" in r.getMessage()
               for r in caplog.records)  # said before the merge began
    assert export.merge_warning("float32") is None
