"""The classic OCR baseline (model=ocr_tesseract): Tesseract text, then label-anchored rules to the domain's schema."""

from .engine import DEBIAN_PACKAGES, OcrUnavailable, check_tesseract, languages_for, read_text
from .extract import extract

__all__ = ["DEBIAN_PACKAGES", "OcrUnavailable", "check_tesseract", "extract", "languages_for", "read_text"]
