"""The Record every stage passes around: one image, the domain asked, and its ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# What the generators draw. "receipt" is the English (SROIE-style) receipt, as real SROIE data is
# labelled; receipt_ko / receipt_zh are Korean and Chinese ones. All three answer the receipt schema.
DOMAINS = ("prescription_ko", "prescription_zh", "receipt", "receipt_ko", "receipt_zh")
RECEIPT_DOMAINS = ("receipt", "receipt_ko", "receipt_zh")
SPLITS = ("train", "mining", "test", "regression", "validation")


@dataclass(frozen=True)
class Record:
    id: str  # unique within a dataset
    image: Path  # absolute path to the image file on disk
    domain: str  # the domain ASKED (decides schema + prompt); see prompts.SCHEMA_OF_DOMAIN
    target: dict  # ground-truth object, valid against the domain's schema
    image_domain: str  # what the image shows (differs from domain for hard negatives)
    origin: str = "base"  # lineage: base | mined:<cycle>:<tag> | synth:<cycle>:<tag> | manifest
    seed: int | None = None  # generator seed (near-duplicate guard); None for real data
    unannotated: tuple[str, ...] = ()  # top-level target keys the source does not label (e.g. SROIE items): not scorable
    parents: tuple[str, ...] = ()  # synth:<cycle>:<tag> records: ids of the mined records whose failure they target
    hint: str | None = None  # the page's OCR text for the prompt (ocr_hint; set by vlmsweep.ocr.hint), None: no hint
