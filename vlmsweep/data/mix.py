"""Domain mixing: normalized weights from a DataMixConfig, and exact per-split domain assignment."""

from __future__ import annotations

import hashlib
import random

from ..config import DataMixConfig
from .record import DOMAINS

MEDICAL = ("prescription_ko", "prescription_zh")
# Used when a DataMixConfig names a preset but carries no weights (vlmsweep/conf/data_mix/*.yaml normally sets them).
PRESET_WEIGHTS = {
    "rx_receipt_1_1_1": {"prescription_ko": 1.0, "prescription_zh": 1.0, "receipt": 1.0},
    "medical_only": {"prescription_ko": 1.0, "prescription_zh": 1.0, "receipt": 0.0},
    "medical_heavy": {"prescription_ko": 2.0, "prescription_zh": 2.0, "receipt": 1.0},
}


def sample_seed(base_seed: int, stream: str, index: int) -> int:
    """A 63-bit generator seed for sample `index` of a named stream; streams never share seeds in practice
    (sha256), and tests check the four split streams for overlap."""
    h = hashlib.sha256(f"vlmsweep.data/{base_seed}/{stream}/{index}".encode()).digest()
    return int.from_bytes(h[:8], "big") >> 1


def domain_weights(mix: DataMixConfig) -> dict[str, float]:
    """Share of each generator domain, summing to 1; with receipt_ratio set, receipts get exactly that
    share and the prescriptions split the rest by their own weights (equally if those are all zero)."""
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
        med = sum(w[d] for d in MEDICAL)
        split = {d: (w[d] / med if med > 0 else 1 / len(MEDICAL)) for d in MEDICAL}
        return {**{d: (1 - r) * split[d] for d in MEDICAL}, "receipt": r}
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
    prescription, split between Korean and Chinese by the medical weights.
    """
    hn = float(mix.hard_negatives)
    if not 0.0 <= hn < 1.0:
        raise ValueError(f"data_mix.hard_negatives={hn}: expected a value in [0, 1)")
    weights = domain_weights(mix)
    n_hn = round(n * hn)
    pairs: list[tuple[str, str]] = []
    for d, k in _quota(n - n_hn, weights).items():
        pairs += [(d, d)] * k
    med = sum(weights[d] for d in MEDICAL)
    hn_weights = {d: (weights[d] / med if med > 0 else 0.5) for d in MEDICAL}
    for d, k in _quota(n_hn, hn_weights).items():
        pairs += [(d, "receipt")] * k
    random.Random(sample_seed(base_seed, stream, -1)).shuffle(pairs)
    return pairs
