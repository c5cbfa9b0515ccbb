"""Median, range and a bootstrap interval for the ratio of two medians: how the benchmarks report repeated timings."""

from __future__ import annotations

import statistics
from typing import Sequence

import numpy as np
from scipy import stats


def describe(values: Sequence[float]) -> str:
    """"median (min–max, n=N)"."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f}, n={len(values)})"


def ratio_of_medians(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """median(a) / median(b) with a percentile-bootstrap interval, resampling each side's repetitions
    independently (scipy.stats.bootstrap, 10,000 resamples, fixed seed)."""
    ratio = statistics.median(a) / statistics.median(b)
    if len(a) < 2 or len(b) < 2:
        return ratio, float("nan"), float("nan")
    res = stats.bootstrap((np.asarray(a, float), np.asarray(b, float)),
                          lambda x, y, axis=-1: np.median(x, axis=axis) / np.median(y, axis=axis),
                          n_resamples=10_000, confidence_level=confidence, method="percentile", paired=False,
                          vectorized=True, random_state=np.random.default_rng(0))
    return ratio, float(res.confidence_interval.low), float(res.confidence_interval.high)
