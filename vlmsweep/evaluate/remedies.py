"""What fixes each failure tag: more targeted data (the generator focus that makes it) or a config change.

Shared by the loop's policy (which tags to mine and synthesise for) and its report (what to change).
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from vlmsweep.config import Config
from vlmsweep.data import DOMAINS
from vlmsweep.evaluate.metrics import TAGS

# Tags that more (or more targeted) training data can fix, and the generator focus that makes it.
FOCUS_OF_TAG = {
    "digit_flip": "digits",  # confusable 5/8, 6/0, 1/7 in ids, strengths, doses
    "unit_confusion": "units",  # μg, IU, mL, g beside mg
    "near_miss_spelling": "near_miss",  # look-alike drug names on one form
    "domain_leakage": "hard_negative",  # receipt images asked as prescriptions -> all-null answer
    "missing_value": "sparse",  # many blank fields: read what is there, null what is not
    "hallucinated_value": "sparse",
}
# Prescription-only focuses: the receipt generator draws no units, drug names or hard negatives.
PRESCRIPTION_DOMAINS = ("prescription_ko", "prescription_zh")
DOMAINS_OF_FOCUS = {
    "digits": tuple(DOMAINS),
    "sparse": tuple(DOMAINS),
    "units": PRESCRIPTION_DOMAINS,
    "near_miss": PRESCRIPTION_DOMAINS,
    "hard_negative": PRESCRIPTION_DOMAINS,
}
UNFIXABLE_TAGS = tuple(t for t in TAGS if t not in FOCUS_OF_TAG)
# The tags a misreading leaves (a value printed, seen and read wrong), as against blanks, inventions and leakage.
MISREADING_TAGS = ("digit_flip", "near_miss_spelling", "unit_confusion")


def misreading_share(hard_set_summaries: Sequence[dict]) -> float | None:
    """Share of the hard sets' mined records (summary["mined"]: tag -> count) mined for a misreading tag."""
    mined: Counter = Counter()
    for summary in hard_set_summaries:
        mined.update(summary["mined"])
    total = sum(mined.values())
    return sum(mined.get(t, 0) for t in MISREADING_TAGS) / total if total else None


def config_fixes(tag: str, cfg: Config) -> str:
    """The config change that addresses a failure tag, given what the run already uses."""
    constrained, assistant_only = cfg.decoding.constrained, cfg.loss.assistant_only
    cut = "eval.max_new_tokens higher: the constrained answer was cut before its closing brace"
    match tag:
        case "parse_fail" | "wrong_keys" | "type_mismatch":
            return cut if constrained else "decoding=json_schema (the grammar forces one schema-valid object)"
        case "run_on":
            fixes = [cut if constrained else "decoding=json_schema (generation ends at the object's closing brace)"]
            if not assistant_only:
                fixes.append("loss=assistant_only (so <|im_end|> after the answer is learned)")
            return "; ".join(fixes)
        case "repetition_loop":
            return (cut if constrained else "decoding=json_schema") + "; more training (train.max_steps)"
        case "instruction_echo":
            return "decoding=json_schema" if assistant_only else "loss=assistant_only (loss=full trains on the prompt)"
        case "domain_leakage":
            if cfg.domain_tag.in_prompt:
                return "already domain_tag=prompt"
            return "domain_tag=prompt (tag every prompt with its domain)"
        case "unreadable_input":
            return "fix or replace the image (samples.jsonl gives each reason); `python -m vlmsweep.data check MANIFEST` lists them"
    return "–"
