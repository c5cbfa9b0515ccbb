"""Text boxes into lines in reading order.

How an OCR engine's boxes become the hint's lines (vlmsweep.ocr.hint, PP-OCRv4) and how a generated page's drawn
strings do (vlmsweep.data.build.page_text): the reader's warm-up (vlmsweep.recipes.warmup, `hint_source=layout`) trains
on a page's own text, with OCR-like errors, before it meets an engine's. Written by hand: a dozen lines that no OCR
package exposes apart from its engine.
"""

from __future__ import annotations

from typing import Iterable


Box = tuple[float, float, float, str]  # (vertical centre, height, left edge, text)


def reading_order(boxes: Iterable[Box]) -> list[str]:
    """Top to bottom by line (boxes whose vertical centres lie within half a box height of the line's first), left to
    right within a line; each line's texts joined by a space."""
    lines: list[list[Box]] = []
    for b in sorted(boxes):
        if lines and abs(b[0] - lines[-1][0][0]) <= max(lines[-1][0][1], b[1]) / 2:
            lines[-1].append(b)
        else:
            lines.append([b])
    return [" ".join(t for *_, t in sorted(line, key=lambda b: b[2])) for line in lines]

