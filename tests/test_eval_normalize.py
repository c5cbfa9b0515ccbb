"""The shared text normalisation, and CER/WER that agree with jiwer on the normalised strings."""

import unicodedata

import jiwer
import pytest
from rapidfuzz.distance import Levenshtein

from vlmsweep.evaluate.fields import cer, raw_cer, wer
from vlmsweep.evaluate.normalize import normalize


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


# (prediction, target): Korean, Chinese, digits, surrounding and inner whitespace, prose, English, units.
PAIRS = [
    (nfd("김민수"), "김민수"),
    ("김민소", "김민수"),
    ("  김민수  ", "김민수"),
    ("서울 내과의원", "서울내과의원"),
    ("타이레놀정 500mg", "타이레놀정 500 mg"),
    ("하루 3회 식후 30분", "하루 3회  식후 30분"),
    ("", "박지영"),
    ("이 약은 하루에 두 번, 식후에 복용하세요.", "이 약은 하루에 세 번 식후에 복용하세요."),
    ("阿莫西林胶襄", "阿莫西林胶囊"),
    ("王晓明", "王小明"),
    ("北京协和医院", "北京协和医院"),
    ("每日三次，每次一片", "每日三次, 每次一片"),
    ("布洛芬缓释胶囊 0.3g", "布洛芬缓释胶囊\u30000.3g"),
    ("处方医师：李医生", "处方医师:李医生"),
    ("１２３４５", "12345"),
    ("  12345  ", "12345"),
    ("12348", "12345"),
    ("800101-1******", "800101-1******"),
    ("2024-03-15", "2024-03-l5"),
    ("2024.03.15", "2024-03-15"),
    ("9.90", "9.9O"),
    ("1,000", "1000"),
    ("", "7"),
    ("100 mcg", "100 mg"),
    ("5\u00a0mL", "5 mL"),
    ("100 ㎎", "100 mg"),
    ("John  Doe", "John Doe"),
    ("john doe", "John Doe"),
    ("Cafe Bleu\n", "Café Bleu"),
    ("ＣＡＦＥ", "CAFE"),
    ("The total is 9.90 dollars, thank you.", "Total: 9.90"),
    ("Take one tablet by mouth three times daily after meals.", "Take 1 tablet by mouth 3 times daily after meals."),
    ("The patient is John Doe, ID 12348.", "John Doe"),
    ("Aspirin\tAspirin\tAspirin", "Aspirin"),
    ("ﬁlm-coated", "film-coated"),
    ("x", "x y z"),
]


def test_normalize_folds_what_the_readme_table_says():
    assert normalize(nfd("김민수"), casefold=False) == "김민수"
    assert normalize("１２３４５", casefold=False) == "12345"
    assert normalize("ＣＡＦＥ", casefold=False) == "CAFE" and normalize("ＣＡＦＥ", casefold=True) == "cafe"
    assert normalize("100 ㎎", casefold=False) == "100 mg"
    assert normalize("5 µg", casefold=False) == "5 μg"  # micro sign -> Greek mu
    assert normalize("①ﬁ", casefold=False) == "1fi"
    assert normalize(" a\u00a0\u3000b\t\n c ", casefold=False) == "a b c"
    assert normalize("Straße", casefold=True) == "strasse"
    assert normalize("ǰ", casefold=True) == "ǰ"  # casefolding decomposes it; NFKC composes it back
    # what it leaves alone
    assert normalize("J06.9", casefold=False) == "J06.9"
    assert normalize("處方", casefold=True) == "處方"  # traditional Chinese stays traditional
    assert normalize("a\u200bb", casefold=True) == "a\u200bb"
    assert normalize("9.90 — 1", casefold=True) == "9.90 — 1"


@pytest.mark.parametrize("casefold", [False, True])
def test_normalize_is_idempotent(casefold):
    for pred, target in PAIRS:
        for text in (pred, target, "ǰǰ ΐ ﬃ ㍿"):
            once = normalize(text, casefold=casefold)
            assert normalize(once, casefold=casefold) == once


def test_cer_and_wer_equal_jiwer_on_the_normalised_strings():
    assert len(PAIRS) >= 30
    for pred, target in PAIRS:
        p, t = normalize(pred, casefold=False), normalize(target, casefold=False)
        assert cer([pred], [target]) == jiwer.cer(t, p), (pred, target)
        assert wer([pred], [target]) == jiwer.wer(t, p), (pred, target)
        # and jiwer's CER is the Levenshtein distance over the target length, computed another way
        assert cer([pred], [target]) == pytest.approx(Levenshtein.distance(p, t) / len(t))
    preds, targets = zip(*PAIRS)
    norm_p = [normalize(x, casefold=False) for x in preds]
    norm_t = [normalize(x, casefold=False) for x in targets]
    assert cer(preds, targets) == jiwer.cer(norm_t, norm_p)  # one corpus: total edits / total characters
    assert cer(preds, targets) == pytest.approx(
        sum(Levenshtein.distance(p, t) for p, t in zip(norm_p, norm_t)) / sum(map(len, norm_t))
    )
    assert wer(preds, targets) == jiwer.wer(norm_t, norm_p)


def test_cer_by_hand_and_the_raw_view_beside_it():
    name = "김민수"
    assert cer([nfd(name)], [name]) == 0.0
    assert raw_cer([nfd(name)], [name]) == pytest.approx(8 / 3)  # 8 jamo where 3 syllables were expected
    assert cer(["  12345  "], ["12345"]) == 0.0
    assert raw_cer(["  12345  "], ["12345"]) == pytest.approx(4 / 5)  # no strip either
    assert cer(["１２３４５"], ["12345"]) == 0.0 and raw_cer(["１２３４５"], ["12345"]) == 1.0
    assert cer(["阿莫西林胶襄"], ["阿莫西林胶囊"]) == pytest.approx(1 / 6)
    assert cer(["john doe"], ["John Doe"]) == pytest.approx(2 / 8)  # CER keeps case, as jiwer's default does
    assert wer(["Take one tablet"], ["Take 1 tablet"]) == pytest.approx(1 / 3)
    assert cer(["", "x"], ["", "xy"]) == pytest.approx(1 / 2)
    # no target text: undefined, not jiwer's count of insertions
    assert cer(["abc"], [""]) is None and wer(["abc"], ["  "]) is None and raw_cer(["abc"], [""]) is None
    assert raw_cer(["abc"], ["  "]) == pytest.approx(3 / 2)
