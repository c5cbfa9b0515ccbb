"""Failure tags: one taxonomy, one precise rule per tag, evidence for every tag that fires (pure, no torch).

"The answer object" below is the strictly parsed object, else the salvaged one (see contract.py).
Rules marked *prose* run only when there is no answer object, on the raw text; they read the first
`PROSE_WINDOW` characters so that a 1 MB output costs the same as a 20 kB one (the window is
reported in the evidence when the text is longer).

| tag | fires when |
|---|---|
| parse_fail | the whole trimmed output is not one JSON object (strict parse fails), salvage or not |
| wrong_keys | an answer object exists and some object in it (top level, nested, list items) has a key set other than the schema's |
| type_mismatch | an answer object exists and a value at a schema key has a JSON type the schema does not allow (e.g. "frequency": "3") |
| run_on | non-space text follows the answer object, or there is no complete object and generation stopped at max_new_tokens |
| repetition_loop | some unit of 1-100 characters repeats at least 4 times back to back, the run is at least 40 characters long, and the same run is not in the canonical target text |
| instruction_echo | the output holds 6 consecutive words of the instruction (a whole instruction sentence if shorter), a request phrase (`please tell/give/show/provide/read/extract/return/list/output/describe/identify/find`, `tell/show/give me`, `can/could/would you`, `알려/말해/읽어/추출해/작성해 주세요`, `请告诉/提供/列出/给出/读取/提取/返回/识别`), or a domain tag such as `[PRESCRIPTION]` |
| digit_flip | a field whose target holds digits (a digit field, or any field with 3+ digits) is wrong, and the predicted digits have the target's length and differ in 1 or 2 places (fewer than all when 2+ digits). *prose*: the target's digit string (3+ digits) is absent but a number token of the raw text, not itself another target value, has the same length and differs in 1 digit (2 when the target has 5+ digits), and is not one digit repeated ("111", a repetition artifact) unless the target is |
| near_miss_spelling | a text field (not an id, not a unit field) with letters is wrong but rapidfuzz ratio(normalised pred, normalised target) reaches the target script's threshold (80 for Latin, 65 when the target holds Hangul or Han: one wrong character in a 3-character name scores 66.7, two score 33), and the difference is not only in digits. *prose*: the target (4+ letters, 3+ for Hangul/Han) is absent from the normalised raw text but its best window there (rapidfuzz partial_ratio_alignment) reaches the same threshold |
| unit_confusion | a unit field (strength, dose) has a unit in both prediction and target and the folded units differ (mg vs mcg). *prose*: the target's number appears with a unit, never with the target's unit |
| missing_value | an answer object exists and a target value that is not null has a null, absent or unpaired prediction |
| hallucinated_value | an answer object exists and a prediction that is not null stands where the target is null, or in an extra list item |
| domain_leakage | the asked schema is prescription and the raw output holds a leakage keyword (ASCII ones as whole words, case-insensitive; CJK ones as substrings) that the canonical target text does not hold. Keywords: the package's lists `leakage_keywords/{en,ko,zh}.txt`, or `eval.leakage_keywords` (see `resolve_leakage_keywords`) |
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from rapidfuzz import fuzz

from vlmsweep.evaluate.fields import (
    DIGIT_FIELDS,
    NUMBER_UNIT,
    UNIT_ALIASES,
    UNIT_FIELDS,
    FieldPair,
    as_text,
    digits_of,
    exact_match,
    is_null,
    kind_of,
    norm_text,
    unit_of,
)

TAGS = (
    "parse_fail",
    "wrong_keys",
    "type_mismatch",
    "run_on",
    "repetition_loop",
    "instruction_echo",
    "digit_flip",
    "near_miss_spelling",
    "unit_confusion",
    "missing_value",
    "hallucinated_value",
    "domain_leakage",
    "unreadable_input",  # the image could not be decoded or processed: scored as a failure, never dropped
)

# Receipt vocabulary that should never appear in a prescription answer: one package data file per
# receipt language (vlmsweep/evaluate/leakage_keywords/<lang>.txt, one keyword a line, # comments).
LEAKAGE_LANGS = ("en", "ko", "zh")


def read_keyword_file(path: Path | str, source: str | None = None) -> tuple[str, ...]:
    """Keywords of a list file: one a line; blank lines and lines starting with # are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8") if source is None else source
    except OSError as e:
        raise ValueError(f"leakage keyword file {path}: {e.strerror or e}; give an existing UTF-8 text file "
                         "with one keyword a line") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


@lru_cache(maxsize=None)
def builtin_leakage_keywords(lang: str) -> tuple[str, ...]:
    if lang not in LEAKAGE_LANGS:
        raise ValueError(f"no built-in leakage keyword list {lang!r}: expected one of {list(LEAKAGE_LANGS)}")
    f = resources.files("vlmsweep.evaluate").joinpath("leakage_keywords", f"{lang}.txt")
    return read_keyword_file(f"leakage_keywords/{lang}.txt", f.read_text(encoding="utf-8"))


@lru_cache(maxsize=64)
def resolve_leakage_keywords(entries: tuple[str, ...]) -> tuple[str, ...]:
    """eval.leakage_keywords as matched: empty means the three built-in lists; otherwise exactly the
    entries, where `@en`, `@ko`, `@zh` stand for a built-in list and `@PATH` for a file of yours (one
    keyword a line, relative to the working directory). So `[@en, @ko, @zh, pharmacy]` extends the
    built-in lists and `[pharmacy]` replaces them."""
    if not entries:
        entries = tuple(f"@{lang}" for lang in LEAKAGE_LANGS)
    out: list[str] = []
    for entry in entries:
        if entry.startswith("@") and entry[1:] in LEAKAGE_LANGS:
            out += builtin_leakage_keywords(entry[1:])
        elif entry.startswith("@"):
            path = Path(entry[1:]).expanduser()
            if not path.is_file():
                raise ValueError(f"eval.leakage_keywords: {entry!r}: no such file {path.resolve()}; "
                                 f"use @en, @ko, @zh for a built-in list or @PATH to an existing keyword file")
            out += read_keyword_file(path)
        elif entry.strip():
            out.append(entry.strip())
    return tuple(dict.fromkeys(out))  # first occurrence wins; evidence lists keywords in this order


DEFAULT_LEAKAGE_KEYWORDS = resolve_leakage_keywords(())

PROSE_WINDOW = 20_000
ECHO_NGRAM = 6
# Near-miss threshold per script (rapidfuzz ratio, 0-100). A Latin letter is a small part of a name:
# one wrong letter in five (80) is a misreading. A Hangul syllable or Han character is a large part:
# one wrong character in a 3-character name scores 66.7, two score 33.3, one in two 50, so 65 tags
# one wrong character in three or more and nothing coarser.
NEAR_MISS_RATIO = 80.0
NEAR_MISS_RATIO_CJK = 65.0
_CJK = re.compile(r"[\u1100-\u11ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
REPEAT_UNIT_MAX = 100
REPEAT_MIN_COPIES = 4
REPEAT_MIN_CHARS = 40

_REPEAT = re.compile(r"(.{1,%d}?)\1{%d,}" % (REPEAT_UNIT_MAX, REPEAT_MIN_COPIES - 1), re.DOTALL)
_WORD = re.compile(r"\w+")
_REQUEST = re.compile(
    r"\bplease\s+(?:tell|give|show|provide|read|extract|return|list|output|describe|identify|find)\b"
    r"|\b(?:tell|show|give)\s+me\b"
    r"|\b(?:can|could|would)\s+you\b"
    r"|(?:알려|말해|읽어|추출해|작성해)\s*주(?:세요|십시오)"
    r"|请(?:告诉|提供|列出|给出|读取|提取|返回|识别)"
    r"|\[(?:prescription|receipt)\]",
    re.IGNORECASE,
)
_NUMBER_TOKEN = re.compile(r"\d(?:[\d\-./,:]*\d)?")


def _hamming_flip(pred_digits: str, target_digits: str) -> bool:
    if not target_digits or len(pred_digits) != len(target_digits) or pred_digits == target_digits:
        return False
    diff = sum(a != b for a, b in zip(pred_digits, target_digits))
    return diff <= 2 and (diff < len(target_digits) or len(target_digits) == 1)


def _prose_flip(pred_digits: str, target_digits: str) -> bool:
    """Stricter than a field's rule: in prose nothing ties the number to the field, so only a near
    reading counts, and runs of one digit ("111") from a looping generation are not readings."""
    if len(set(pred_digits)) == 1 and len(set(target_digits)) > 1:
        return False
    diff = sum(a != b for a, b in zip(pred_digits, target_digits))
    return _hamming_flip(pred_digits, target_digits) and diff <= (1 if len(target_digits) < 5 else 2)


def near_miss_threshold(target: str) -> float:
    """The ratio a wrong reading of `target` must reach to be a near miss: by the target's script."""
    return NEAR_MISS_RATIO_CJK if _CJK.search(target) else NEAR_MISS_RATIO


def _letters(text: str) -> str:
    return "".join(ch for ch in norm_text(text) if not ch.isdigit() and not ch.isspace())


def _target_leaves(target: Any, pattern: str = "", path: str = "") -> list[tuple[str, str, Any]]:
    """(path, pattern, value) of every non-null target leaf, for the prose rules."""
    if isinstance(target, dict):
        out = []
        for key, value in target.items():
            out += _target_leaves(value, f"{pattern}.{key}" if pattern else key, f"{path}.{key}" if path else key)
        return out
    if isinstance(target, list):
        out = []
        for i, value in enumerate(target):
            out += _target_leaves(value, f"{pattern}[]", f"{path}[{i}]")
        return out
    return [] if target is None else [(path, pattern, target)]


def _is_digit_field(schema_name: str, pattern: str, target: Any) -> bool:
    dt = digits_of(target)
    return bool(dt) and (pattern in DIGIT_FIELDS.get(schema_name, set()) or len(dt) >= 3)


# --- rules on the raw text ------------------------------------------------------------------------


def repetition_loop(raw: str, target_text: str) -> str | None:
    text = raw[:PROSE_WINDOW]
    pos = 0
    while True:
        m = _REPEAT.search(text, pos)
        if m is None:
            return None
        run, unit = m.group(0), m.group(1)
        if len(run) >= REPEAT_MIN_CHARS and unit * REPEAT_MIN_COPIES not in target_text:
            return f"{unit!r} x{len(run) // len(unit)} at char {m.start()}"
        pos = m.start() + 1


def instruction_echo(raw: str, instruction: str) -> str | None:
    out_words = [w.casefold() for w in _WORD.findall(raw)]
    out_text = " " + " ".join(out_words) + " "
    for sentence in re.split(r"(?<=[.!?。])\s+", instruction):
        words = [w.casefold() for w in _WORD.findall(sentence)]
        if not words:
            continue
        n = min(ECHO_NGRAM, len(words))
        for i in range(len(words) - n + 1):
            gram = " ".join(words[i : i + n])
            if f" {gram} " in out_text:
                return f"echoes instruction words {gram!r}"
    m = _REQUEST.search(raw)
    if m is not None:
        return f"request phrase {m.group(0)!r}"
    return None


def _keyword_pattern(keyword: str) -> re.Pattern:
    if keyword.isascii():
        return re.compile(r"(?<![A-Za-z])" + re.escape(keyword) + r"(?![A-Za-z])", re.IGNORECASE)
    return re.compile(re.escape(keyword))


def domain_leakage(raw: str, target_text: str, keywords: Sequence[str]) -> str | None:
    found = []
    for kw in resolve_leakage_keywords(tuple(keywords)):
        pat = _keyword_pattern(kw)
        if pat.search(raw) and not pat.search(target_text):
            found.append(kw)
    return f"receipt words {found}" if found else None


def _prose_digit_flip(raw: str, target: Any, schema_name: str) -> str | None:
    text = raw[:PROSE_WINDOW]
    leaves = _target_leaves(target)
    # A number that is exactly another field's value (the total beside a line price) is no misreading.
    own = {digits_of(value) for _, _, value in leaves}
    tokens = [(t, digits_of(t)) for t in _NUMBER_TOKEN.findall(text)]
    for path, pattern, value in leaves:
        dt = digits_of(value)
        if len(dt) < 3 or any(d == dt for _, d in tokens):
            continue
        for tok, d in tokens:
            if d not in own and _prose_flip(d, dt):
                return f"{path}: {as_text(value)!r} -> {tok!r} in the text"
    return None


def _prose_near_miss(raw: str, target: Any, schema_name: str) -> str | None:
    text = norm_text(raw[:PROSE_WINDOW])
    for path, pattern, value in _target_leaves(target):
        if kind_of(schema_name, pattern) != "text" or not isinstance(value, str):
            continue
        t = norm_text(value)
        if sum(ch.isalpha() for ch in t) < (3 if _CJK.search(t) else 4) or t in text:
            continue
        best = fuzz.partial_ratio_alignment(t, text)
        if best is not None and best.score >= near_miss_threshold(t):
            window = text[best.dest_start : best.dest_end]
            return f"{path}: {value!r} ~ {window!r} ({best.score:.0f})"
    return None


def _number_units(text: str) -> list[tuple[str, str]]:
    out = []
    for m in NUMBER_UNIT.finditer(unicodedata.normalize("NFKC", text).replace("µ", "μ")):
        out.append((m.group(1), UNIT_ALIASES.get(m.group(2).casefold(), m.group(2).casefold())))
    return out


def _prose_unit_confusion(raw: str, target: Any, schema_name: str) -> str | None:
    found = _number_units(raw[:PROSE_WINDOW])
    for path, pattern, value in _target_leaves(target):
        if pattern not in UNIT_FIELDS.get(schema_name, set()):
            continue
        for number, unit in _number_units(as_text(value) or ""):
            units = {u for n, u in found if n == number}
            if units and unit not in units:
                return f"{path}: {as_text(value)!r} but the text has {number} {sorted(units)}"
    return None


# --- rules on the answer object -------------------------------------------------------------------


def _field_rules(pairs: list[FieldPair], schema_name: str) -> dict[str, str]:
    hits: dict[str, list[str]] = {}
    for fp in pairs:
        if fp.extra:
            if not is_null(fp.pred):
                hits.setdefault("hallucinated_value", []).append(f"{fp.path}={as_text(fp.pred)!r} (extra item)")
            continue
        t_null, p_null = is_null(fp.target), is_null(fp.pred)
        if t_null and not p_null:
            hits.setdefault("hallucinated_value", []).append(f"{fp.path}={as_text(fp.pred)!r}")
        if not t_null and p_null:
            hits.setdefault("missing_value", []).append(fp.path)
        if t_null or p_null:
            continue
        kind = kind_of(schema_name, fp.pattern)
        if exact_match(fp.pred, fp.target, kind):
            continue
        change = f"{fp.path}: {as_text(fp.target)!r} -> {as_text(fp.pred)!r}"
        if _is_digit_field(schema_name, fp.pattern, fp.target) and _hamming_flip(digits_of(fp.pred), digits_of(fp.target)):
            hits.setdefault("digit_flip", []).append(change)
        if kind == "unit":
            up, ut = unit_of(fp.pred), unit_of(fp.target)
            if up is not None and ut is not None and up != ut:
                hits.setdefault("unit_confusion", []).append(change)
        elif kind == "text" and isinstance(fp.target, str) and isinstance(fp.pred, str):
            p, t = norm_text(fp.pred), norm_text(fp.target)
            if any(ch.isalpha() for ch in t) and _letters(p) != _letters(t) and fuzz.ratio(p, t) >= near_miss_threshold(t):
                hits.setdefault("near_miss_spelling", []).append(change)
    return {tag: "; ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "") for tag, items in hits.items()}


def tag_sample(
    raw: str,
    *,
    strict: dict | None,
    answer: dict | None,
    answer_end: int | None,
    pairs: list[FieldPair] | None,
    key_errors: list[str],
    type_errs: list[str],
    target: dict,
    target_text: str,
    schema_name: str,
    instruction: str,
    leakage_keywords: tuple[str, ...],
    stop_reason: str | None = None,
) -> dict[str, str]:
    """Every tag that fires, in TAGS order, mapped to its evidence."""
    ev: dict[str, str] = {}
    if strict is None:
        ev["parse_fail"] = "no object" if answer is None else "object found inside other text (salvaged)"
    if answer is not None and key_errors:
        ev["wrong_keys"] = "; ".join(key_errors[:5])
    if answer is not None and type_errs:
        ev["type_mismatch"] = "; ".join(type_errs[:5])
    if answer is not None and answer_end is not None and raw[answer_end:].strip():
        ev["run_on"] = f"{len(raw[answer_end:].strip())} chars after the object: {raw[answer_end:].strip()[:60]!r}"
    elif answer is None and stop_reason == "max_new_tokens":
        ev["run_on"] = "no complete object before max_new_tokens"
    hit = repetition_loop(raw, target_text)
    if hit:
        ev["repetition_loop"] = hit
    hit = instruction_echo(raw, instruction)
    if hit:
        ev["instruction_echo"] = hit
    if answer is not None and pairs is not None:
        ev.update(_field_rules(pairs, schema_name))
    else:
        for tag, rule in (
            ("digit_flip", _prose_digit_flip),
            ("near_miss_spelling", _prose_near_miss),
            ("unit_confusion", _prose_unit_confusion),
        ):
            hit = rule(raw, target, schema_name)
            if hit:
                ev[tag] = "prose: " + hit
    if schema_name == "prescription":
        hit = domain_leakage(raw, target_text, leakage_keywords)
        if hit:
            ev["domain_leakage"] = hit
    if len(raw) > PROSE_WINDOW:
        for tag in ("repetition_loop", "digit_flip", "near_miss_spelling", "unit_confusion"):
            if tag in ev:
                ev[tag] += f" [first {PROSE_WINDOW} of {len(raw)} chars read]"
    return {tag: ev[tag] for tag in TAGS if tag in ev}
