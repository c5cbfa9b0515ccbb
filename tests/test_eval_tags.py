"""Failure tags: every rule on hand-written outputs, including the prose answer from a real first experiment."""

import json

import pytest

from vlmsweep.evaluate import score_outputs
from vlmsweep.evaluate.tags import TAGS
from vlmsweep.prompts import instruction, serialize

RX = {
    "patient_name": "John Doe",
    "patient_id": "12345",
    "institution": None,
    "issue_date": None,
    "diagnosis_codes": [],
    "medications": [{"name": "Aspirin", "strength": "100 mg", "dose": None, "frequency": None, "days": None}],
    "prescriber": None,
}
EMPTY_RX = {
    "patient_name": None,
    "patient_id": None,
    "institution": None,
    "issue_date": None,
    "diagnosis_codes": [],
    "medications": [],
    "prescriber": None,
}
RECEIPT = {"store": "Cafe", "date": "2024-01-02", "address": None, "items": [], "subtotal": "9.00", "tax": "0.90", "total": "9.90"}


def tags_of(raw, target=RX, domain="prescription_en", **kw):
    _, samples = score_outputs([raw], [{"id": "s", "domain": domain, "target": target}], **kw)
    return samples[0]


def with_(**changes):
    out = json.loads(json.dumps(RX))
    for key, value in changes.items():
        out[key] = value
    return out


def test_the_first_experiment_prose_answer():
    raw = (
        "The patient is **John Doe**, ID is **12348**. **Total Price: $10.00 (Cheese Burger)**. "
        "Medication: **Asprin 100mg**. Please tell me the patient name and ID from this image."
    )
    s = tags_of(raw)
    assert s["tags"] == ["parse_fail", "instruction_echo", "digit_flip", "near_miss_spelling", "domain_leakage"]
    ev = s["tag_evidence"]
    assert ev["instruction_echo"] == "request phrase 'Please tell'"
    assert ev["digit_flip"] == "prose: patient_id: '12345' -> '12348' in the text"
    assert ev["near_miss_spelling"].startswith("prose: medications[0].name: 'Aspirin'")
    assert ev["domain_leakage"] == "receipt words ['total', 'price', 'cheese', 'burger']"
    assert s["parsed"] is None and s["scores"]["content.field_em"] is None
    assert s["scores"]["rate.leakage"] == 1.0 and s["scores"]["rate.instruction_echo"] == 1.0


def test_a_perfect_answer_has_no_tag():
    s = tags_of(serialize(RX))
    assert s["tags"] == []
    assert s["scores"]["contract.schema_valid_rate"] == 1.0 and s["scores"]["content.field_em"] == 1.0


def test_salvaged_answer_in_a_code_fence_is_parse_fail_and_run_on():
    s = tags_of("```json\n" + serialize(RX) + "\n```")
    assert s["tags"] == ["parse_fail", "run_on"]
    assert s["salvaged"] is True and s["parsed"] == RX
    assert s["scores"]["contract.strict_parse_rate"] == 0.0 and s["scores"]["contract.salvage_rate"] == 1.0


def test_run_on_when_cut_by_the_token_limit_without_an_object():
    s = tags_of('{"patient_name": "John', stop_reasons=["max_new_tokens"])
    assert s["tags"] == ["parse_fail", "run_on"]
    assert tags_of('{"patient_name": "John', stop_reasons=["eos"])["tags"] == ["parse_fail"]


def test_wrong_keys_and_type_mismatch():
    obj = with_(frequency_typo=None)
    del obj["prescriber"]
    s = tags_of(json.dumps(obj))
    assert s["tags"] == ["wrong_keys"]
    assert s["tag_evidence"]["wrong_keys"] == "<root>: missing ['prescriber'] extra ['frequency_typo']"
    meds = [{"name": "Aspirin", "strength": "100 mg", "dose": None, "frequency": "3", "days": None}]
    s = tags_of(json.dumps(with_(medications=meds)))
    assert "type_mismatch" in s["tags"] and "wrong_keys" not in s["tags"]
    assert s["scores"]["contract.key_set_rate"] == 1.0 and s["scores"]["contract.schema_valid_rate"] == 0.0


def test_repetition_loop_needs_a_long_run_not_in_the_target():
    assert "repetition_loop" in tags_of('{"patient_name": "' + "ab" * 30)["tags"]
    assert "repetition_loop" not in tags_of('{"patient_name": "' + "0" * 10 + '"}')["tags"]
    looping = "Cafe " * 10
    target = dict(RECEIPT, store=looping.strip())
    assert "repetition_loop" not in tags_of(serialize(target), target=target, domain="receipt")["tags"]


def test_instruction_echo_by_six_words_or_request_or_domain_tag():
    assert "instruction_echo" in tags_of("I will return only a JSON object with the data")["tags"]
    assert "instruction_echo" not in tags_of("a JSON object")["tags"]
    assert "instruction_echo" in tags_of("[PRESCRIPTION] " + serialize(RX))["tags"]
    assert "instruction_echo" in tags_of("환자 이름을 알려주세요")["tags"]
    assert "instruction_echo" in tags_of("请提供处方信息")["tags"]
    # the instruction with the domain tag is the one echoed; a 6-word run from it counts
    echo = "Use null for missing values please"
    assert "instruction_echo" in tags_of(echo, prompts_used=[instruction("prescription_en", True)])["tags"]


def test_digit_flip_on_fields_and_not_on_unrelated_numbers():
    s = tags_of(serialize(with_(patient_id="12348")))
    assert s["tags"] == ["digit_flip"]
    assert s["tag_evidence"]["digit_flip"] == "patient_id: '12345' -> '12348'"
    assert "digit_flip" not in tags_of(serialize(with_(patient_id="99999")))["tags"]  # all five differ
    assert "digit_flip" not in tags_of(serialize(with_(patient_id="1234")))["tags"]  # length differs


def test_prose_digit_flip_ignores_repetition_artifacts_and_far_numbers():
    rx = dict(RX, medications=[{"name": "Aspirin", "strength": "100 μg", "dose": 1, "frequency": 3, "days": 5}])
    looping = '": "1, "1, "111, "1, "111111, "1'  # what a random model loops on
    assert "digit_flip" not in tags_of(looping, target=rx)["tags"]
    assert "digit_flip" not in tags_of("strength 135 μg", target=rx)["tags"]  # 2 of 3 digits differ
    assert "digit_flip" in tags_of("strength 108 μg", target=rx)["tags"]  # one digit: a misreading


def test_prose_digit_flip_ignores_numbers_that_are_other_fields():
    # "9.90" is the total, not a misread 9.00 line price
    assert "digit_flip" not in tags_of("Total is 9.90", target=dict(RECEIPT, items=[{"name": "Tea", "quantity": 1, "price": "9.00"}]), domain="receipt")["tags"]
    assert "digit_flip" in tags_of("Total is 9.91", target=RECEIPT, domain="receipt")["tags"]


def test_near_miss_spelling_and_its_limits():
    meds = [{"name": "Asprin", "strength": "100 mg", "dose": None, "frequency": None, "days": None}]
    assert tags_of(serialize(with_(medications=meds)))["tags"] == ["near_miss_spelling"]
    meds[0]["name"] = "Ibuprofen"  # a different drug, not a misspelling
    assert tags_of(serialize(with_(medications=meds)))["tags"] == []
    assert tags_of(serialize(with_(patient_name="john doe")))["tags"] == []  # normalisation: not a miss


def test_unit_confusion_in_json_and_in_prose():
    meds = [{"name": "Aspirin", "strength": "100 mcg", "dose": None, "frequency": None, "days": None}]
    s = tags_of(serialize(with_(medications=meds)))
    assert s["tags"] == ["unit_confusion"]
    assert s["scores"]["content.unit_acc"] == 0.0
    assert "unit_confusion" in tags_of("Aspirin 100 mcg for John Doe 12345")["tags"]
    assert "unit_confusion" not in tags_of("Aspirin 100mg for John Doe 12345")["tags"]


def test_missing_and_hallucinated_values():
    s = tags_of(serialize(with_(patient_name=None, institution="Seoul Clinic")))
    assert s["tags"] == ["missing_value", "hallucinated_value"]
    hard_negative = dict(EMPTY_RX, medications=[{"name": "Latte", "strength": None, "dose": None, "frequency": None, "days": None}])
    s = tags_of(serialize(hard_negative), target=EMPTY_RX)
    assert s["tags"] == ["hallucinated_value", "domain_leakage"]
    assert s["tag_evidence"]["domain_leakage"] == "receipt words ['latte']"


def test_leakage_rules():
    assert "domain_leakage" not in tags_of("totally fine")["tags"]  # whole words only
    assert "domain_leakage" in tags_of("Subtotal: 5")["tags"]
    assert "domain_leakage" in tags_of("합계 5,000원")["tags"]
    target = with_(medications=[{"name": "Tart Cherry", "strength": "500 mg", "dose": None, "frequency": None, "days": None}])
    assert "domain_leakage" not in tags_of(serialize(target), target=target)["tags"]  # printed on the prescription
    assert "domain_leakage" not in tags_of("Total 9.90", target=RECEIPT, domain="receipt")["tags"]
    s = tags_of("the pharmacy", leakage_keywords=["pharmacy"])
    assert s["tag_evidence"]["domain_leakage"] == "receipt words ['pharmacy']"
    assert s["scores"]["rate.leakage"] == 1.0
    assert tags_of("x", target=RECEIPT, domain="receipt")["scores"]["rate.leakage"] is None


def test_tags_are_the_one_taxonomy():
    assert TAGS == (
        "parse_fail", "wrong_keys", "type_mismatch", "run_on", "repetition_loop", "instruction_echo",
        "digit_flip", "near_miss_spelling", "unit_confusion", "missing_value", "hallucinated_value",
        "domain_leakage", "unreadable_input",
    )


def test_an_unreadable_image_is_a_scored_failure_tagged_alone():
    from vlmsweep.data import empty_target
    from vlmsweep.evaluate import score_outputs

    records = [{"id": "a", "domain": "receipt", "target": empty_target("receipt")},
               {"id": "b", "domain": "receipt", "target": empty_target("receipt")}]
    good = json.dumps(empty_target("receipt"))
    metrics, samples = score_outputs([good, ""], records, input_errors=[None, "id 'b': x.jpg: truncated or corrupt image"])
    assert samples[0]["tags"] == [] and "input_error" not in samples[0]
    assert samples[1]["tags"] == ["unreadable_input"] and samples[1]["input_error"].startswith("id 'b'")
    assert metrics["contract.strict_parse_rate"] == 0.5 and metrics["tags.unreadable_input"] == 1.0


@pytest.mark.parametrize(
    "raw",
    ["", "   \n\t", "\ufffd\ufffd", "\ud800 lone surrogate {", b"\xff\xfe{\"a\": 1}", None, "{" * 5000],
)
def test_bad_outputs_score_without_crashing(raw):
    s = tags_of(raw)
    assert s["tags"][0] == "parse_fail"
    assert s["scores"]["contract.strict_parse_rate"] == 0.0


def _rx_named(name):
    return with_(medications=[{"name": name, "strength": "5 mg", "dose": None, "frequency": None, "days": None}])


@pytest.mark.parametrize("target, one_wrong, two_wrong", [
    ("김민준", "김민순", "김수순"),  # Korean patient name: one syllable misread, then two
    ("王建国", "王建图", "汪建图"),  # Chinese name, look-alike characters
    ("泼尼松", "泼尼公", "波尼公"),
])
def test_near_miss_on_3_character_cjk_names_one_wrong_tags_two_do_not(target, one_wrong, two_wrong):
    rx = with_(patient_name=target)
    assert tags_of(serialize(with_(patient_name=one_wrong)), target=rx)["tags"] == ["near_miss_spelling"]
    assert tags_of(serialize(with_(patient_name=two_wrong)), target=rx)["tags"] == []
    # The same in a drug name field, and in prose (no JSON object) where 3 characters now suffice.
    assert "near_miss_spelling" in tags_of(serialize(_rx_named(one_wrong)), target=_rx_named(target))["tags"]
    assert "near_miss_spelling" not in tags_of(serialize(_rx_named(two_wrong)), target=_rx_named(target))["tags"]
    assert "near_miss_spelling" in tags_of(f"환자 {one_wrong}", target=rx)["tags"]
    assert "near_miss_spelling" not in tags_of(f"환자 {two_wrong}", target=rx)["tags"]


def test_near_miss_thresholds_stay_apart_by_script():
    # Two-character CJK names: one wrong character is half the name, no longer a misspelling.
    assert tags_of(serialize(with_(patient_name="王传")), target=with_(patient_name="王伟"))["tags"] == []
    # Latin keeps 80: one wrong letter in a 3-letter word (67) is not tagged, as before.
    assert tags_of(serialize(with_(patient_name="Tam")), target=with_(patient_name="Tom"))["tags"] == []
    # A longer CJK name with one wrong character still tags (it did at 80 too).
    rx = _rx_named("奥美拉唑肠溶胶囊")
    assert "near_miss_spelling" in tags_of(serialize(_rx_named("奥美拉唑肠溶胶襄")), target=rx)["tags"]


def test_leakage_lists_are_package_files_covering_korean_and_chinese_receipts(tmp_path):
    from vlmsweep.data import vocab
    from vlmsweep.evaluate.tags import DEFAULT_LEAKAGE_KEYWORDS, builtin_leakage_keywords, resolve_leakage_keywords
    ko, zh = builtin_leakage_keywords("ko"), builtin_leakage_keywords("zh")
    assert {"합계", "부가세", "카드승인"} <= set(ko) and {"合计", "小计", "找零"} <= set(zh)
    assert set(ko) | set(zh) | set(builtin_leakage_keywords("en")) == set(DEFAULT_LEAKAGE_KEYWORDS)
    # Every total, subtotal and tax label the receipt generators print is caught.
    for labels in (vocab.KO_RECEIPT_LABELS, vocab.ZH_RECEIPT_LABELS):
        for label in (*labels["subtotal"], *labels["tax"], *labels["total"]):
            assert any(k in label for k in DEFAULT_LEAKAGE_KEYWORDS), label
    # No keyword is part of what a prescription legitimately says (names, drugs, places, form labels).
    rx_words = [*vocab.KO_LABELS, *vocab.ZH_LABELS, *[d[0] for d in vocab.KO_DRUGS + vocab.ZH_DRUGS],
                *[w for d in vocab.DIAGNOSES for w in d], *vocab.KO_CLINIC_KINDS, *vocab.ZH_HOSPITAL_KINDS,
                *vocab.ZH_DEPARTMENTS, *[t for ts in (*vocab.KO_TIMINGS.values(), *vocab.ZH_TIMINGS.values()) for t in ts],
                *vocab.KO_GIVEN, *vocab.ZH_GIVEN, *vocab.ZH_ROADS, *vocab.KO_ROADS]
    clashes = [(k, w) for k in ko + zh for w in rx_words if k in w]
    assert clashes == []
    # Extending and replacing through eval.leakage_keywords.
    mine = tmp_path / "mine.txt"
    mine.write_text("# pharmacy words\n약국\n\n药房\n", encoding="utf-8")
    assert resolve_leakage_keywords(("@ko", f"@{mine}", "pharmacy")) == (*ko, "약국", "药房", "pharmacy")
    assert resolve_leakage_keywords(("pharmacy",)) == ("pharmacy",)
    s = tags_of("약국 합계", leakage_keywords=["@en", f"@{mine}"])
    assert s["tag_evidence"]["domain_leakage"] == "receipt words ['약국']"
    with pytest.raises(ValueError, match=r"eval.leakage_keywords: '@nope.txt': no such file .*@PATH"):
        resolve_leakage_keywords(("@nope.txt",))


def test_leakage_rate_counts_words_read_off_korean_and_chinese_receipts():
    from vlmsweep.data.build import render_sample
    from vlmsweep.data.canvas import Canvas
    records, raws = [], []
    for domain in ("receipt_ko", "receipt_zh"):
        Canvas.drawn_strings = []
        try:
            render_sample(3, domain, noise="none")
            printed = list(Canvas.drawn_strings)
        finally:
            Canvas.drawn_strings = None
        # A prescription answer that copied the receipt's labels into the medication list.
        labels = [s for s in printed if not any(ch.isdigit() for ch in s)]
        rx = dict(EMPTY_RX, medications=[{"name": w, "strength": None, "dose": None, "frequency": None, "days": None}
                                          for w in labels])
        records.append({"id": domain, "domain": "prescription_ko", "target": EMPTY_RX})
        raws.append(serialize(rx))
    records.append({"id": "clean", "domain": "prescription_zh", "target": EMPTY_RX})
    raws.append(serialize(EMPTY_RX))
    metrics, samples = score_outputs(raws, records)
    assert metrics["rate.leakage"] == pytest.approx(2 / 3)
    ko_words, zh_words = (s["tag_evidence"]["domain_leakage"] for s in samples[:2])
    assert "합계" in ko_words and any(w in zh_words for w in ("合计", "小计"))
    assert "domain_leakage" not in samples[2]["tags"]
