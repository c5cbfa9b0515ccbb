"""The page's OCR text for the prompt (ocr_hint): the engines, a cache by image hash, the budget resize and the cut.

A run with `ocr_hint=tesseract` or `ocr_hint=rapidocr` gives every page it trains on, validates on or evaluates a
hint: the engine's text of the page in reading order, after the instruction (vlmsweep.prompts.with_hint). The text
is cached on disk by the image's bytes, the engine, its version, the languages and the resolution, so a sweep or a
loop OCRs each page once. Each cache entry keeps the seconds its OCR took: `cost.ocr_seconds_per_image` is the
engine's cost per page whether this run read the page or the cache did.

A hint longer than its token budget is cut at a line boundary (counted): the budget is `ocr_hint.max_tokens`, lowered
so that the image, the instruction, the hint and the longest answer (the training set's, or `eval.max_new_tokens`)
fit `train.max_seq_len` (vlmsweep.config.schema.hint_token_budget). A page the
engine cannot read gets no hint (counted and named), never a failed run. Written by hand: no OCR library caches or
budgets a prompt.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image

from vlmsweep.data.layout import reading_order
from vlmsweep.data.record import Record
from vlmsweep.ocr.engine import OcrUnavailable, check_tesseract, languages_for, read_text

log = logging.getLogger(__name__)

ENGINES = ("tesseract", "rapidocr")
# The domains whose script an engine does not read: their hints hold the digits and Latin text only
UNREAD_DOMAINS = {"rapidocr": ("prescription_ko", "receipt_ko")}  # PP-OCRv4's recognizer has no Hangul
RAPIDOCR_INSTALL = "pip install 'vlmsweep[rapidocr]' (the rapidocr-onnxruntime wheel, its PP-OCRv4 models inside)"


def engine_version(engine: str, domains: Sequence[str]) -> str:
    """The engine's version when it (and, for Tesseract, every language the domains need) is installed; else
    OcrUnavailable naming what to install. Asked once per process for an engine and its domains: the run's preamble
    asks before any model loads, and each pass's hint stage asks again for its cache key."""
    return _engine_version(engine, frozenset(domains))


@functools.lru_cache(maxsize=None)
def _engine_version(engine: str, domains: frozenset[str]) -> str:
    if engine == "tesseract":
        return "tesseract " + check_tesseract(tuple(domains), who="ocr_hint=tesseract")
    if engine == "rapidocr":
        try:
            from importlib.metadata import version

            import rapidocr_onnxruntime  # noqa: F401
        except ImportError:
            raise OcrUnavailable(f"ocr_hint=rapidocr needs the Python package rapidocr-onnxruntime: "
                                 f"{RAPIDOCR_INSTALL}") from None
        return "rapidocr-onnxruntime " + version("rapidocr-onnxruntime")
    raise ValueError(f"ocr_hint.engine={engine!r}: expected one of {', '.join(ENGINES)}")


class NoRoomForHint(ValueError):
    """train.max_seq_len leaves the hint no tokens beside the image, the prompt and the longest answer."""


_RAPID = None  # one RapidOCR instance a process: loading its three ONNX models takes about a second


def _rapidocr_lines(image: Image.Image) -> list[str]:
    """PP-OCRv4's text boxes in reading order (vlmsweep.data.layout.reading_order)."""
    global _RAPID
    import numpy as np

    if _RAPID is None:
        from rapidocr_onnxruntime import RapidOCR

        _RAPID = RapidOCR()
    result, _ = _RAPID(np.asarray(image.convert("RGB"))[:, :, ::-1])  # it reads OpenCV's BGR order
    boxes = []
    for box, text, _score in result or []:
        ys = [p[1] for p in box]
        boxes.append(((min(ys) + max(ys)) / 2, max(ys) - min(ys), min(p[0] for p in box), str(text)))
    return reading_order(boxes)


def read_page(engine: str, image: Image.Image, domain: str) -> str:
    """The engine's text of one page, one text line a line, blank lines and trailing spaces dropped."""
    if engine == "tesseract":
        lines = read_text(image, domain).splitlines()
    elif engine == "rapidocr":
        lines = _rapidocr_lines(image)
    else:
        raise ValueError(f"ocr_hint.engine={engine!r}: expected one of {', '.join(ENGINES)}")
    # Tesseract pads table columns with long runs of spaces: two keep the column break and cost one token
    return "\n".join(re.sub(r"[ \t]{2,}", "  ", line.strip()) for line in lines if line.strip())


def budget_image(image: Image.Image, min_pixels: int, max_pixels: int) -> Image.Image:
    """The image as Qwen2-VL's processor resizes it for this pixel budget (its smart_resize: sides multiples of 28)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    h, w = smart_resize(image.height, image.width, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
    return image.convert("RGB").resize((w, h), Image.Resampling.BICUBIC)


def cut_to_tokens(text: str, budget: int, count: Callable[[str], int]) -> tuple[str, bool]:
    """`text` whole if it has at most `budget` tokens, else its longest run of leading lines that does; (text, cut)."""
    if count(text) <= budget:
        return text, False
    lines = text.split("\n")
    lo, hi = 0, len(lines)  # the longest prefix that fits: lines[:lo] fits, lines[:hi + 1] does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count("\n".join(lines[:mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return "\n".join(lines[:lo]), True


@dataclass
class HintStats:
    """What the hints of one pass cost and lost (metrics ocr_hint.* and cost.ocr_seconds_per_image, report.md)."""

    pages: int = 0  # pages given a hint
    read: int = 0  # of them, OCR'd now (the rest came from the cache)
    seconds: float = 0.0  # the engine's seconds over every hinted page (a cached page: what its OCR took)
    cut: list[str] = field(default_factory=list)  # ids of pages whose hint was cut to the budget
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, why) of pages the engine could not read
    unread_script: list[str] = field(default_factory=list)  # ids of pages in a script the engine does not read

    def metrics(self) -> dict[str, float]:
        out = {"ocr_hint.pages": float(self.pages), "ocr_hint.failed_pages": float(len(self.failed)),
               "ocr_hint.cut_pages": float(len(self.cut))}
        if self.pages:
            out["cost.ocr_seconds_per_image"] = self.seconds / self.pages
        return out


class Hinter:
    """The hints of one run's config: `attach(records)` returns the records with their page's OCR text set."""

    def __init__(self, engine: str, resolution: str, cache_dir: Path, budget_tokens: int,
                 count_tokens: Callable[[str], int], pixels: tuple[int, int], version: str):
        self.engine, self.resolution, self.budget, self.count = engine, resolution, budget_tokens, count_tokens
        self.pixels, self.version = pixels, version
        self.folder = Path(cache_dir) / "ocr_hints" / engine
        self.stats = HintStats()
        self._memo: dict[tuple[str, str], str | None] = {}  # (id, image) -> its hint, within this pass

    def _key(self, data: bytes, domain: str) -> str:
        langs = languages_for(domain) if self.engine == "tesseract" else ""
        budget = f"{self.pixels[0]}-{self.pixels[1]}" if self.resolution == "budget" else "page"
        parts = [hashlib.sha256(data).hexdigest(), self.version, langs, budget]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def _ocr(self, record: Record) -> tuple[str, float]:
        """(text, seconds) of the record's page, from the cache or the engine; OSError/RuntimeError when unreadable."""
        from vlmsweep.files import WriteError, write_json

        domain = record.image_domain or record.domain
        data = Path(record.image).read_bytes()
        path = self.folder / (key := self._key(data, domain))[:2] / f"{key}.json"
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            return cached["text"], float(cached["seconds"])
        except (OSError, ValueError, KeyError):
            pass
        with Image.open(record.image) as im:
            im.load()
            image = budget_image(im, *self.pixels) if self.resolution == "budget" else im.convert("RGB")
        started = time.perf_counter()
        text = read_page(self.engine, image, domain)
        seconds = time.perf_counter() - started
        self.stats.read += 1
        try:  # a cache that cannot be written costs the next run this OCR again, not this page its hint
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, {"text": text, "seconds": seconds, "engine": self.version, "resolution": self.resolution,
                              "image": str(record.image)})
        except (OSError, WriteError) as err:
            log.warning("ocr_hint: the OCR cache could not be written (%s); this page will be read again next run", err)
        return text, seconds

    def text(self, record: Record) -> str | None:
        """The record's hint (cut to the budget), or None where the engine could not read its page (counted, named)."""
        key = (record.id, str(record.image))
        if key in self._memo:
            return self._memo[key]
        try:
            text, seconds = self._ocr(record)
        except Exception as err:  # noqa: BLE001 - an unreadable page costs its hint, never the run
            reason = type(err).__name__ + (f": {str(err).strip().splitlines()[0]}" if str(err).strip() else "")
            self.stats.failed.append((record.id, reason))
            log.warning("ocr_hint=%s: page %s (%s) has no hint, the engine could not read it: %s", self.engine,
                        record.id, record.image, reason)
            hint = None
        else:
            hint, cut = cut_to_tokens(text, self.budget, self.count)
            if cut:
                self.stats.cut.append(record.id)
            self.stats.pages += 1
            self.stats.seconds += seconds
            if (record.image_domain or record.domain) in UNREAD_DOMAINS.get(self.engine, ()):
                self.stats.unread_script.append(record.id)
        self._memo[key] = hint
        return hint

    def attach(self, records: Sequence[Record]) -> list[Record]:
        return [replace(r, hint=self.text(r)) for r in records]


def section(stats: HintStats, engine: str, resolution: str, budget: int) -> str:
    """report.md's section on the hint: the mechanism named, what it cost and lost."""
    lines = [f"Every prompt held the page's OCR text (`ocr_hint={engine}`, resolution `{resolution}`), after the "
             f"instruction: answers here come from the image **and** that text, so a content effect of this run is "
             f"the OCR engine's as much as the model's. Pages with a hint: {stats.pages}"
             + (f" ({stats.read} OCR'd now, the rest from the cache)" if stats.read < stats.pages else "")
             + (f", {stats.seconds / stats.pages:.2f} s of OCR per page (cost.ocr_seconds_per_image)." if stats.pages
                else ".")]
    if resolution == "budget":
        lines.append("With `ocr_hint.resolution=budget` the engine read each page as resized to `max_pixels`: a "
                     "visual-token budget effect in this run includes the OCR engine's, not Qwen2-VL's alone.")
    if stats.unread_script:
        lines.append(f"{len(stats.unread_script)} page(s) are Korean, which {engine} does not read (no Hangul): their "
                     "hints hold the digits and Latin text only (ocr_hint=tesseract reads Hangul).")
    if stats.cut:
        shown = ", ".join(stats.cut[:10]) + (" ..." if len(stats.cut) > 10 else "")
        lines.append(f"{len(stats.cut)} hint(s) were cut at a line boundary to {budget} tokens (ocr_hint.max_tokens, "
                     f"and train.max_seq_len less the image, prompt and eval.max_new_tokens): {shown}.")
    if stats.failed:
        shown = "; ".join(f"{i}: {why}" for i, why in stats.failed[:5]) + (" ..." if len(stats.failed) > 5 else "")
        lines.append(f"{len(stats.failed)} page(s) had no hint, the engine could not read them: {shown}.")
    return "## OCR hint\n\n" + "\n\n".join(lines) + "\n"
