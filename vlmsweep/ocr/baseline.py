"""model=ocr_tesseract's evaluation: OCR + rules answer every record, then the same scoring as the VLM's.

evaluate_ocr is a pass's predict function in place of the model's (vlmsweep.pipeline.stages.run_pass): the same
evaluators (vlmsweep.evaluate.evaluators) run it on the same sets, and the same write stage writes its files."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

from vlmsweep import prompts
from vlmsweep.data.images import ImageLoadError, load_image
from vlmsweep.evaluate import score_outputs

from .engine import check_tesseract, read_text
from .extract import extract

log = logging.getLogger(__name__)

# Scans are read at up to ~12 megapixels (a 4961x7016 SROIE scan is decoded at half scale by JPEG draft mode):
# enough for Tesseract's ~300 dpi sweet spot on a receipt, without holding 100 MB of pixels.
MAX_OCR_PIXELS = 12_000_000


def evaluate_ocr(records: Sequence[Any], cfg_eval, seed: int = 0) -> tuple[dict[str, float], list[dict]]:
    """Answer every record with Tesseract + the domain's rules and score the answers exactly as `evaluate`
    scores a model's (contract, fields, tags, eval.perturb seeded by `seed`); each sample also keeps its OCR
    text (samples.jsonl). Writes nothing."""
    domains = sorted({r.domain for r in records})
    version = check_tesseract(domains)  # a missing engine or language fails before the first image
    n = len(records)
    raws, texts = [""] * n, [""] * n
    errors: list[str | None] = [None] * n
    costs = [{"seconds": 0.0} for _ in range(n)]
    started = time.perf_counter()
    for i, rec in enumerate(records):
        t0 = time.perf_counter()
        try:
            image = load_image(Path(rec.image), max_pixels=MAX_OCR_PIXELS)
        except ImageLoadError as e:  # scored as a failure, like the model's evaluation does
            errors[i] = f"id {rec.id!r}: {e}"
            log.warning("OCR baseline: %s", errors[i])
            continue
        texts[i] = read_text(image, rec.domain)
        raws[i] = prompts.serialize(extract(texts[i], rec.domain))
        costs[i] = {"seconds": time.perf_counter() - t0}
    log.info("OCR baseline (tesseract %s): %d samples in %.1f s", version, n, time.perf_counter() - started)
    metrics, samples = score_outputs(
        raws, records, leakage_keywords=tuple(cfg_eval.leakage_keywords),
        stop_reasons=["ocr" if e is None else "unreadable_input" for e in errors], costs=costs, input_errors=errors,
        perturb=(float(cfg_eval.perturb.digit_flip), float(cfg_eval.perturb.blank), int(seed)),
    )
    for sample, text in zip(samples, texts):
        sample["ocr_text"] = text
    return metrics, samples
