"""Content metrics on hand-written cases: normalisation, alignment, EM, ANLS, CER, digits, units, F1, TED."""

import unicodedata

import pytest

from vlmsweep.evaluate.fields import (
    align_lists,
    anls,
    digits_of,
    exact_match,
    pair_fields,
    score_fields,
    ted_accuracy,
    unit_of,
)

TARGET = {
    "patient_name": "John Doe",
    "patient_id": "12345",
    "institution": None,
    "issue_date": "2024-03-15",
    "diagnosis_codes": ["J06.9"],
    "medications": [{"name": "Aspirin", "strength": "100 mg", "dose": 1, "frequency": 3, "days": 5}],
    "prescriber": None,
}
PRED = {
    "patient_name": "John Doe",
    "patient_id": "12348",
    "institution": "Seoul Clinic",
    "issue_date": "2024-03-15",
    "diagnosis_codes": ["J06.9"],
    "medications": [
        {"name": "Tylenol", "strength": "500 mg", "dose": 1, "frequency": 2, "days": 3},
        {"name": "Asprin", "strength": "100 mcg", "dose": 1, "frequency": 3, "days": None},
    ],
    "prescriber": None,
}


def test_exact_match_normalises_text_but_never_ids():
    assert exact_match("John  Doe ", "john doe", "text")
    assert exact_match("ＪＯＨＮ", "john", "text")  # NFKC folds full-width letters
    assert exact_match("100mg", "100 MG", "unit")
    assert not exact_match("100mg", "100 MG", "text")
    assert exact_match(7, 7.0, "text") and exact_match("7", 7, "text")
    assert not exact_match("j06.9", "J06.9", "id")
    assert not exact_match(12345, "12345", "id")  # ids: type included
    assert exact_match("12345", "12345", "id")
    assert exact_match(None, None, "text") and not exact_match(None, "x", "text") and not exact_match("x", None, "text")
    assert exact_match(None, [], "text") and exact_match([], [], "text") and not exact_match(["a"], [], "text")


def test_anls_follows_the_official_docvqa_code():
    assert anls("Jon Doe", ["John Doe"]) == pytest.approx(1 - 1 / 8)
    assert anls("JOHN  DOE ", ["john doe"]) == 1.0  # casefolded, whitespace collapsed
    assert anls("STRASSE", ["straße"]) == 1.0  # casefold, not lower: ß folds to ss
    # exact tau boundary: similarity 0.5 is kept (the official code compares 1 - NL < tau; the paper drops it)
    assert anls("ab", ["abcd"]) == 0.5
    assert anls("张三", ["张山"]) == 0.5  # a two-character Chinese name with one character wrong
    assert anls("a", ["abc"]) == 0.0  # 1/3 is below tau
    assert anls("abc", ["abcd"]) == pytest.approx(0.75)
    # the denominator is the length of the upper-cased strings: ǰ upper-cases to J + U+030C
    assert anls("ǰ", ["x"]) == 0.5
    # several answers: the best one counts, whatever their order
    assert anls("Jon", ["Jonathan", "John"]) == anls("Jon", ["John", "Jonathan"]) == pytest.approx(0.75)
    assert anls("10 mg", ["ten mg", "1O mg"]) == pytest.approx(0.8)


def test_anls_after_the_shared_normalisation():
    name = "김민수"
    assert anls(unicodedata.normalize("NFD", name), [name]) == 1.0  # 8 jamo vs 3 syllables before NFKC
    assert anls("１２３４５", ["12345"]) == 1.0  # full-width digits
    assert anls("１２３４８", ["12345"]) == pytest.approx(0.8)
    # Chinese: one character substituted
    assert anls("阿莫西林胶襄", ["阿莫西林胶囊"]) == pytest.approx(1 - 1 / 6)
    assert anls("王晓明", ["王小明"]) == pytest.approx(2 / 3)
    # empty prediction: 0 against text, 1 against an empty answer (the official length-0 rule)
    assert anls("", ["x"]) == 0.0
    assert anls("  ", [""]) == 1.0
    assert anls("", ["x", ""]) == 1.0


def test_anls_takes_a_list_of_answers():
    with pytest.raises(TypeError, match=r"pass \['John'\]"):
        anls("John", "John")
    with pytest.raises(ValueError, match="at least one reference answer"):
        anls("John", [])


def test_normalisation_reaches_ids_digits_and_units():
    assert exact_match("８００１０１", "800101", "id") and exact_match(" J06.9", "J06.9", "id")
    assert exact_match(unicodedata.normalize("NFD", "김민수"), "김민수", "text")
    assert digits_of("１２３-45") == "12345" and digits_of(None) == ""
    assert unit_of("100 ㎎") == unit_of("100MG") == "mg"


def test_units_fold_spellings():
    assert unit_of("100 mcg") == unit_of("100µg") == unit_of("100 μg") == "μg"
    assert unit_of("5 ML") == "mL"
    assert unit_of("1정") == "tab"
    assert unit_of("7") is None and unit_of(None) is None


def test_lists_align_by_name_not_position():
    pred = [{"name": "Tylenol"}, {"name": "Asprin"}]
    target = [{"name": "Aspirin"}, {"name": "Tylenol"}]
    assert align_lists(pred, target) == ([(1, 0), (0, 1)], [], [])
    assert align_lists([{"name": "x"}], []) == ([], [0], [])
    assert align_lists(["J06.9", "I10"], ["I10"]) == ([(1, 0)], [0], [])


def test_field_scores_on_a_hand_scored_prescription():
    pairs = pair_fields(PRED, TARGET)
    fs = score_fields(pairs, "prescription")
    # Aspirin pairs with the predicted "Asprin" (index 1); "Tylenol" (index 0) is an extra item.
    assert fs.field_scores == {
        "patient_name": 1.0,
        "patient_id": 0.0,
        "institution": 0.0,
        "issue_date": 1.0,
        "diagnosis_codes[0]": 1.0,
        "medications[0].name": 0.0,
        "medications[0].strength": 0.0,
        "medications[0].dose": 1.0,
        "medications[0].frequency": 1.0,
        "medications[0].days": 0.0,
        "medications[+0].name": 0.0,
        "medications[+0].strength": 0.0,
        "medications[+0].dose": 0.0,
        "medications[+0].frequency": 0.0,
        "medications[+0].days": 0.0,
        "prescriber": 1.0,
    }
    assert fs.field_em == pytest.approx(6 / 16)
    # non-null predicted slots 9 + 5 extra = 14, non-null target slots 9, true positives 5
    assert fs.field_f1 == pytest.approx(2 * 5 / (14 + 9))
    # ANLS over the 9 non-null target leaves: id 0.8, Asprin 6/7, 100 mcg 6/7, days "" -> 0, the rest 1
    assert fs.anls == pytest.approx((1 + 0.8 + 1 + 1 + 6 / 7 + 6 / 7 + 1 + 1 + 0) / 9)
    # edit distances 1 (id) + 1 (name) + 1 (strength) + 1 (days) over 8+5+10+5+7+6+1+1+1 = 44 characters
    assert fs.cer == pytest.approx(4 / 44)
    assert fs.raw_cer == pytest.approx(4 / 44)  # nothing here for normalisation to fold
    # words: 2 + 1 + 1 + 1 + 1 + 2 + 1 + 1 + 1 = 11; wrong: the id, the name, "mcg", the missing days
    assert fs.wer == pytest.approx(4 / 11)
    # digit fields: id 0.8, date 1, code 1, strength 1, dose 1, frequency 1, days 0
    assert fs.digit_acc == pytest.approx(5.8 / 7)
    assert fs.unit_acc == 0.0  # mg read as mcg; dose 1 has no unit


def test_all_null_answer_to_all_null_target_is_perfect():
    target = {"a": None, "items": []}
    fs = score_fields(pair_fields({"a": None, "items": None}, target), "receipt")
    assert (fs.field_em, fs.field_f1, fs.anls, fs.cer, fs.wer, fs.raw_cer) == (1.0, 1.0, None, None, None, None)
    fs = score_fields(pair_fields({"a": None, "items": [{"name": "Coffee", "price": None}]}, target), "receipt")
    assert fs.field_scores == {"a": 1.0, "items": 0.0, "items[+0].name": 0.0}
    assert fs.field_f1 == 0.0


def test_ted_accuracy_follows_donut():
    target = {"a": "xy"}
    # TED(empty, gt) = insert node "a" (1) + insert leaf "xy" (2) = 3
    assert ted_accuracy({"a": "xz"}, target) == pytest.approx(1 - 1 / 3)
    assert ted_accuracy({}, target) == 0.0
    assert ted_accuracy({"a": "xy", "b": "q"}, target) == pytest.approx(1 - 2 / 3)
    assert ted_accuracy(target, target) == 1.0
    assert ted_accuracy({"a": None}, {"a": None}) == 1.0  # all-empty target: 1 for an all-empty answer
    assert ted_accuracy({"a": "x"}, {"a": None}) == 0.0
    assert ted_accuracy(PRED, TARGET) < 1.0
