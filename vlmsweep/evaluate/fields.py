"""Content fidelity of one parsed answer against its target: list alignment, field pairs and their scores (pure).

Definitions (copied to the README):
- Field paths: `patient_name`, `medications[0].strength`, `diagnosis_codes[1]`; the pattern drops the
  index (`medications[].strength`) and decides the field's kind (id, unit, digit).
- List alignment: items of a list (medications, items, diagnosis codes) are paired with the target's
  by the Hungarian method (`scipy.optimize.linear_sum_assignment`) maximising rapidfuzz `ratio` of the
  item's `name` (the whole item for lists of strings), ties broken towards the same position. A
  predicted item left over is an *extra* item (path `medications[+2].name`, 2 = its predicted index);
  a target item left over is paired with nothing (all its fields missing). An empty target list is
  one slot that matches an empty or null predicted list; predicted items there are extra items too.
  A key the prediction lacks scores like null (the contract metrics report the missing key).
- Normalisation for exact match: Unicode NFKC, casefold, whitespace runs collapsed, trimmed; numbers
  compare by value (7 == 7.0 == "7"); for unit fields the space between number and unit is dropped
  ("100mg" == "100 MG"). Ids (`patient_id`, `diagnosis_codes[]`) get **no** normalisation: the value
  must equal the target exactly, type included.
- field EM: share of exact matches over the field slots, which are every target leaf plus every
  non-null leaf of an extra predicted item (always wrong). A null target leaf matches a null prediction.
- ANLS (DocVQA, tau = 0.5): per leaf with a non-null target, NL = Levenshtein / max(len) on lowercased,
  whitespace-collapsed strings; score 1 - NL if NL < 0.5 else 0. A missing prediction is "".
- CER: sum of Levenshtein distances / sum of target lengths over the same leaves (may exceed 1).
- digit accuracy: for digit fields whose target has digits, max(0, 1 - Lev(pred digits, target digits)
  / len(target digits)), averaged. unit accuracy: for unit fields whose target has a unit, 1 when the
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
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np
import zss
from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein
from scipy.optimize import linear_sum_assignment

ANLS_TAU = 0.5

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
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def norm_unit_text(text: str) -> str:
    return re.sub(r"(?<=\d) (?=\D)", "", norm_text(text))


def anls_norm(text: str) -> str:
    # DocVQA's evaluation lowercases and collapses whitespace before the distance.
    return " ".join(text.lower().split())


def digits_of(value: Any) -> str:
    return "".join(ch for ch in (as_text(value) or "") if ch.isdigit() and ch.isascii())


def unit_of(value: Any) -> str | None:
    """The folded unit of 'number unit' in the value, or None."""
    text = as_text(value)
    if not text:
        return None
    m = NUMBER_UNIT.search(unicodedata.normalize("NFKC", text).replace("µ", "μ"))
    if m is None:
        return None
    return UNIT_ALIASES.get(m.group(2).casefold(), m.group(2).casefold())


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
        return pred == target and type(pred) is type(target)
    both_numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (pred, target))
    if both_numbers:
        return float(pred) == float(target)
    p, t = as_text(pred), as_text(target)
    assert p is not None and t is not None
    if kind == "unit":
        return norm_unit_text(p) == norm_unit_text(t)
    return norm_text(p) == norm_text(t)


def anls(pred: str, target: str, tau: float = ANLS_TAU) -> float:
    p, t = anls_norm(pred), anls_norm(target)
    if not p and not t:
        return 1.0
    nl = Levenshtein.distance(p, t) / max(len(p), len(t))
    return 1.0 - nl if nl < tau else 0.0


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
    digit_acc: float | None
    unit_acc: float | None


def score_fields(pairs: list[FieldPair], schema_name: str) -> FieldScores:
    field_scores: dict[str, float] = {}
    tp = n_pred = n_target = 0
    anls_scores: list[float] = []
    dist = length = 0
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
        anls_scores.append(anls(p, t))
        dist += Levenshtein.distance(p, t)
        length += len(t)
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
        cer=dist / length if length else None,
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
