"""End to end on the CPU: `python -m vlmsweep` trains and evaluates; presets and the 2x2 multirun run."""

from __future__ import annotations

import json

import pytest

from conftest import FAST, compose
from helpers import read_json
from vlmsweep.metrics import metric
from vlmsweep.run import run

# Metrics that depend only on seeds and config (not on wall-clock time).
DETERMINISTIC = ("train.loss", "contract.", "content.", "text.", "rate.", "tags.")


def test_default_run_writes_every_output_and_is_reproducible(tmp_path):
    cfg = compose(FAST, output_dir=tmp_path / "a")
    metrics = run(cfg)
    out = tmp_path / "a"
    for name in ("config.yaml", "run_info.json", "metrics.json", "samples.jsonl", "report.md",
                 "adapter/adapter_model.safetensors", "adapter/adapter_config.json"):
        assert (out / name).exists(), name
    info = read_json(out / "run_info.json")
    assert info["status"] == "ok" and info["versions"]["transformers"].startswith("5.")
    assert info["choices"]["quant"] == "bf16" and info["git"]
    assert read_json(out / "metrics.json") == pytest.approx(metrics, nan_ok=True)
    assert 0 < metrics["train.supervised_fraction"] < 1 and metrics["train.steps"] == 2
    assert all(metric(name) for name in metrics)  # every name the run wrote is in the registry (KeyError names one)
    scored = [json.loads(x) for x in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(scored) == 2  # data.test_size=2: every test sample is scored, and the rate is their mean
    assert metrics["contract.strict_parse_rate"] == pytest.approx(
        sum(s["scores"]["contract.strict_parse_rate"] for s in scored) / 2)
    again = run(compose(FAST, output_dir=tmp_path / "b"))
    same = {k: v for k, v in metrics.items() if k.startswith(DETERMINISTIC)}
    assert same and {k: again[k] for k in same} == pytest.approx(same, nan_ok=True)


def test_evaluate_an_existing_adapter_without_training(tmp_path):
    first = tmp_path / "train"
    run(compose(FAST, output_dir=first))
    metrics = run(compose(FAST + ["train.enabled=false", f"model.adapter={first / 'adapter'}"], output_dir=tmp_path / "eval"))
    assert "train.loss" not in metrics
    assert metrics["contract.strict_parse_rate"] == read_json(first / "metrics.json")["contract.strict_parse_rate"]
    # the adapter, not the base, answered: the same greedy outputs as the run that trained it, unlike the base alone
    base = run(compose(FAST + ["train.enabled=false"], output_dir=tmp_path / "base"))
    assert "contract.strict_parse_rate" in base
    raws = {d: [json.loads(x)["raw"] for x in (tmp_path / d / "samples.jsonl").read_text().splitlines()]
            for d in ("train", "eval", "base")}
    assert raws["eval"] == raws["train"] and raws["eval"] != raws["base"]


def test_missing_adapter_and_missing_checkpoint_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.adapter=.*/nothing: no such folder"):
        run(compose(FAST + ["train.enabled=false", f"model.adapter={tmp_path}/nothing"], output_dir=tmp_path / "x"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.adapter=.*/empty: no adapter_config.json there"):
        run(compose(FAST + ["train.enabled=false", f"model.adapter={tmp_path}/empty"], output_dir=tmp_path / "z"))
    with pytest.raises(FileNotFoundError, match="model.path=/nonexistent/qwen.*huggingface-cli download"):
        run(compose(FAST + ["model=qwen2_vl_2b", "model.path=/nonexistent/qwen"], output_dir=tmp_path / "y"))
    assert read_json(tmp_path / "y" / "run_info.json")["status"] == "failed"


# The four presets and the 2x2 multirun (with its report) run through the command line in
# tests/test_readme_commands.py, as the README shows them.


def test_constrained_decoding_ab_through_the_run(tmp_path, tiny_path, monkeypatch):
    """decoding=json_schema through run(): every output is strict, schema-valid JSON (random weights need
    the test-only bias that test_eval_generate uses to close strings within the token budget; it reaches
    generation through monkeypatching, not through run()'s signature)."""
    from transformers import AutoProcessor

    from test_eval_generate import FinishJsonSooner, bias_generation
    from vlmsweep.model.tiny import VOCAB_SIZE

    bias_generation(monkeypatch, FinishJsonSooner(AutoProcessor.from_pretrained(tiny_path).tokenizer, VOCAB_SIZE))
    fast = [o for o in FAST if not o.startswith("eval.max_new_tokens")] + ["eval.max_new_tokens=160", "model=tiny"]
    free = run(compose(fast + ["train.enabled=false"], output_dir=tmp_path / "free"))
    constrained = run(compose(fast + ["train.enabled=false", "decoding=json_schema"], output_dir=tmp_path / "json"))
    assert constrained["contract.strict_parse_rate"] == 1.0 and constrained["contract.schema_valid_rate"] == 1.0
    assert constrained["contract.key_set_rate"] == 1.0 and constrained["tags.parse_fail"] == 0
    assert free["contract.schema_valid_rate"] < 1.0  # the same bias alone does not make valid JSON
