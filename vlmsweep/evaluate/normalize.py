"""The one text normalisation every text metric applies before comparing (EM, ANLS, CER, WER, digits, units).

What it folds (docs/training-evaluation.md has the table with examples):
- Unicode NFKC: composed and decomposed Hangul (NFD 김 = NFC 김), full-width forms (`１２３` = `123`,
  `ＡＢ` = `AB`), compatibility characters (`㎎` = `mg`, `①` = `1`, `ﬁ` = `fi`, the micro sign `µ` = Greek `μ`),
  no-break and ideographic spaces (U+00A0, U+3000 = a space).
- Whitespace: every run of Unicode whitespace (tabs, newlines included) becomes one space; ends trimmed.
- Casefold, only where the metric is case-insensitive by definition (`casefold=True`): text and unit
  exact match, ANLS, unit spellings. CER, WER, ids and digits keep case. Casefolding can leave a
  decomposed sequence (`ǰ` -> `j` + U+030C), so NFKC runs once more after it.
It folds nothing else: punctuation, hyphen and dash variants, zero-width characters and scripts
(simplified vs traditional Chinese) stay as they are.
"""

from __future__ import annotations

import unicodedata


def normalize(text: str, *, casefold: bool) -> str:
    """`text` after NFKC, optional casefolding (then NFKC again), whitespace runs collapsed, ends trimmed."""
    text = unicodedata.normalize("NFKC", text)
    if casefold:
        text = unicodedata.normalize("NFKC", text.casefold())
    return " ".join(text.split())
