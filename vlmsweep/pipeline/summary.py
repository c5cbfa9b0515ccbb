"""Deterministic summaries of a parsed answer, per schema and language, and the check that every value is the JSON's.

A summary is fixed template text (LABELS) with the answer's values put in as they are: nothing is computed,
translated or invented, and a null (or missing) value is said to be unreadable. `unsupported` re-reads a
summary and lists every piece that is neither template text nor one of the JSON's values, so `predict` can
state that each summary it writes was checked. Hand-written: no library renders a fixed-vocabulary sentence
from a JSON object per language; the checker splits on the template's own separators only.
"""

from __future__ import annotations

import re
from typing import Any

LANGUAGES = ("ko", "zh", "en")

# Template words per language. `{}` slots take a value or UNREADABLE; nothing else enters a summary.
LABELS: dict[str, dict[str, str]] = {
    "en": {
        "prescription": "Prescription", "receipt": "Receipt", "patient": "patient", "patient_id": "ID",
        "institution": "institution", "issue_date": "date", "diagnosis": "diagnosis", "prescriber": "prescriber",
        "medications": "medications", "none": "none listed", "strength": "strength", "dose": "dose",
        "frequency": "times a day", "days": "days", "store": "store", "date": "date", "address": "address",
        "items": "items", "subtotal": "subtotal", "tax": "tax", "total": "total", "quantity": "quantity",
        "price": "price", "unreadable": "unreadable",
    },
    "ko": {
        "prescription": "처방전", "receipt": "영수증", "patient": "환자", "patient_id": "등록번호",
        "institution": "의료기관", "issue_date": "교부일", "diagnosis": "질병분류기호", "prescriber": "처방의",
        "medications": "처방 의약품", "none": "없음", "strength": "함량", "dose": "1회 투약량",
        "frequency": "1일 투여횟수", "days": "총 투약일수", "store": "상호", "date": "일자", "address": "주소",
        "items": "품목", "subtotal": "소계", "tax": "세액", "total": "합계", "quantity": "수량", "price": "금액",
        "unreadable": "판독 불가",
    },
    "zh": {
        "prescription": "处方笺", "receipt": "收据", "patient": "患者", "patient_id": "门诊号",
        "institution": "医疗机构", "issue_date": "开具日期", "diagnosis": "诊断编码", "prescriber": "医师",
        "medications": "药品", "none": "无", "strength": "规格", "dose": "每次用量", "frequency": "每日次数",
        "days": "天数", "store": "商户", "date": "日期", "address": "地址", "items": "商品", "subtotal": "小计",
        "tax": "税额", "total": "合计", "quantity": "数量", "price": "金额", "unreadable": "无法辨认",
    },
}
# Separators the templates put between labels and values; the checker splits on exactly these.
SEP_FIELD, SEP_VALUE, SEP_LIST, SEP_ITEM_OPEN, SEP_ITEM_CLOSE = "; ", ": ", ", ", " (", ")"
SEP_LIST_HEAD = ":\n"  # a list's label ends its line
SEPARATORS = (SEP_FIELD, SEP_VALUE, SEP_LIST, SEP_ITEM_OPEN, SEP_ITEM_CLOSE, SEP_LIST_HEAD, "\n", "- ")


def value_text(value: Any, lang: str) -> str:
    """A JSON scalar as it appears in a summary: as printed in the JSON, or the unreadable word for null."""
    if value is None or value == "" or value == []:
        return LABELS[lang]["unreadable"]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _field(obj: dict, key: str, label: str, lang: str) -> str:
    return f"{LABELS[lang][label]}{SEP_VALUE}{value_text(obj.get(key), lang)}"


def _list(values: Any, lang: str) -> str:
    if not isinstance(values, list) or not values:
        return value_text(None, lang)
    return SEP_LIST.join(value_text(v, lang) for v in values)


def _entries(rows: Any, lang: str, render) -> list[str]:
    if rows is None:
        return [f"- {value_text(None, lang)}"]
    if not isinstance(rows, list) or not rows:
        return [f"- {LABELS[lang]['none']}"]
    return [f"- {render(row if isinstance(row, dict) else {})}" for row in rows]


def prescription(obj: dict, lang: str) -> str:
    L = LABELS[lang]

    def medication(m: dict) -> str:
        details = SEP_FIELD.join(_field(m, k, k, lang) for k in ("strength", "dose", "frequency", "days"))
        return f"{value_text(m.get('name'), lang)}{SEP_ITEM_OPEN}{details}{SEP_ITEM_CLOSE}"

    head = SEP_FIELD.join([
        _field(obj, "patient_name", "patient", lang), _field(obj, "patient_id", "patient_id", lang),
        _field(obj, "institution", "institution", lang), _field(obj, "issue_date", "issue_date", lang),
        f"{L['diagnosis']}{SEP_VALUE}{_list(obj.get('diagnosis_codes'), lang)}",
        _field(obj, "prescriber", "prescriber", lang),
    ])
    return f"{L['prescription']}{SEP_VALUE}{head}\n{L['medications']}{SEP_LIST_HEAD}" + "\n".join(
        _entries(obj.get("medications"), lang, medication))


def receipt(obj: dict, lang: str) -> str:
    L = LABELS[lang]

    def item(i: dict) -> str:
        details = SEP_FIELD.join(_field(i, k, k, lang) for k in ("quantity", "price"))
        return f"{value_text(i.get('name'), lang)}{SEP_ITEM_OPEN}{details}{SEP_ITEM_CLOSE}"

    head = SEP_FIELD.join(_field(obj, k, k, lang) for k in ("store", "date", "address", "subtotal", "tax", "total"))
    return f"{L['receipt']}{SEP_VALUE}{head}\n{L['items']}{SEP_LIST_HEAD}" + "\n".join(_entries(obj.get("items"), lang, item))


TEMPLATES = {"prescription": prescription, "receipt": receipt}


def render(obj: dict, schema: str, lang: str) -> str:
    if lang not in LANGUAGES:
        raise ValueError(f"summary language {lang!r}: expected one of {', '.join(LANGUAGES)}")
    if schema not in TEMPLATES:
        raise ValueError(f"no summary template for schema {schema!r}: expected one of {sorted(TEMPLATES)}")
    if not isinstance(obj, dict):
        raise TypeError(f"a summary needs the parsed JSON object, got {type(obj).__name__}")
    return TEMPLATES[schema](obj, lang)


def json_values(obj: Any) -> set[str]:
    """Every scalar of a JSON value, as value_text writes it (nulls excluded: they are said unreadable)."""
    if isinstance(obj, dict):
        return set().union(*(json_values(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(json_values(v) for v in obj)) if obj else set()
    return set() if obj is None or obj == "" else {value_text(obj, "en")}


def unsupported(summary: str, obj: dict, lang: str) -> list[str]:
    """Pieces of `summary` that are neither template text nor a value of `obj` (empty: the summary checks)."""
    words = set(LABELS[lang].values())
    values = json_values(obj)
    pattern = "|".join(re.escape(s) for s in sorted(SEPARATORS, key=len, reverse=True))
    pieces = [p for p in re.split(pattern, summary) if p.strip()]
    # A value that itself holds a separator ("12, Main St") is split too: accept its pieces when they come
    # from one of the JSON's values split the same way.
    value_pieces = {q for v in values for q in re.split(pattern, v) if q.strip()}
    return [p for p in pieces if p not in words and p not in values and p not in value_pieces]
