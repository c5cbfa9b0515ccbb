"""Schemas: fixed keys in contract order, no maxLength, all-null targets, and every generated target valid."""

import json
import random

import pytest

from vlmsweep.data import empty_target, load_schema, schema_errors
from vlmsweep.data import prescription, receipt
from vlmsweep.data.build import FOCUSES

RX_KEYS = ["patient_name", "patient_id", "institution", "issue_date", "diagnosis_codes", "medications", "prescriber"]
RC_KEYS = ["store", "date", "address", "items", "subtotal", "tax", "total"]


def test_key_order_matches_the_contract():
    assert list(load_schema("prescription")["properties"]) == RX_KEYS
    assert load_schema("prescription")["required"] == RX_KEYS
    assert list(load_schema("receipt")["properties"]) == RC_KEYS
    med = load_schema("prescription")["properties"]["medications"]["items"]
    assert list(med["properties"]) == ["name", "strength", "dose", "frequency", "days"]


@pytest.mark.parametrize("name", ["prescription", "receipt"])
def test_no_max_length_and_closed_objects(name):
    text = json.dumps(load_schema(name))
    assert "maxLength" not in text  # xgrammar 0.2.8 mis-handles it (FACTS.md)
    assert load_schema(name)["additionalProperties"] is False


def test_empty_target_is_all_null_with_empty_lists_and_valid():
    assert empty_target("prescription") == {
        "patient_name": None, "patient_id": None, "institution": None, "issue_date": None,
        "diagnosis_codes": [], "medications": [], "prescriber": None}
    assert empty_target("receipt") == {
        "store": None, "date": None, "address": None, "items": [], "subtotal": None, "tax": None, "total": None}
    assert schema_errors("prescription", empty_target("prescription")) == []
    assert schema_errors("receipt", empty_target("receipt")) == []


def test_schema_errors_name_the_path():
    bad = empty_target("prescription") | {"medications": [{"name": "x", "strength": 5, "dose": 1, "frequency": 2, "days": 3}]}
    errors = schema_errors("prescription", bad)
    assert len(errors) == 1 and errors[0].startswith("medications/0/strength:")
    assert schema_errors("receipt", {"store": None}) != []  # missing keys


@pytest.mark.parametrize("focus", [None, *[f for f in FOCUSES if f != "hard_negative"]])
def test_every_generated_target_is_valid_and_compact(focus):
    for seed in range(150):
        for lang in ("ko", "zh"):
            t, _ = prescription.sample_target(random.Random(seed), lang, focus)
            assert schema_errors("prescription", t) == [], (seed, lang, focus)
            assert 1 <= len(t["medications"]) <= (2 if focus == "short" else 4)
            assert len(t["diagnosis_codes"]) <= (2 if focus == "short" else 3)
        for lang in ("en", "ko", "zh"):
            t, _ = receipt.sample_target(random.Random(seed), lang, focus)
            assert schema_errors("receipt", t) == [], (seed, lang, focus)
            assert (2 if lang == "en" and focus != "short" else 1) <= len(t["items"]) <= (2 if focus == "short" else 6)


def test_receipt_arithmetic_is_consistent():
    cents = lambda s: round(float(s.replace(",", "")) * 100)  # noqa: E731
    for seed in range(100):
        # English: tax added on top of the subtotal.
        t, _ = receipt.sample_target(random.Random(seed), "en")
        items = sum(cents(i["price"]) for i in t["items"])
        if t["subtotal"] is not None:
            assert cents(t["subtotal"]) == items
        assert cents(t["total"]) == items + (cents(t["tax"]) if t["tax"] is not None else 0)
        # Korean: whole won, prices include 10% VAT; 과세물품가액 + 부가세 = 합계.
        t, _ = receipt.sample_target(random.Random(seed), "ko")
        assert all("." not in v for v in (t["total"], t["subtotal"] or "", t["tax"] or ""))
        assert cents(t["total"]) == sum(cents(i["price"]) for i in t["items"])
        if t["subtotal"] is not None and t["tax"] is not None:
            assert cents(t["subtotal"]) + cents(t["tax"]) == cents(t["total"])
            assert abs(cents(t["tax"]) * 10 - cents(t["subtotal"])) <= 1000  # 10% of the supply value, to the won
        # Chinese: 小计 = the lines, 合计 = 小计 - 优惠, the VAT inside the 合计.
        t, ex = receipt.sample_target(random.Random(seed), "zh")
        items = sum(cents(i["price"]) for i in t["items"])
        if t["subtotal"] is not None:
            assert cents(t["subtotal"]) == items
        assert cents(t["total"]) == items - (cents(ex["discount"]) if ex["discount"] else 0)
        if t["tax"] is not None:
            assert abs(cents(t["tax"]) - cents(t["total"]) * ex["vat"] / (100 + ex["vat"])) <= 0.5
