"""The embedded tokenizer is the real Qwen2 one: same ids as the reference vocab.json/merges.txt."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from vlmsweep.model.tokenizer import FIRST_SPECIAL_ID, SPECIAL_TOKENS, build_qwen2_tokenizer

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "qwen2-tokenizer"

TEXTS = [
    "처방전 교부번호 2024-00123 의료기관 서울내과의원 환자 성명 홍길동 주민등록번호 850101-1******",
    "아스피린장용정 100mg 1회 투약량 1 1일 투여횟수 3 총 투약일수 7 질병분류기호 I10 E11.9",
    "处方笺 姓名 张三 性别 男 年龄 45岁 门诊号 0012345 科别 内科 临床诊断 高血压",
    "Rp: 阿司匹林肠溶片 100mg×30片 用法用量 口服 每日一次 医师 李四 药师 王五",
    "Amoxicillin 500 mg, Metformin 0.5 g, Insulin 10 IU, Vitamin B12 500 μg, Syrup 5 mL",
    '{"patient_name": "John Doe", "patient_id": "12345", "medications": [{"name": "Aspirin", "strength": "100 mg"}]}',
    'Subtotal $10.00\nTax 0.80\r\nTotal   $10.80\tCheese Tart  x2',
    "  leading spaces, 'll contractions we've, numbers 1234567 and emoji-free punctuation!!! ...",
    "영수증 합계 12,500원 부가세 1,250원 小计 ¥35.50 合计 ¥38.00",
]


@pytest.fixture(scope="module")
def tok():
    return build_qwen2_tokenizer()


def test_special_tokens_sit_at_their_qwen2_vl_ids(tok):
    assert len(tok) == FIRST_SPECIAL_ID + len(SPECIAL_TOKENS) == 151657
    assert tok.convert_tokens_to_ids("<|image_pad|>") == 151655
    assert tok.eos_token_id == 151645 and tok.pad_token_id == 151643
    assert tok("<|im_start|>user\nhi<|im_end|>")["input_ids"][0] == 151644


def test_nfc_normalisation(tok):
    composed = "홍길동 처방전"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert tok(decomposed)["input_ids"] == tok(composed)["input_ids"]


def test_digits_split_one_by_one_as_in_qwen2(tok):
    ids = tok("12345")["input_ids"]
    assert len(ids) == 5 and tok.decode(ids) == "12345"


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference Qwen2 vocab.json/merges.txt not present beside the repo")
def test_ids_identical_to_reference_qwen2_tokenizer(tok):
    from transformers import Qwen2TokenizerFast

    vocab = json.loads((REFERENCE / "vocab.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (REFERENCE / "merges.txt").read_text(encoding="utf-8").splitlines()
              if line and not line.startswith("#")]
    ref = Qwen2TokenizerFast(vocab=vocab, merges=merges, unk_token=None)
    assert len(vocab) == FIRST_SPECIAL_ID
    for text in TEXTS:
        assert tok(text)["input_ids"] == ref(text)["input_ids"], text
    # round trip on every text
    for text in TEXTS:
        assert tok.decode(tok(text)["input_ids"]) == text
