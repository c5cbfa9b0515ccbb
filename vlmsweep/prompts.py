"""The one place that words the question: train, evaluation and inference prompts come from here."""

from __future__ import annotations

import json
from typing import Any

# Domain -> the JSON schema the answer follows. A hard negative is a receipt image asked as a
# prescription: its `domain` is the prescription one and its target the all-null prescription.
SCHEMA_OF_DOMAIN = {
    "prescription_ko": "prescription",
    "prescription_zh": "prescription",
    "prescription_en": "prescription",
    "receipt": "receipt",  # English receipts (synthetic and SROIE)
    "receipt_ko": "receipt",
    "receipt_zh": "receipt",
}

DOMAIN_TAGS = {"prescription": "[PRESCRIPTION]", "receipt": "[RECEIPT]"}

INSTRUCTIONS = {
    "prescription": (
        "Read this medical prescription and return only a JSON object with the patient, "
        "institution, date, diagnosis codes, medications and prescriber. Use null for missing values."
    ),
    "receipt": (
        "Read this receipt and return only a JSON object with the store, date, address, items, "
        "subtotal, tax and total. Use null for missing values."
    ),
}


def schema_name(domain: str) -> str:
    try:
        return SCHEMA_OF_DOMAIN[domain]
    except KeyError:
        raise ValueError(
            f"unknown domain {domain!r}: expected one of {sorted(SCHEMA_OF_DOMAIN)}"
        ) from None


def instruction(domain: str, domain_tag: bool) -> str:
    schema = schema_name(domain)
    text = INSTRUCTIONS[schema]
    return f"{DOMAIN_TAGS[schema]} {text}" if domain_tag else text


# What introduces the page's OCR text (ocr_hint) after the instruction: the model is told where the text came from.
HINT_HEADER = "OCR text of the page (may contain errors):"


def with_hint(text: str, hint: str | None) -> str:
    """The user turn's text: the instruction, then the page's OCR text (ocr_hint) when there is one."""
    return text if hint is None else f"{text}\n{HINT_HEADER}\n{hint}"


def messages(domain: str, domain_tag: bool, answer: dict[str, Any] | None = None, text: str | None = None,
             hint: str | None = None) -> list[dict]:
    """Chat messages for one image; with `answer`, the assistant turn to train on. `text`: the instruction a
    trained folder recorded (predict asks what training taught), instead of today's wording. `hint`: the page's OCR
    text (ocr_hint), after the instruction."""
    asked = text if text is not None else instruction(domain, domain_tag)
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": with_hint(asked, hint)}]}
    if answer is None:
        return [user]
    return [user, {"role": "assistant", "content": [{"type": "text", "text": serialize(answer)}]}]


def serialize(target: dict[str, Any]) -> str:
    """Canonical answer text: compact, keys in schema order, non-ASCII kept (fewer tokens for CJK)."""
    return json.dumps(target, ensure_ascii=False, separators=(", ", ": "))
