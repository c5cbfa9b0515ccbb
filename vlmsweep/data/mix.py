"""Domain mixing: normalized weights from a DataMixConfig, and exact per-split domain assignment."""

from __future__ import annotations

import hashlib
import random

from ..config import DataMixConfig
from .record import DOMAINS, RECEIPT_DOMAINS

MEDICAL = ("prescription_ko", "prescription_zh")
# Used when a DataMixConfig names a preset but carries no weights (conf/data_mix/*.yaml normally sets them).
# Receipts split evenly between English, Korean and Chinese: 3:3:1:1:1 is prescriptions ko : zh : receipts = 1:1:1.
PRESET_WEIGHTS = {
    "rx_receipt_1_1_1": {"prescription_ko": 3.0, "prescription_zh": 3.0, "receipt": 1.0, "receipt_ko": 1.0, "receipt_zh": 1.0},
    "medical_only": {"prescription_ko": 1.0, "prescription_zh": 1.0, "receipt": 0.0, "receipt_ko": 0.0, "receipt_zh": 0.0},
    "medical_heavy": {"prescription_ko": 6.0, "prescription_zh": 6.0, "receipt": 1.0, "receipt_ko": 1.0, "receipt_zh": 1.0},
}


def sample_seed(base_seed: int, stream: str, index: int) -> int:
    """A 63-bit generator seed for sample `index` of a named stream; streams never share seeds in practice
    (sha256), and tests check the four split streams for overlap."""
    h = hashlib.sha256(f"vlmsweep.data/{base_seed}/{stream}/{index}".encode()).digest()
    return int.from_bytes(h[:8], "big") >> 1


def _split(w: dict[str, float], group: tuple[str, ...]) -> dict[str, float]:
    """Shares within a group by its own weights; equal shares when they are all zero."""
    total = sum(w[d] for d in group)
    return {d: (w[d] / total if total > 0 else 1 / len(group)) for d in group}


def domain_weights(mix: DataMixConfig) -> dict[str, float]:
    """Share of each generator domain, summing to 1; with receipt_ratio set, the receipts together get
    exactly that share, split between their languages by their own weights (equally if those are all
    zero), and the prescriptions split the rest likewise."""
    raw = dict(mix.weights) if mix.weights else PRESET_WEIGHTS.get(mix.name)
    if raw is None:
        raise ValueError(f"data_mix {mix.name!r} has no weights: set data_mix.weights or use one of {sorted(PRESET_WEIGHTS)}")
    unknown = sorted(set(raw) - set(DOMAINS))
    if unknown:
        raise ValueError(f"data_mix.weights names unknown domain(s) {unknown}; the generators draw {list(DOMAINS)}")
    w = {d: float(raw.get(d, 0.0)) for d in DOMAINS}
    if any(v < 0 for v in w.values()):
        raise ValueError(f"data_mix.weights must be >= 0, got {w}")
    if mix.receipt_ratio is not None:
        r = float(mix.receipt_ratio)
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"data_mix.receipt_ratio={r}: expected a value in [0, 1]")
        med, rec = _split(w, MEDICAL), _split(w, RECEIPT_DOMAINS)
        return {d: (1 - r) * med[d] if d in MEDICAL else r * rec[d] for d in DOMAINS}
    total = sum(w.values())
    if total <= 0:
        raise ValueError(f"data_mix.weights sum to zero: {w}")
    return {d: v / total for d, v in w.items()}


def _quota(n: int, weights: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding: counts sum to n and each is within 1 of n * weight."""
    exact = {d: n * w for d, w in weights.items()}
    counts = {d: int(v) for d, v in exact.items()}
    order = sorted(weights, key=lambda d: (-(exact[d] - counts[d]), list(weights).index(d)))
    for d in order[: n - sum(counts.values())]:
        counts[d] += 1
    return counts


def assign_domains(n: int, mix: DataMixConfig, base_seed: int, stream: str) -> list[tuple[str, str]]:
    """(domain asked, image domain) for each of n samples, in a seeded order.

    Counts are exact quotas rather than independent draws so a small test split still holds every
    domain in proportion. Hard negatives (mix.hard_negatives of n) are receipt images asked as a
    prescription: asked Korean or Chinese by the medical weights, the receipt's language drawn by the
    receipt weights (equally when the mix has no receipts).
    """
    hn = float(mix.hard_negatives)
    if not 0.0 <= hn < 1.0:
        raise ValueError(f"data_mix.hard_negatives={hn}: expected a value in [0, 1)")
    weights = domain_weights(mix)
    n_hn = round(n * hn)
    pairs: list[tuple[str, str]] = []
    for d, k in _quota(n - n_hn, weights).items():
        pairs += [(d, d)] * k
    med, rec = _split(weights, MEDICAL), _split(weights, RECEIPT_DOMAINS)
    hn_weights = {(d, r): med[d] * rec[r] for d in MEDICAL for r in RECEIPT_DOMAINS}
    for pair, k in _quota(n_hn, hn_weights).items():
        pairs += [pair] * k
    random.Random(sample_seed(base_seed, stream, -1)).shuffle(pairs)
    return pairs
