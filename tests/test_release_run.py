"""End to end on the release replica: training through the proven training template, the self-sufficient
adapter folder and its base check, and the pre-quantized replica (model=tiny_bnb4) trained and evaluated."""

from __future__ import annotations

import json
import logging

import pytest
from transformers import AutoProcessor

from conftest import FAST, compose
from helpers import read_json
from vlmsweep.config import visual_tokens_to_pixels
from vlmsweep.model import release
from vlmsweep.model.adapter import INFO_FILE
from vlmsweep.train.template import TRAINING_TEMPLATES, TemplateMismatch
from vlmsweep.model.tiny import ensure_embedded_model
from vlmsweep.run import run

# FAST, shorter still: these runs prove the paths, not the numbers. model=tiny: the release replica as built, not
# the warmed default.
LEAN = FAST + ["model=tiny", "train.max_steps=1", "data.train_size=2", "eval.max_new_tokens=8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("release-run")
    metrics = run(compose(LEAN + ["max_pixels=256tok"], output_dir=out))
    return out, metrics


def test_release_template_trains_through_the_identity_check(trained):
    out, metrics = trained
    template = read_json(out / "run_info.json")["chat_template"]
    # every training sample was rendered by both templates and found token-identical
    assert template == {"source": "training:qwen2_vl", "identity_checked": template["identity_checked"]}
    assert template["identity_checked"] >= 2 and metrics["train.template_identity_checked"] >= 2
    assert metrics["train.steps"] == 1 and "contract.strict_parse_rate" in metrics


def test_adapter_folder_is_self_sufficient(trained, tiny_path):
    adapter = trained[0] / "adapter"
    processor = AutoProcessor.from_pretrained(adapter)
    assert processor.chat_template == release.CHAT_TEMPLATE  # the checkpoint's, not the training template
    size = processor.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (visual_tokens_to_pixels(4), visual_tokens_to_pixels(256))
    info = json.loads((adapter / INFO_FILE).read_text())
    assert info["prompt"]["domain_tag"] is False and "receipt" in info["prompt"]["instructions"]
    assert set(info["schemas"]) == {"prescription", "receipt"} and info["schemas"]["receipt"]["type"] == "object"
    assert info["base"]["path"] == str(tiny_path) and info["base"]["quant"] == "bf16"
    assert info["base"]["architecture"]["hidden_size"] == 128 and len(info["base"]["embedding_probe"]) == 16


def test_adapter_loads_on_its_base_and_is_refused_on_another(trained, cache_dir, tmp_path):
    adapter = trained[0] / "adapter"
    same = run(compose(LEAN + ["train.enabled=false", f"model.adapter={adapter}"], output_dir=tmp_path / "same"))
    assert "contract.strict_parse_rate" in same
    other = ensure_embedded_model("tiny", cache_dir, seed=1)  # same architecture, other weights
    with pytest.raises(ValueError, match=rf"trained on tiny at .*tiny-.* but this run loads qwen2_vl_2b at {other}.*weights"):
        run(compose(LEAN + ["train.enabled=false", f"model.adapter={adapter}", "model=qwen2_vl_2b", f"model.path={other}"],
                    output_dir=tmp_path / "other"))


def test_a_different_training_template_fails_at_start_up(tmp_path, monkeypatch):
    changed = TRAINING_TEMPLATES["qwen2_vl"].replace("<|im_start|>{{ message['role'] }}\n", "<|im_start|>{{ message['role'] }}\n\n")
    assert changed != TRAINING_TEMPLATES["qwen2_vl"]
    monkeypatch.setitem(TRAINING_TEMPLATES, "qwen2_vl", changed)
    with pytest.raises(TemplateMismatch, match=r"first at position \d+: training"):
        run(compose(LEAN, output_dir=tmp_path))
    info = read_json(tmp_path / "run_info.json")
    assert info["status"] == "failed" and "TemplateMismatch" in info["error"]
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "checkpoints").exists()  # no step was taken


@pytest.mark.parametrize("scope", ["llm", "all"])
def test_prequantized_replica_trains_and_evaluates_on_the_cpu(tmp_path, scope, caplog):
    with caplog.at_level(logging.INFO, logger="vlmsweep.model.load"):
        metrics = run(compose(LEAN + ["model=tiny_bnb4", "quant=nf4", f"scope={scope}"], output_dir=tmp_path))
    line = next(r.getMessage() for r in caplog.records if "4-bit linear layers per part" in r.getMessage())
    assert "vision 0/" in line and "merger 0/" in line  # the checkpoint's skip list: model.visual
    assert metrics["train.steps"] == 1 and "contract.strict_parse_rate" in metrics
    assert (metrics["train.trainable_params.vision"] > 0) == (scope == "all")
    assert json.loads((tmp_path / "adapter" / INFO_FILE).read_text())["base"]["prequantized"] is True


@pytest.mark.parametrize("skip", [["visual", "lm_head"], ["lm_head", "multi_modal_projector", "merger", "modality_projection"]],
                         ids=["4.x-names", "unsloth-style"])
def test_a_prequantized_checkpoint_with_a_foreign_skip_list_trains_and_evaluates(cache_dir, tmp_path, skip):
    """The release's 4-bit copy as the user passes it (model=qwen2_vl_2b_bnb4 model.path=DIR), its skip list spelled
    as transformers 4.x or unsloth wrote it: the vision tower loads in 16-bit, as saved, and the run goes through."""
    import shutil

    from userdata import run_dir, vlmsweep

    folder = tmp_path / "Qwen2-VL-2B-Instruct-bnb-4bit"
    shutil.copytree(ensure_embedded_model("tiny_bnb4", cache_dir), folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"]["llm_int8_skip_modules"] = skip
    (folder / "config.json").write_text(json.dumps(config))
    proc = vlmsweep(["model=qwen2_vl_2b_bnb4", f"model.path={folder}", "quant=nf4", "tracker=none", "max_pixels=64tok",
                     "train.max_steps=1", "train.batch_size=2", "train.logging_steps=1", "data.train_size=2",
                     "data.test_size=2", "eval.batch_size=2", "eval.max_new_tokens=8", f"cache_dir={cache_dir}"],
                    cwd=tmp_path)
    assert "4-bit linear layers per part: vision 0/8, merger 0/2, llm 14/15" in proc.stdout + proc.stderr
    metrics = read_json(run_dir(proc) / "metrics.json")
    assert metrics["train.steps"] == 1 and "contract.strict_parse_rate" in metrics
