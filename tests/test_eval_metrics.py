"""Metric names and directions, aggregation over samples and domains, the run files, hostile inputs."""

import json
import time
import unicodedata

import pytest

from vlmsweep.evaluate import METRICS, TAGS, metric_info, score_outputs
from vlmsweep.evaluate.outputs import write_outputs
from vlmsweep.prompts import serialize

RX = {
    "patient_name": "김민수",
    "patient_id": "800101-1******",
    "institution": "서울내과의원",
    "issue_date": "2024-03-15",
    "diagnosis_codes": ["J06.9"],
    "medications": [{"name": "타이레놀정", "strength": "500 mg", "dose": 1, "frequency": 3, "days": 5}],
    "prescriber": None,
}
RECEIPT = {
    "store": "Cafe Bleu",
    "date": "2024-01-02",
    "address": None,
    "items": [{"name": "Latte", "quantity": 2, "price": "9.00"}],
    "subtotal": "9.00",
    "tax": "0.90",
    "total": "9.90",
}
RECORDS = [
    {"id": "rx-ok", "domain": "prescription_ko", "target": RX},
    {"id": "rx-fence", "domain": "prescription_ko", "target": RX},
    {"id": "rc-prose", "domain": "receipt", "target": RECEIPT},
]
WRONG_NAME = dict(RX, patient_name="김민소")


def scored():
    raws = [serialize(RX), "```json\n" + serialize(WRONG_NAME) + "\n```", "Total is 9.90, please tell me more"]
    costs = [{"seconds": 1.0, "visual_tokens": 100, "output_tokens": 50}] * 2 + [{"seconds": 4.0, "visual_tokens": 40, "output_tokens": 10}]
    return score_outputs(raws, RECORDS, stop_reasons=["json_complete", "eos", "max_new_tokens"], costs=costs)


def test_every_metric_named_in_the_contract_exists_with_a_direction():
    names = [
        "contract.strict_parse_rate", "contract.key_set_rate", "contract.schema_valid_rate", "contract.salvage_rate",
        "content.field_em", "content.anls", "content.cer", "content.wer", "content.raw_cer", "content.field_f1",
        "content.ted_acc", "content.digit_acc",
        "content.unit_acc", "text.raw_cer", "rate.run_on", "rate.repetition_loop", "rate.instruction_echo",
        "rate.leakage", "cost.eval_seconds_per_sample", "cost.visual_tokens_per_image", "cost.output_tokens_per_sample",
    ] + [f"tags.{t}" for t in TAGS]
    assert set(names) <= set(METRICS)
    assert METRICS["content.field_em"].higher_is_better and not METRICS["content.cer"].higher_is_better
    assert not METRICS["tags.parse_fail"].higher_is_better
    assert metric_info("by_domain.receipt.content.anls") is METRICS["content.anls"]
    with pytest.raises(KeyError, match="unknown metric 'content.nope'"):
        metric_info("content.nope")


def test_aggregation_by_hand():
    metrics, samples = scored()
    assert metrics["contract.strict_parse_rate"] == pytest.approx(1 / 3)
    assert metrics["contract.salvage_rate"] == pytest.approx(2 / 3)
    assert metrics["content.coverage"] == pytest.approx(2 / 3)
    # the fenced answer has 11 slots (5 top-level scalars, 1 code, 5 medication fields) and one wrong
    # name: 10/11; the perfect one 1.0; the prose one has no object and no content score
    assert samples[1]["scores"]["content.field_em"] == pytest.approx(10 / 11)
    assert metrics["content.field_em"] == pytest.approx((1 + 10 / 11) / 2)
    # end to end, the prose sample counts as 0: defined even when nothing parses
    assert metrics["content.e2e_field_em"] == pytest.approx((1 + 10 / 11 + 0) / 3)
    assert metrics["by_domain.receipt.content.e2e_field_em"] == 0.0
    # ANLS of the name: one of three characters -> 1 - 1/3; the other 9 non-null leaves are exact
    assert samples[1]["scores"]["content.anls"] == pytest.approx((9 + 2 / 3) / 10)
    assert metrics["rate.run_on"] == pytest.approx(2 / 3)  # the fence's tail, the prose cut at the limit
    assert metrics["rate.leakage"] == 0.0  # over prescription samples only; the receipt's "Total" is its own word
    assert metrics["tags.parse_fail"] == 2.0
    # one wrong character of a 3-character CJK name is the near-miss the per-script threshold (65) catches
    assert metrics["tags.near_miss_spelling"] == 1.0 and "near_miss_spelling" in samples[1]["tags"]
    assert metrics["tags.instruction_echo"] == 1.0
    assert metrics["cost.eval_seconds_per_sample"] == pytest.approx(2.0)
    assert metrics["cost.visual_tokens_per_image"] == pytest.approx(80.0)
    assert metrics["by_domain.receipt.contract.strict_parse_rate"] == 0.0
    assert metrics["by_domain.prescription_ko.contract.strict_parse_rate"] == 0.5
    assert metrics["by_domain.prescription_ko.tags.parse_fail"] == 1.0
    assert "by_domain.receipt.content.field_em" not in metrics  # nothing to score there
    assert samples[2]["stop_reason"] == "max_new_tokens" and samples[2]["output_tokens"] == 10


def test_metrics_are_the_mean_of_per_sample_scores():
    metrics, samples = scored()
    for name, value in metrics.items():
        if name.startswith(("tags.", "by_domain.")):
            continue
        values = [s["scores"][name] for s in samples if s["scores"].get(name) is not None]
        assert value == pytest.approx(sum(values) / len(values)), name


def test_one_normalisation_for_every_content_metric_and_the_raw_cer_beside_it():
    # the name in NFD (8 jamo for 3 syllables), the id and date in full-width digits, the strength spaced
    answer = dict(
        RX,
        patient_name=unicodedata.normalize("NFD", RX["patient_name"]),
        issue_date="２０２４-０３-１５",
        medications=[dict(RX["medications"][0], strength="  500 mg ")],
    )
    record = {"id": "nfd", "domain": "prescription_ko", "target": RX}
    _, [s] = score_outputs([serialize(answer)], [record])
    scores = s["scores"]
    assert s["tags"] == []
    assert (scores["content.field_em"], scores["content.anls"], scores["content.digit_acc"]) == (1.0, 1.0, 1.0)
    assert (scores["content.cer"], scores["content.wer"]) == (0.0, 0.0)
    # raw: the name costs 8 edits (3 substitutions + 5 insertions), the date 8 (its full-width digits),
    # the strength 3 (surrounding spaces); over the 10 non-null target values' characters
    chars = sum(len(v) for v in ["김민수", "800101-1******", "서울내과의원", "2024-03-15", "J06.9", "타이레놀정",
                                    "500 mg", "1", "3", "5"])
    assert scores["content.raw_cer"] == pytest.approx((8 + 8 + 3) / chars)


def test_samples_carry_the_contract_fields():
    _, samples = scored()
    keys = {"id", "domain", "image_domain", "origin", "prompt", "raw", "parsed", "salvaged", "target", "tags",
            "field_scores", "scores", "stop_reason", "visual_tokens", "output_tokens", "seconds"}
    for s in samples:
        assert keys <= set(s)
    assert samples[0]["parsed"] == RX and samples[0]["salvaged"] is False and samples[1]["salvaged"] is True
    assert samples[1]["field_scores"]["patient_name"] == 0.0
    assert samples[0]["prompt"].startswith("Read this medical prescription")


def test_run_files(tmp_path):
    metrics, samples = scored()
    write_outputs(tmp_path, metrics, samples, worst_per_tag=1)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    lines = (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["rx-ok", "rx-fence", "rc-prose"]
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| contract.strict_parse_rate | ↑ | 0.333 | 0.500 | 0.000 |" in report
    assert "### parse_fail (1 of 2)" in report
    assert "**rc-prose**" in report  # worst first: no answer object at all


def test_unannotated_keys_are_not_scored(tmp_path):
    target = dict(RECEIPT, items=[])
    record = {"id": "sroie", "domain": "receipt", "target": target, "unannotated": ["items"]}
    answer = dict(RECEIPT, items=[{"name": "Tea", "quantity": 1, "price": "3.00"}])
    _, samples = score_outputs([serialize(answer)], [record])
    s = samples[0]
    assert s["tags"] == [] and s["scores"]["content.field_em"] == 1.0
    assert not any(path.startswith("items") for path in s["field_scores"])


def test_hostile_outputs_and_null_targets_score_and_write(tmp_path):
    null_rx = {k: ([] if k in ("diagnosis_codes", "medications") else None) for k in RX}
    raws = ["", "  \n", "\ufffd\ufffd{", "\udcff\ud800", "a" * 1_000_000, '{"patient_name": "' + "lorem " * 170_000]
    records = [{"id": f"bad{i}", "domain": "prescription_zh", "target": null_rx} for i in range(len(raws))]
    start = time.process_time()  # this process's CPU time: a quadratic scan of 1 MB would take minutes, and
    metrics, samples = score_outputs(raws, records)  # other jobs on the machine do not count against it
    assert time.process_time() - start < 20
    assert all(s["tags"][0] == "parse_fail" for s in samples)
    assert metrics["contract.strict_parse_rate"] == 0.0 and metrics["tags.parse_fail"] == 6.0
    assert samples[4]["tags"] == ["parse_fail", "repetition_loop"]
    write_outputs(tmp_path, metrics, samples)
    lines = (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[3])["raw"] == "\udcff\ud800"  # lone surrogates survive as \u escapes
    null_answer = serialize(null_rx)
    _, [s] = score_outputs([null_answer], records[:1])
    assert s["tags"] == [] and s["scores"]["content.field_em"] == 1.0 and s["scores"]["content.anls"] is None


def test_score_outputs_rejects_unpaired_inputs():
    with pytest.raises(ValueError, match="2 outputs for 1 records"):
        score_outputs(["a", "b"], RECORDS[:1])
    with pytest.raises(ValueError, match="unknown domain 'invoice'"):
        score_outputs(["a"], [{"id": "x", "domain": "invoice", "target": {}}])
