"""The metric registry (vlmsweep/metrics.py): every name a run writes is in it with a direction, scoped names take
their metric's, an unknown name is an error that names it, and one "worst sample" serves mining and the report."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from vlmsweep import metrics as registry
from vlmsweep.evaluate import aggregate, score_outputs
from vlmsweep.evaluate.outputs import render_report
from vlmsweep.evaluate.evaluators import Evaluation, Slices
from vlmsweep.model.memory import MemoryEstimate
from vlmsweep.prompts import serialize
from vlmsweep.report.effects import Effect, describe

REPO = Path(__file__).resolve().parent.parent
RX = {"patient_name": "Kim", "patient_id": "800101", "institution": "Seoul", "issue_date": "2024-03-15",
      "diagnosis_codes": ["J06.9"], "medications": [{"name": "Tylenol", "strength": "500 mg", "dose": 1,
                                                      "frequency": 3, "days": 5}], "prescriber": None}
RECEIPT = {"store": "Cafe", "date": "2024-01-02", "address": None, "items": [], "subtotal": "9.00", "tax": "0.90",
           "total": "9.90"}


def scored_samples() -> list[dict]:
    records = [{"id": "rx", "domain": "prescription_ko", "target": RX},
               {"id": "rx2", "domain": "prescription_ko", "target": RX},
               {"id": "rc", "domain": "receipt", "target": RECEIPT}]
    raws = [serialize(RX), serialize(dict(RX, patient_id="800107")), "Total is 9.90"]
    costs = [{"seconds": 1.0, "visual_tokens": 100, "output_tokens": 50}] * 3
    return score_outputs(raws, records, costs=costs)[1]


def test_every_metric_evaluation_and_a_run_write_is_registered_with_a_direction():
    samples = scored_samples()
    written = dict(aggregate(samples))  # overall, by_domain.<d>.<m>, tags.<tag>, cost.*
    slices = Slices({"synthetic": [], "numeric_challenge": [1, 2]}, Path("unused"))  # slice/<s>/<m>, slice/<s>/samples
    written |= slices.run(lambda records: (aggregate(samples), samples), {"test": Evaluation("test", written)}).main_metrics
    est = [f.name for f in dataclasses.fields(MemoryEstimate) if f.type in ("int", "float")]
    written |= {f"memory.estimate.{name}": 1.0 for name in est}
    # the README's table of the default run's metrics.json (tests/test_default_run.py compares it with a real run)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    text = readme.split("That run's `metrics.json`:", 1)[1].split("\n\n", 2)[1]
    for row in text.splitlines()[2:]:
        names = re.findall(r"`([^`]+)`", row.split("|")[1])
        written |= {n if "." in n else f"{names[0].rsplit('.', 1)[0]}.{n}": 0.0 for n in names}
    assert len(written) > 100 and "slice/numeric_challenge/samples" in written
    assert "by_domain.receipt.content.e2e_field_em" in written and "memory.estimate.total_bytes" in written
    for name in written:
        info = registry.metric(name)  # a KeyError names the unregistered metric
        assert info.direction in ("higher", "lower", "none"), name
        if not name.endswith("samples"):
            assert isinstance(registry.higher_is_better(name), bool), name


def test_the_run_metrics_the_pipeline_and_the_loop_write_are_registered():
    from vlmsweep.pipeline.per_domain import combine_train_metrics, group_metrics
    from vlmsweep.pipeline.stages import data_notes

    samples = [dict(s, route={"model": "rx", "known": "rx" if s["domain"] != "receipt" else "rc"})
               for s in scored_samples()]
    train = {"train.loss": 0.5, "train.steps": 3.0, "train.resumed_at_step": 0.0, "train.seconds": 2.0,
             "train.samples_per_second": 1.5, "train.supervised_fraction": 0.2, "cost.train_seconds_per_sample": 0.6,
             "train.trainable_params.llm": 10.0, "train.skipped_too_long": 0.0, "cost.train_peak_memory_mb": 1.0,
             "train.template_identity_checked": 1.0}
    written = group_metrics(samples, {"rx": ["prescription_ko"], "rc": ["receipt"]})
    written |= combine_train_metrics({"rx": train, "rc": train})
    written |= data_notes({"train": {"manifest": "m.jsonl", "skipped": [], "nfc_normalized": []}})[0]
    written |= {"cost.routing_seconds_per_sample": 0.1, "loop.cycles_done": 2.0, "loop.last_cycle": 1.0,
                "loop.hard_set_size": 4.0, "loop.train_size": 9.0, "loop.regression_warnings": 0.0,
                "loop.stopped_early": 0.0, "loop.noise_seeds": 2.0, "loop.targeted.digit_flip.change": -1.0,
                "loop.targeted.digit_flip.band": 2.0, "loop.mined_misreading_share": 0.5,
                "loop.regression.content.e2e_field_em": 0.1}
    assert {"routing.accuracy", "routing.samples", "by_group.rx.routing.accuracy", "by_group.rc.train.loss",
            "data.skipped_lines"} <= set(written)
    for name in written:
        registry.metric(name)
    assert registry.higher_is_better("by_group.rx.routing.accuracy") and not registry.higher_is_better("train.loss")
    assert registry.is_wall_clock("by_group.rx.train.seconds") and not registry.is_wall_clock("train.loss")
    assert registry.higher_is_better("loop.regression.content.e2e_field_em")
    assert not registry.higher_is_better("loop.targeted.digit_flip.change")  # fewer failures is better
    assert not registry.higher_is_better("memory.estimate.total_bytes")


def test_an_unknown_name_is_an_error_naming_it_and_a_count_has_no_direction():
    for name in ("content.nope", "by_domain.receipt.content.nope", "slice/x/nope", "memory.total", "loop.nope"):
        with pytest.raises(KeyError, match=re.escape(f"unknown metric {name!r}")):
            registry.metric(name)
        with pytest.raises(KeyError, match=re.escape(f"unknown metric {name!r}")):
            registry.direction_of(name)
        assert not registry.is_known(name)
    with pytest.raises(registry.NoDirection, match="'train.steps' is a count"):
        registry.direction_of("train.steps")
    assert registry.arrow("train.steps") == "" and registry.arrow("content.cer") == "↓"
    assert registry.arrow("slice/a/by_domain.receipt.content.anls") == "↑"
    effect = Effect("quant", "content.nope", 0.1, 0.05, 0.2, "bf16 vs nf4", 10, 3, noise="seeds and samples")
    with pytest.raises(KeyError, match="unknown metric 'content.nope'"):  # a report never guesses a direction
        describe(effect)
    count = dataclasses.replace(effect, metric="train.steps")
    assert "better" not in describe(count) and "worse" not in describe(count)
    assert describe(dataclasses.replace(effect, metric="content.cer")).endswith("worse)")


def test_one_worst_sample_for_mining_and_for_the_report():
    def sample(sid, em, cer, tags=("digit_flip",)):
        return {"id": sid, "domain": "receipt", "tags": list(tags), "tag_evidence": {}, "raw": "", "target": {},
                "parsed": None, "scores": {"content.field_em": em, "text.raw_cer": cer, "content.field_f1": 1.0 - cer}}

    samples = [sample("a", 0.5, 0.2), sample("b", 0.1, 0.0), sample("c", None, 0.9), sample("d", 0.1, 0.5)]
    # field EM up (no answer object: 0), ties by raw CER down, then id
    assert [s["id"] for s in sorted(samples, key=registry.worst_first)] == ["c", "d", "b", "a"]
    report = render_report({}, samples, worst_per_tag=2)
    shown = re.findall(r"- \*\*(\w)\*\*", report.split("## Worst examples per tag", 1)[1])
    assert shown == ["c", "d"]
    assert "content.field_em 0.100" in report  # the score it ranks by is the one it shows
