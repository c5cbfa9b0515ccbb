"""Positive controls: a known, seeded change to the model's answers before scoring (eval.perturb), so a report can be
shown to find an effect of a size measured on the same outputs. digit_flip moves content (on a model that reads:
flipping a guessed digit leaves a guess); blank moves the contract, on any model.

Pure (no torch). Written by hand: flipping digits inside a JSON text without breaking its syntax is no library's job.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

DIGITS = "0123456789"


@dataclass(frozen=True)
class Flipped:
    text: str
    flipped: int  # digits changed
    digits: int  # digits in the text


def flip_digits(text: str, share: float, rng: np.random.Generator) -> Flipped:
    """Each digit of `text` is replaced, with probability `share`, by a different digit drawn uniformly. Digits
    inside JSON strings change freely; a digit that begins a multi-digit number outside a string never becomes 0
    (a leading zero is invalid JSON), so the perturbation moves content metrics, not the contract."""
    out = list(text)
    in_string = escaped = False
    flipped = digits = 0
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
                continue
            if ch == "\\":
                escaped = True
                continue
            if ch == '"':
                in_string = False
                continue
        elif ch == '"':
            in_string = True
            continue
        if ch not in DIGITS:
            continue
        digits += 1
        if rng.random() >= share:
            continue
        choices = [d for d in DIGITS if d != ch]
        if not in_string:
            prev = text[i - 1] if i else ""
            in_exponent = prev in "eE+" or (prev == "-" and i >= 2 and text[i - 2] in "eE")
            leading = prev not in DIGITS and prev != "." and not in_exponent
            if leading and i + 1 < len(text) and text[i + 1] in DIGITS:
                choices = [d for d in choices if d != "0"]
        out[i] = choices[int(rng.integers(len(choices)))]
        flipped += 1
    return Flipped("".join(out), flipped, digits)


def sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    """One stream per (run seed, sample): a sample's flips do not depend on batch order or on the other samples."""
    return np.random.default_rng([int(seed), zlib.crc32(str(sample_id).encode("utf-8"))])


def blanked(ids: list[str], share: float, seed: int) -> set[str]:
    """Exactly round(share * n) of the samples, drawn by the run seed: their answers become empty (a contract failure
    of known size: the injected change is then the same for every seed wherever the clean outputs are)."""
    k = int(round(share * len(ids)))
    order = np.random.default_rng([int(seed), 1]).permutation(len(ids))
    return {ids[i] for i in order[:k]}


def perturb_outputs(raws: list[str], ids: list[str], digit_flip: float, blank: float, seed: int
                    ) -> tuple[list[str], list[Flipped], set[str]]:
    results = [flip_digits(raw, digit_flip, sample_rng(seed, sid)) for raw, sid in zip(raws, ids)]
    empty = blanked(ids, blank, seed)
    return ["" if sid in empty else r.text for r, sid in zip(results, ids)], results, empty


def summary(samples: list[dict], digit_flip: float, blank: float, seed: int) -> dict:
    """run_info.json's `perturb`: the setting, the digits flipped, and the injected size of every metric, i.e.
    the metrics of the perturbed outputs minus those of the same outputs clean (by_domain copies left out)."""
    from vlmsweep.evaluate.metrics import aggregate

    perturbed = aggregate(samples)
    clean = aggregate([{**s, "scores": s["clean"]["scores"], "tags": s["clean"]["tags"]} for s in samples])
    return {
        "digit_flip": digit_flip,
        "blank": blank,
        "seed": seed,
        "answers_blanked": sum(bool(s["perturb"].get("blanked")) for s in samples),
        "digits_flipped": sum(s["perturb"]["digits_flipped"] for s in samples),
        "digits": sum(s["perturb"]["digits"] for s in samples),
        "injected": {k: perturbed[k] - clean[k] for k in perturbed
                     if k in clean and not k.startswith(("by_domain.", "cost."))},
    }
