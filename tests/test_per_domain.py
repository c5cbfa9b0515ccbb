"""adapters=per_domain: the domain grouping, the router's scores, and one multirun single vs per_domain with its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import compose
from helpers import read_json, vlmsweep
from vlmsweep import routing
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
        "expected known or model": ["adapters.routing=guess"],
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

    cfg = compose(["adapters=per_domain", "max_pixels.visual_tokens=16"])
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


FAST_PER_DOMAIN = ["train.max_steps=1", "train.batch_size=2", "train.logging_steps=1", "data.train_size=4",
                   "data.test_size=3", "eval.batch_size=3", "eval.max_new_tokens=4", "max_pixels.visual_tokens=64",
                   "tracker=none"]


@pytest.mark.slow
def test_single_vs_per_domain_multirun_and_report(tmp_path):
    """One command trains one adapter (single) and two (per_domain), evaluates with routing, and the comparison
    report shows both rows with routing accuracy. (Evaluation and predict routed by the router run as README steps
    in tests/test_readme_commands.py, on the user's manifest and scans.)"""
    proc = vlmsweep("-m", "adapters=single,per_domain", *FAST_PER_DOMAIN, "hydra.sweep.dir=multirun", cwd=tmp_path)
    assert "2 runs" in proc.stdout
    runs = {read_json(d / "run_info.json")["choices"]["adapters"]: d for d in (tmp_path / "multirun").iterdir()
            if (d / "run_info.json").is_file()}
    assert set(runs) == {"single", "per_domain"}
    per = runs["per_domain"]
    assert (runs["single"] / "adapter").is_dir() and not (per / "adapter").exists()
    for group in ("prescriptions", "receipts"):  # each a self-sufficient adapter folder
        assert {"adapter_config.json", "adapter_model.safetensors", "vlmsweep_adapter.json"} <= \
            {p.name for p in (per / "adapters" / group).iterdir()}
    assert read_json(per / "adapters" / "routing.json")["groups"]["receipts"] == ["receipt", "receipt_ko", "receipt_zh"]
    metrics = read_json(per / "metrics.json")
    samples = [json.loads(x) for x in (per / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(samples) == 3 and {s["route"]["known"] for s in samples} == {"prescriptions", "receipts"}
    for s in samples:  # routing=known: each page went to its own group's adapter; the router was asked anyway
        assert s["adapter"] == s["route"]["known"] == routing.group_of(s["domain"], GROUPS)
        assert s["route"]["model"] == max(s["route"]["scores"], key=s["route"]["scores"].get)
    right = sum(s["route"]["model"] == s["route"]["known"] for s in samples)
    assert metrics["routing.accuracy"] == pytest.approx(right / 3)
    for group in ("prescriptions", "receipts"):
        assert f"by_group.{group}.contract.key_set_rate" in metrics and f"by_group.{group}.train.loss" in metrics
    assert "## Per-domain adapters" in (per / "report.md").read_text(encoding="utf-8")
    assert "routing.accuracy" not in read_json(runs["single"] / "metrics.json")

    vlmsweep("multirun", cwd=tmp_path, module="vlmsweep.report")
    table = (tmp_path / "multirun" / "report" / "summary.md").read_text(encoding="utf-8").splitlines()
    header = next(line for line in table if line.startswith("| run |")).split(" | ")
    rows = {line.split(" | ")[1]: line.split(" | ") for line in table if "| single |" in line or "| per_domain |" in line}
    assert set(rows) == {"single", "per_domain"}
    col = next(i for i, h in enumerate(header) if h.startswith("routing.accuracy"))
    assert float(rows["per_domain"][col]) == pytest.approx(right / 3, abs=1e-3) and rows["single"][col].strip() == ""
    assert any(h.startswith("rate.leakage") for h in header) and any(h.startswith("content.") for h in header)
