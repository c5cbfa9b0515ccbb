"""The A/A calibration: one config under K seeds, split into arms many ways; false-positive rate and MDE of the report's intervals.

`python -m vlmsweep -m 'seed=range(8)'` trains the same config eight times; no split of those runs into arms can
carry a real effect, so every interval the report would print that excludes 0 is a false positive. Two designs
are split: two arms of K/2 seeds (the report's comparison of one two-level axis) and, with K >= 8, a 2x2 of K/4
seeds per cell (its main effects and interaction). Runs are paired across cells by position (an arbitrary pairing:
the A/A has no real one), with the report's own estimator (vlmsweep.report.effects.contrast_estimate).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vlmsweep.report.effects import (
    COMPARISON_WEIGHTS,
    FACTORIAL_WEIGHTS,
    DesignError,
    check_same_test_set,
    contrast_estimate,
    interval,
    minimum_detectable,
    score_tensor,
)
from vlmsweep.report.runs import HEADLINE_METRICS, SEED_AXIS, RunResult, load_sweep, varying_axes

MIN_SEEDS = 4  # two arms of two seeds: the smallest split whose intervals cover seed noise
DEFAULT_SPLITS = 200
NOMINAL = 0.05


@dataclass
class MetricCalibration:
    metric: str
    design: str  # "2 arms x K/2 seeds" | "2x2 x K/4 seeds"
    tests: int  # intervals computed (splits x contrasts)
    false_positives: int  # of them, intervals that exclude 0
    median_half_width: float
    median_mde: float  # minimum detectable effect (80% power, 5% two-sided) at this design

    @property
    def fpr(self) -> float:
        return self.false_positives / self.tests if self.tests else float("nan")


@dataclass
class Calibration:
    runs: int
    seeds: list[str]
    n_samples: int
    splits: int
    rows: list[MetricCalibration]

    def fpr(self, design: str | None = None) -> float:
        """Over the metrics that vary at all: a metric constant over every run (no interval has width) can give no
        false positive and would only dilute the rate."""
        rows = [r for r in self.rows if (design is None or r.design == design) and r.median_half_width > 0]
        tests = sum(r.tests for r in rows)
        return sum(r.false_positives for r in rows) / tests if tests else float("nan")

    def as_dict(self) -> dict:
        designs = sorted({r.design for r in self.rows})
        return {
            "runs": self.runs, "seeds": self.seeds, "n_samples": self.n_samples, "splits": self.splits,
            "nominal": NOMINAL, "fpr": self.fpr(), "fpr_by_design": {d: self.fpr(d) for d in designs},
            "metrics": [asdict(r) | {"fpr": r.fpr} for r in self.rows],
        }  # fmt: skip


def aa_runs(sweep_dir: Path | str) -> list[RunResult]:
    """The ok runs of an A/A folder, checked: one config (only the seed varies), at least MIN_SEEDS seeds, one test set."""
    runs, _ = load_sweep(Path(sweep_dir))
    ok = [r for r in runs if r.ok]
    differing = [a for a in varying_axes(ok) if a != SEED_AXIS]
    if differing:
        axis = differing[0]
        values = ", ".join(f"run {r.name}: {axis}={r.axes.get(axis, '(unset)')}" for r in ok[:6])
        raise DesignError(f"{sweep_dir}: an A/A needs one config under several seeds, but the runs differ in "
                          f"{', '.join(differing)} ({values}); rerun as python -m vlmsweep -m 'seed=range(8)' ...")
    seeds = sorted({r.seed or r.name for r in ok})
    if len(seeds) < MIN_SEEDS or len(ok) < MIN_SEEDS:
        named = ", ".join(f"run {r.name} (seed {r.seed})" for r in ok) or "none"
        raise DesignError(f"{sweep_dir}: an A/A needs at least {MIN_SEEDS} seeds of one config, found {len(seeds)} "
                          f"among its ok runs ({named}); rerun as python -m vlmsweep -m 'seed=range(8)' ...")
    check_same_test_set([[r] for r in ok], [f"seed={r.seed}" for r in ok])
    return ok


def _splits(k: int, cells: int, count: int, rng: np.random.Generator) -> list[list[list[int]]]:
    """Up to `count` distinct assignments of k runs to `cells` equal cells (k // cells each; the rest unused)."""
    per = k // cells
    if cells == 2 and per * 2 == k:  # few enough to enumerate: every split once (a split and its mirror are one)
        all_splits = [[list(a), [i for i in range(k) if i not in a]] for a in itertools.combinations(range(k), per) if 0 in a]
        if len(all_splits) <= count:
            return all_splits
    seen, out = set(), []
    for _ in range(count * 20):
        order = rng.permutation(k)
        split = [sorted(order[c * per:(c + 1) * per].tolist()) for c in range(cells)]
        key = tuple(tuple(s) for s in split)
        if key not in seen:
            seen.add(key)
            out.append(split)
        if len(out) == count:
            break
    return out


def calibrate(runs: list[RunResult], metrics: list[str], splits: int = DEFAULT_SPLITS, rng_seed: int = 0) -> Calibration:
    rng = np.random.default_rng(rng_seed)
    k = len(runs)
    designs = [(f"2 arms x {k // 2} seeds", 2, COMPARISON_WEIGHTS[None, :])]
    if k >= 8:
        designs.append((f"2x2 x {k // 4} seeds", 4, FACTORIAL_WEIGHTS))
    rows: list[MetricCalibration] = []
    n_samples = 0
    for name, cells, weights in designs:
        assignments = _splits(k, cells, splits, rng)
        for metric in metrics:
            hits, widths, mdes = [], [], []
            for assignment in assignments:
                x, ids = score_tensor([[runs[i] for i in cell] for cell in assignment], metric, by="slot")
                if np.isnan(x).all(axis=(1, 2)).any():
                    continue
                n_samples = max(n_samples, len(ids))
                for w in weights:
                    est = contrast_estimate(x, w)
                    if est.noise == "none":
                        continue
                    low, high = interval(est)
                    hits.append(not (low <= 0.0 <= high))
                    widths.append((high - low) / 2)
                    mdes.append(minimum_detectable(est.se, est.df))
            if hits:
                rows.append(MetricCalibration(metric, name, len(hits), int(sum(hits)), float(np.median(widths)),
                                              float(np.nanmedian(mdes))))
    return Calibration(k, [str(r.seed) for r in runs], n_samples, splits, rows)


def default_metrics(runs: list[RunResult]) -> list[str]:
    """The report's headline metrics and digit accuracy, where the runs have them. Wall-clock costs are left
    out: machine load drifts over a multirun, so they are not exchangeable between seeds."""
    present = {k for r in runs for k in r.metrics}
    return [m for m in (*HEADLINE_METRICS, "content.digit_acc") if m in present]


def print_calibration(cal: Calibration) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 140))
    table = Table(title=f"A/A: {cal.runs} runs of one config (seeds {', '.join(cal.seeds)}), {cal.n_samples} test "
                        f"samples, up to {cal.splits} splits per design")
    for col in ("metric", "design", "intervals", "excluding 0", "false-positive rate", "median half-width", "MDE"):
        table.add_column(col)
    for r in cal.rows:
        table.add_row(r.metric, r.design, str(r.tests), str(r.false_positives), f"{r.fpr:.3f}",
                      f"{r.median_half_width:.3g}", f"{r.median_mde:.3g}")
    console.print(table)
    for design in sorted({r.design for r in cal.rows}):
        console.print(f"{design}: false-positive rate {cal.fpr(design):.3f} at nominal {NOMINAL:.2f}", markup=False)
    constant = sorted({r.metric for r in cal.rows if r.median_half_width == 0})
    console.print(f"overall: false-positive rate {cal.fpr():.3f} at nominal {NOMINAL:.2f} (splits of the same runs "
                  "are not independent: the rate's own precision is set by the number of seeds)"
                  + (f"; left out of the rates as constant over the runs: {', '.join(constant)}" if constant else ""),
                  markup=False)


if __name__ == "__main__":  # `python -m vlmsweep.report.calibrate`
    from vlmsweep.cli.calibrate import main

    raise SystemExit(main())
