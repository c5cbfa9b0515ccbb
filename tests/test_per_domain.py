"""adapters=per_domain: the domain grouping and the router's scores. (The multirun single vs per_domain with its report,
routed evaluation and routed predict run as README steps in tests/test_readme_commands.py, on a user's manifest and scans.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import compose
from vlmsweep.pipeline import routing
from vlmsweep.data import Record

GROUPS = {"prescriptions": ["prescription_ko", "prescription_zh", "prescription_en"],
          "receipts": ["receipt", "receipt_ko", "receipt_zh"]}


def rec(i: int, domain: str) -> Record:
    return Record(id=f"r{i}", image=Path(f"/nowhere/{i}.png"), domain=domain, target={}, image_domain=domain)


def test_split_by_group_keeps_order_and_names_what_does_not_fit():
    records = [rec(0, "receipt_ko"), rec(1, "prescription_zh"), rec(2, "receipt"), rec(3, "prescription_ko")]
    split = routing.split_by_group(records, GROUPS, "training")
    assert list(split) == ["prescriptions", "receipts"]
    assert [r.id for r in split["prescriptions"]] == ["r1", "r3"] and [r.id for r in split["receipts"]] == ["r0", "r2"]
    with pytest.raises(ValueError, match=r"training record 'r9'.*domain 'receipt_zh' is in no adapter group"):
        routing.split_by_group(records + [rec(9, "receipt_zh")], {"prescriptions": GROUPS["prescriptions"],
                                                                    "receipts": ["receipt", "receipt_ko"]}, "training")
    with pytest.raises(ValueError, match=r"no sample of group\(s\) receipts .*data_mix"):
        routing.split_by_group([rec(1, "prescription_zh")], GROUPS, "training")


def test_grouping_and_option_errors_at_composition():
    cfg = compose(["adapters=per_domain"])
    assert cfg.adapters.per_domain and cfg.adapters.routing == "known"
    assert routing.domain_groups(cfg.adapters.groups)["receipt_zh"] == "receipts"
    assert not compose([]).adapters.per_domain  # single is the default
    cases = {
        "in both prescriptions and receipts": ["adapters.groups.receipts=[receipt,prescription_ko]"],
        "unknown domain 'recipt'": ["adapters.groups.receipts=[recipt]"],
        "loop.cycles>0": ["loop.cycles=1"],
        "needs model.adapter=RUN_DIR/adapters": ["train.enabled=false"],
        "adapters.routing='guess': expected one of known, model": ["adapters.routing=guess"],
        "at least two": ["~adapters.groups.receipts"],
    }
    for message, overrides in cases.items():
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            compose(["adapters=per_domain", *overrides])
    with pytest.raises(ValueError, match="apply to adapters=per_domain only"):
        compose(["adapters.routing=model"])  # single has nothing to route


def test_router_scores_are_the_answers_log_probabilities(tiny_path):
    """Batched, left-padded, logits kept only at the answer: each score must equal the log-probability of that
    answer computed alone with every logit, and the route is the most probable group."""
    import torch
    from PIL import Image

    from vlmsweep.model import load as model_load

    cfg = compose(["adapters=per_domain", "max_pixels.visual_tokens=16", "quant=fp32"])  # fp32 on every CPU: a
    # bf16-native CPU rounds a batch of answers apart from one answer alone by ~0.02; the scores' definition is the point
    base, processor, _ = model_load.load(cfg)
    base.eval()
    images = [Image.new("RGB", (224, 280), "white"), Image.new("RGB", (140, 420), (90, 90, 90))]
    groups = ["prescriptions", "receipts", "other"]  # answers of different token lengths
    budget = {"min_pixels": 4 * 784, "max_pixels": 16 * 784}
    routes = routing.route_images(base, processor, images, groups, **budget)
    tok = processor.tokenizer
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": routing.question(groups)}]}],
        add_generation_prompt=True, tokenize=False)
    size = {"shortest_edge": budget["min_pixels"], "longest_edge": budget["max_pixels"]}
    for image, route in zip(images, routes):
        for g in groups:
            ids = tok(g + tok.eos_token, add_special_tokens=False)["input_ids"]
            inputs = processor(text=[prompt + g + tok.eos_token], images=[image], return_tensors="pt", size=size)
            with torch.inference_mode():
                logp = torch.log_softmax(base(**inputs).logits.float()[0], dim=-1)
            n = inputs["input_ids"].shape[1]
            expected = sum(float(logp[n - len(ids) - 1 + j, t]) for j, t in enumerate(ids))
            assert route.scores[g] == pytest.approx(expected, abs=1e-3)
        assert route.group == max(groups, key=route.scores.get)


def test_per_domain_and_the_loop_refuse_several_processes_in_run_info(tmp_path, monkeypatch):
    """One refusal (stages.one_process_only) for both, raised by run() before any data or model, and recorded."""
    import json

    from vlmsweep import run as run_mod

    monkeypatch.setattr(run_mod, "world_size", lambda: 2)
    for overrides, message in ((["adapters=per_domain"], "adapters=per_domain cannot run under torchrun"),
                               (["loop.cycles=1"], "loop.cycles=1 cannot run under torchrun")):
        out = tmp_path / overrides[0].replace("=", "_")
        with pytest.raises(ValueError, match=message):
            run_mod.run(compose(overrides + ["tracker=none"], output_dir=out))
        assert json.loads((out / "run_info.json").read_text())["status"] == "failed"
