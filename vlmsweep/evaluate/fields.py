"""Content fidelity of one parsed answer against its target: list alignment, field pairs and their scores (pure).

Definitions (copied to docs/training-evaluation.md):
- Field paths: `patient_name`, `medications[0].strength`, `diagnosis_codes[1]`; the pattern drops the
  index (`medications[].strength`) and decides the field's kind (id, unit, digit).
- List alignment: items of a list (medications, items, diagnosis codes) are paired with the target's
  by the Hungarian method (`scipy.optimize.linear_sum_assignment`) maximising rapidfuzz `ratio` of the
  item's `name` (the whole item for lists of strings), ties broken towards the same position. A
  predicted item left over is an *extra* item (path `medications[+2].name`, 2 = its predicted index);
  a target item left over is paired with nothing (all its fields missing). An empty target list is
  one slot that matches an empty or null predicted list; predicted items there are extra items too.
  A key the prediction lacks scores like null (the contract metrics report the missing key).
- Normalisation (`vlmsweep.evaluate.normalize.normalize`, one function for every text metric): Unicode
  NFKC, whitespace runs collapsed, ends trimmed, and casefolding where the metric is case-insensitive
  (text and unit EM, ANLS, unit spellings); CER, WER, ids and digits keep case.
- Exact match: normalised and casefolded strings; numbers compare by value (7 == 7.0 == "7"); for unit
  fields the space between number and unit is dropped ("100mg" == "100 MG"). Ids (`patient_id`,
  `diagnosis_codes[]`) are normalised without casefolding and must have the target's type
  ("８００１０１" == "800101", but "j06.9" != "J06.9" and 12345 != "12345").
- field EM: share of exact matches over the field slots, which are every target leaf plus every
  non-null leaf of an extra predicted item (always wrong). A null target leaf matches a null prediction.
- ANLS: per leaf with a non-null target, `anls(pred, [target])` (the official DocVQA evaluation code on
  normalised strings, see `anls`); a missing prediction is "".
- CER and WER: `jiwer.cer` / `jiwer.wer` (default transformations) of the normalised values over the same
  leaves, as one corpus: total edits / total target characters (words), so it may exceed 1. Undefined
  (None) when the normalised targets hold no character. raw CER: the same over the values as they are,
  with no normalisation and no stripping (`jiwer.cer` with only the split into characters; None when
  the targets hold no character): the number a naive evaluation reports, where "  12345  " against
  "12345" costs 4 edits and an NFD name against its NFC target costs more than its length.
- digit accuracy: for digit fields whose target has digits, max(0, 1 - Lev(pred digits, target digits)
  / len(target digits)), averaged; digits are the ASCII digits of the normalised value (full-width
  digits count, NFKC maps them to ASCII). unit accuracy: for unit fields whose target has a unit, 1 when the
  predicted unit (after folding mcg/µg/ug -> μg, ml -> mL, ...) equals the target's.
- field F1: TP = slots where both sides are non-null and match; F1 = 2 TP / (non-null predicted slots +
  non-null target slots); 1.0 when both are 0 (an all-null answer to an all-null target).
- TED accuracy (Donut, Kim et al. 2022): max(0, 1 - TED(pred, gt) / TED(empty, gt)) with Donut's tree
  construction (keys sorted, empty values dropped, leaf labels compared by edit distance), through the
  `zss` Zhang-Shasha implementation; an all-empty target scores 1 for an all-empty prediction, else 0.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import jiwer
import numpy as np
import zss
from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein
from scipy.optimize import linear_sum_assignment

from vlmsweep.evaluate.normalize import normalize

ANLS_TAU = 0.5
# raw CER: jiwer's character split without its default strip, so nothing about the text is changed.
RAW_CHARS = jiwer.ReduceToListOfListOfChars()

MISSING = object()  # a key the prediction does not have (scored like null, reported as missing)

# Field kinds by schema and index-free path pattern. Unknown paths are plain text fields.
ID_FIELDS = {
    "prescription": {"patient_id", "diagnosis_codes[]"},
    "receipt": set(),
}
UNIT_FIELDS = {
    "prescription": {"medications[].strength", "medications[].dose"},
    "receipt": set(),
}
DIGIT_FIELDS = {
    "prescription": {
        "patient_id",
        "issue_date",
        "diagnosis_codes[]",
        "medications[].strength",
        "medications[].dose",
        "medications[].frequency",
        "medications[].days",
    },
    "receipt": {"date", "items[].quantity", "items[].price", "subtotal", "tax", "total"},
}

# Unit spellings folded to one form; keys are casefolded.
UNIT_ALIASES = {
    "mg": "mg",
    "g": "g",
    "kg": "kg",
    "mcg": "μg",
    "μg": "μg",
    "µg": "μg",
    "ug": "μg",
    "ml": "mL",
    "l": "L",
    "iu": "IU",
    "u": "IU",
    "%": "%",
    "meq": "mEq",
    "mmol": "mmol",
    "정": "tab",
    "tab": "tab",
    "tabs": "tab",
    "tablet": "tab",
    "tablets": "tab",
    "片": "tab",
    "캡슐": "cap",
    "cap": "cap",
    "caps": "cap",
    "capsule": "cap",
    "粒": "cap",
    "포": "pack",
    "包": "pack",
    "袋": "pack",
    "滴": "drop",
    "drop": "drop",
    "drops": "drop",
    "支": "vial",
    "puff": "puff",
    "puffs": "puff",
}
# A number followed by a unit word: "100 mg", "0.25μg", "5 mL", "1000 IU", "1정".
NUMBER_UNIT = re.compile(r"(\d+(?:[.,]\d+)?)\s*([A-Za-zµμ%]+|[정포片粒包袋滴支]|캡슐)")


def as_text(value: Any) -> str | None:
    """A leaf as text: numbers without a trailing .0, containers as compact JSON, null as None."""
    if value is None or value is MISSING:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def norm_text(text: str) -> str:
    """The case-insensitive normalisation (text exact match, near-miss tags)."""
    return normalize(text, casefold=True)


def norm_unit_text(text: str) -> str:
    return re.sub(r"(?<=\d) (?=\D)", "", norm_text(text))


def digits_of(value: Any) -> str:
    return "".join(ch for ch in normalize(as_text(value) or "", casefold=False) if ch.isdigit() and ch.isascii())


def unit_of(value: Any) -> str | None:
    """The folded unit of 'number unit' in the value, or None."""
    text = as_text(value)
    if not text:
        return None
    m = NUMBER_UNIT.search(norm_text(text))  # NFKC also maps the micro sign µ to Greek μ
    if m is None:
        return None
    return UNIT_ALIASES.get(m.group(2), m.group(2))


def kind_of(schema_name: str, pattern: str) -> str:
    if pattern in ID_FIELDS.get(schema_name, set()):
        return "id"
    if pattern in UNIT_FIELDS.get(schema_name, set()):
        return "unit"
    return "text"


def exact_match(pred: Any, target: Any, kind: str) -> bool:
    pred = None if pred is MISSING else pred
    if isinstance(target, list) and not target:
        return pred is None or pred == []
    if target is None or pred is None:
        return target is None and pred is None
    if kind == "id":
        if isinstance(pred, str) and isinstance(target, str):
            return normalize(pred, casefold=False) == normalize(target, casefold=False)
        return pred == target and type(pred) is type(target)
    both_numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (pred, target))
    if both_numbers:
        return float(pred) == float(target)
    p, t = as_text(pred), as_text(target)
    assert p is not None and t is not None
    if kind == "unit":
        return norm_unit_text(p) == norm_unit_text(t)
    return norm_text(p) == norm_text(t)


def anls(prediction: str, answers: Sequence[str], tau: float = ANLS_TAU) -> float:
    """ANLS of one prediction against its reference answers, as the official DocVQA evaluation computes it.

    Follows `evaluate_method` of the DocVQA / InfographicVQA evaluation script of the Robust Reading
    Competition (rrc.cvc.uab.es/?ch=17, DocVQA; also on docvqa.org), which lmms-eval's `anls`
    (lmms_eval/api/metrics.py) reproduces line for line. Per answer: both strings stripped, lowercased
    and whitespace-collapsed; NL = Levenshtein(answer, prediction) / max(len(answer.upper()),
    len(prediction.upper())), 0 when that length is 0; the score is 1 - min NL over the answers,
    set to 0 when it is below tau.
    How it differs from the paper's sentence (Biten et al. 2019, "s = 1 - NL if NL < tau, else 0"):
    a similarity of exactly tau is kept (NL = 0.5 scores 0.5, not 0), and the denominator is the length
    of the upper-cased strings (`ǰ` upper-cases to two characters).
    Ours applies the project's normalisation (`normalize`, casefolded) to both sides first and runs those
    steps on the result: equal to the official script fed normalised strings. Fed raw strings, the script
    also counts repeated or surrounding whitespace and NFD jamo in the denominator; here they are folded.
    """
    if isinstance(answers, str):
        raise TypeError(f"anls takes a list of reference answers, got the string {answers!r}: pass [{answers!r}]")
    if not answers:
        raise ValueError("anls needs at least one reference answer, got an empty list")
    det = normalize(prediction, casefold=True)
    det_pre = " ".join(det.strip().lower().split())
    values = []
    for answer in answers:
        gt = normalize(answer, casefold=True)
        gt_pre = " ".join(gt.strip().lower().split())
        length = max(len(gt.upper()), len(det.upper()))
        values.append(Levenshtein.distance(gt_pre, det_pre) / length if length else 0.0)
    score = 1.0 - min(values)
    return 0.0 if score < tau else score


def cer(predictions: Sequence[str], targets: Sequence[str]) -> float | None:
    """jiwer.cer (default transformations) of the normalised strings, as one corpus; None without target text."""
    refs = [normalize(t, casefold=False) for t in targets]
    if not any(refs):
        return None
    return float(jiwer.cer(refs, [normalize(p, casefold=False) for p in predictions]))


def wer(predictions: Sequence[str], targets: Sequence[str]) -> float | None:
    """jiwer.wer (default transformations) of the normalised strings, as one corpus; None without target text."""
    refs = [normalize(t, casefold=False) for t in targets]
    if not any(refs):
        return None
    return float(jiwer.wer(refs, [normalize(p, casefold=False) for p in predictions]))


def raw_cer(predictions: Sequence[str], targets: Sequence[str]) -> float | None:
    """CER of the strings as they are: no normalisation, no stripping; None without target characters."""
    if not any(targets):
        return None
    return float(
        jiwer.cer(list(targets), list(predictions), reference_transform=RAW_CHARS, hypothesis_transform=RAW_CHARS)
    )


@dataclass
class FieldPair:
    path: str  # medications[0].strength; extra predicted items: medications[+2].strength
    pattern: str  # medications[].strength
    pred: Any  # MISSING when the prediction lacks the key
    target: Any  # None for extra predicted items
    extra: bool = False  # from a predicted list item that no target item pairs with


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _item_label(item: Any) -> str:
    if isinstance(item, dict):
        return as_text(item.get("name")) or ""
    return as_text(item) or ""


def align_lists(pred: list, target: list) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Hungarian pairing on name similarity: (pairs (pred_i, target_j), unpaired pred, unpaired target)."""
    if not pred or not target:
        return [], list(range(len(pred))), list(range(len(target)))
    sim = np.zeros((len(pred), len(target)))
    for i, p in enumerate(pred):
        for j, t in enumerate(target):
            sim[i, j] = fuzz.ratio(norm_text(_item_label(p)), norm_text(_item_label(t))) + (0.5 if i == j else 0.0)
    rows, cols = linear_sum_assignment(sim, maximize=True)
    pairs = sorted(zip(rows.tolist(), cols.tolist()), key=lambda pc: pc[1])
    return pairs, sorted(set(range(len(pred))) - set(rows.tolist())), sorted(set(range(len(target))) - set(cols.tolist()))


def _extra_pairs(pred: Any, path: str, pattern: str, out: list[FieldPair]) -> None:
    if isinstance(pred, dict):
        for key, value in pred.items():
            _extra_pairs(value, _join(path, key), _join(pattern, key), out)
    elif isinstance(pred, list):
        for i, value in enumerate(pred):
            _extra_pairs(value, f"{path}[+{i}]", f"{pattern}[]", out)
    else:
        out.append(FieldPair(path, pattern, pred, None, extra=True))


def pair_fields(pred: Any, target: Any, path: str = "", pattern: str = "") -> list[FieldPair]:
    """Every target leaf with its predicted counterpart (lists aligned), plus leaves of extra predicted items."""
    out: list[FieldPair] = []
    _pair(pred, target, path, pattern, out)
    return out


def _pair(pred: Any, target: Any, path: str, pattern: str, out: list[FieldPair]) -> None:
    if isinstance(target, dict):
        pred_d = pred if isinstance(pred, dict) else {}
        for key, value in target.items():
            _pair(pred_d.get(key, MISSING), value, _join(path, key), _join(pattern, key), out)
        return
    if isinstance(target, list) and target:
        pred_l = pred if isinstance(pred, list) else []
        pairs, extra_pred, lone_target = align_lists(pred_l, target)
        for i, j in pairs:
            _pair(pred_l[i], target[j], f"{path}[{j}]", f"{pattern}[]", out)
        for j in lone_target:
            _pair(MISSING, target[j], f"{path}[{j}]", f"{pattern}[]", out)
        for i in extra_pred:
            _extra_pairs(pred_l[i], f"{path}[+{i}]", f"{pattern}[]", out)
        return
    if isinstance(target, list):  # an empty target list: one slot, and predicted items are extra too
        out.append(FieldPair(path, pattern, pred, target))
        for i, item in enumerate(pred if isinstance(pred, list) else []):
            _extra_pairs(item, f"{path}[+{i}]", f"{pattern}[]", out)
        return
    out.append(FieldPair(path, pattern, pred, target))


def is_null(value: Any) -> bool:
    return value is None or value is MISSING or value == []


@dataclass
class FieldScores:
    field_scores: dict[str, float]  # slot path -> exact match 0/1
    field_em: float | None
    field_f1: float
    anls: float | None
    cer: float | None
    wer: float | None
    raw_cer: float | None
    digit_acc: float | None
    unit_acc: float | None


def score_fields(pairs: list[FieldPair], schema_name: str) -> FieldScores:
    field_scores: dict[str, float] = {}
    tp = n_pred = n_target = 0
    anls_scores: list[float] = []
    preds: list[str] = []  # values of the leaves with a non-null target, for CER and WER
    targets: list[str] = []
    digit_scores: list[float] = []
    unit_scores: list[float] = []
    for fp in pairs:
        if fp.extra and is_null(fp.pred):
            continue  # an all-null extra item claims nothing
        kind = kind_of(schema_name, fp.pattern)
        match = (not fp.extra) and exact_match(fp.pred, fp.target, kind)
        field_scores[fp.path] = float(match)
        pred_set, target_set = not is_null(fp.pred), not is_null(fp.target)
        n_pred += pred_set
        n_target += target_set
        tp += pred_set and target_set and match
        if fp.extra or not target_set:
            continue
        t = as_text(fp.target) or ""
        p = as_text(fp.pred) or ""
        anls_scores.append(anls(p, [t]))
        preds.append(p)
        targets.append(t)
        if fp.pattern in DIGIT_FIELDS.get(schema_name, set()):
            dt = digits_of(fp.target)
            if dt:
                digit_scores.append(max(0.0, 1.0 - Levenshtein.distance(digits_of(fp.pred), dt) / len(dt)))
        if kind == "unit":
            ut = unit_of(fp.target)
            if ut is not None:
                unit_scores.append(float(unit_of(fp.pred) == ut))
    n = len(field_scores)
    return FieldScores(
        field_scores=field_scores,
        field_em=sum(field_scores.values()) / n if n else None,
        field_f1=(2 * tp / (n_pred + n_target)) if (n_pred + n_target) else 1.0,
        anls=sum(anls_scores) / len(anls_scores) if anls_scores else None,
        cer=cer(preds, targets),
        wer=wer(preds, targets),
        raw_cer=raw_cer(preds, targets),
        digit_acc=sum(digit_scores) / len(digit_scores) if digit_scores else None,
        unit_acc=sum(unit_scores) / len(unit_scores) if unit_scores else None,
    )


# --- Donut's tree edit distance accuracy ----------------------------------------------------------
# Follows donut/util.py JSONParseEvaluator (normalize_dict, construct_tree_from_dict, cal_acc); null
# values are dropped like empty ones (Donut would print them as the string "None").


def _donut_normalize(data: Any) -> Any:
    if isinstance(data, dict):
        out = {}
        for key in sorted(data, key=lambda k: (len(k), k)):
            value = _donut_normalize(data[key])
            if value:
                out[key] = value if isinstance(value, list) else [value]
        return out
    if isinstance(data, list):
        if data and all(isinstance(item, dict) for item in data):
            return [d for d in (_donut_normalize(item) for item in data) if d]
        return [as_text(item).strip() for item in data if isinstance(item, (str, int, float)) and as_text(item).strip()]
    text = as_text(data)
    return [text.strip()] if text is not None and text.strip() else []


def _donut_tree(data: Any, label: str = "<root>") -> zss.Node:
    node = zss.Node(label)
    if isinstance(data, dict):
        for key, value in data.items():
            node.addkid(_donut_tree(value, key))
    elif isinstance(data, list):
        if all(isinstance(item, dict) for item in data):
            for item in data:
                node.addkid(_donut_tree(item, "<subtree>"))
        else:
            for item in data:
                node.addkid(zss.Node(f"<leaf>{item}"))
    return node


def _update_cost(a: zss.Node, b: zss.Node) -> int:
    la, lb = a.label, b.label
    leaf_a, leaf_b = la.startswith("<leaf>"), lb.startswith("<leaf>")
    if leaf_a and leaf_b:
        return Levenshtein.distance(la[6:], lb[6:])
    if leaf_b:
        return 1 + len(lb[6:])
    if leaf_a:
        return 1 + len(la[6:])
    return int(la != lb)


def _insert_remove_cost(node: zss.Node) -> int:
    return len(node.label[6:]) if node.label.startswith("<leaf>") else 1


def _ted(a: zss.Node, b: zss.Node) -> float:
    return zss.distance(
        a,
        b,
        get_children=zss.Node.get_children,
        insert_cost=_insert_remove_cost,
        remove_cost=_insert_remove_cost,
        update_cost=_update_cost,
        return_operations=False,
    )


def ted_accuracy(pred: Any, target: Any) -> float:
    gt = _donut_normalize(target)
    pr = _donut_normalize(pred if isinstance(pred, dict) else {})
    gt_tree, pr_tree = _donut_tree(gt), _donut_tree(pr)
    denom = _ted(zss.Node("<root>"), gt_tree)
    if denom == 0:
        return 1.0 if not pr else 0.0
    return max(0.0, 1.0 - _ted(pr_tree, gt_tree) / denom)
