"""Factor effects of a 2x2 with paired hierarchical bootstrap intervals, metric direction, Pareto fronts."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from vlmsweep.metric_names import higher_is_better as registry_direction
from vlmsweep.metric_names import is_wall_clock
from vlmsweep.report.runs import SEED_AXIS, RunResult, same_partition

N_RESAMPLES = 2000
RNG_SEED = 0


def higher_is_better(metric: str) -> bool:
    """The registry's direction (vlmsweep.metric_names); a name it does not know (loop.*, memory.*, an
    older run's metric) is guessed from its family so a report never fails on it."""
    try:
        return registry_direction(metric)
    except KeyError:
        base = metric.split(".", 2)[2] if metric.startswith("by_domain.") and metric.count(".") >= 2 else metric
        if base.startswith("contract."):
            return True
        return not any(token in base for token in ("cer", "rate.", "tags.", "cost."))


@dataclass
class Effect:
    name: str  # factor name, or "A x B" for the interaction
    metric: str
    estimate: float
    low: float
    high: float
    contrast: str  # "all vs llm", or the interaction's convention
    n_samples: int
    n_seeds: int

    @property
    def no_interval(self) -> bool:
        """One value per run and one seed (e.g. a cost): nothing to resample, so no interval."""
        return self.n_samples <= 1 and self.n_seeds <= 1

    @property
    def no_verdict(self) -> bool:
        """A wall-clock average measured once per run: the difference mostly reflects machine load."""
        return self.no_interval and is_wall_clock(self.metric)

    @property
    def interval_text(self) -> str:
        """What every table shows in its interval column: never a zero-width interval for one value per run."""
        if self.no_interval:
            return "no interval (one value per run)"
        return f"[{self.low:+.4g}, {self.high:+.4g}]"

    @property
    def within_noise(self) -> bool:
        return not self.no_interval and self.low <= 0.0 <= self.high


@dataclass
class Factorial:
    """A 2x2: factors a and b, each with (baseline, other) levels; runs[(i, j)] for a at level i, b at j."""

    a: str
    b: str
    levels_a: tuple[str, str]
    levels_b: tuple[str, str]
    runs: dict[tuple[int, int], list[RunResult]]
    averaged_over: list[str] = field(default_factory=list)  # other varying axes (not seed) in the cells


def find_factorials(runs: list[RunResult], axes: list[str]) -> list[Factorial]:
    """Every pair of two-level axes whose four cells all hold ok runs. The baseline level is the one of the
    lowest-numbered run (Hydra's order of `quant=nf4,bf16`), so contrasts read "other vs baseline"."""
    ok = [r for r in runs if r.ok]
    two_level = []
    for axis in axes:
        if axis == SEED_AXIS:
            continue
        levels: list[str] = []
        for run in ok:
            value = run.axes.get(axis)
            if value is not None and value not in levels:
                levels.append(value)
        if len(levels) == 2 and all(run.axes.get(axis) is not None for run in ok):
            two_level.append((axis, tuple(levels)))
    out = []
    for (a, la), (b, lb) in itertools.combinations(two_level, 2):
        if same_partition(ok, a, b):  # max_pixels and max_pixels.visual_tokens: one axis under two names
            continue
        cells: dict[tuple[int, int], list[RunResult]] = {(i, j): [] for i in (0, 1) for j in (0, 1)}
        for run in ok:
            cells[(la.index(run.axes[a]), lb.index(run.axes[b]))].append(run)
        if all(cells.values()):
            others = [
                x for x in axes
                if x not in (a, b, SEED_AXIS) and len({r.axes.get(x) for r in ok}) > 1
                and not same_partition(ok, x, a) and not same_partition(ok, x, b)
            ]  # fmt: skip
            out.append(Factorial(a, b, la, lb, cells, averaged_over=others))  # type: ignore[arg-type]
    return out


def _score_tensor(fact: Factorial, metric: str) -> tuple[np.ndarray, int, int]:
    """X[cell, seed, sample]: per-sample score of the run of that cell and seed, NaN where absent.
    A run without per-sample scores for the metric contributes its metrics.json value to every sample
    (no sample noise from it); a cell without some seed is NaN there and averaged over the seeds it has."""
    all_runs = [r for cell in fact.runs.values() for r in cell]
    ids = sorted({sid for r in all_runs for sid, s in r.scores.items() if metric in s})
    seeds: list[str] = []
    for r in all_runs:
        key = r.seed if r.seed is not None else r.name
        if key not in seeds:
            seeds.append(key)
    # runs sharing a cell but not a seed label (e.g. no seed recorded) become separate replicate slots
    slot_of: dict[int, int] = {}
    for cell in fact.runs.values():
        used: set[int] = set()
        for r in cell:
            key = r.seed if r.seed is not None else r.name
            slot = seeds.index(key)
            while slot in used:
                slot = len(seeds)
                seeds.append(f"{key}#")
            used.add(slot)
            slot_of[id(r)] = slot
    n = max(len(ids), 1)
    x = np.full((4, len(seeds), n), np.nan)
    col = {sid: k for k, sid in enumerate(ids)}
    for (i, j), cell in fact.runs.items():
        for r in cell:
            row = x[2 * i + j, slot_of[id(r)]]
            values = [(col[sid], s[metric]) for sid, s in r.scores.items() if metric in s]
            if values:
                for k, v in values:
                    row[k] = v
            elif metric in r.metrics:
                row[:] = r.metrics[metric]
    return x, len(ids), len(seeds)


def _contrasts(cell_means: np.ndarray) -> np.ndarray:
    """cell_means[..., 4] in order (a0b0, a0b1, a1b0, a1b1) -> [main a, main b, interaction].
    main a = mean over b of (a1 - a0); interaction = (a1b1 - a0b1) - (a1b0 - a0b0): how much a's effect
    changes when b moves from its baseline to its other level (a difference of differences)."""
    m00, m01, m10, m11 = (cell_means[..., k] for k in range(4))
    main_a = ((m10 - m00) + (m11 - m01)) / 2
    main_b = ((m01 - m00) + (m11 - m10)) / 2
    interaction = (m11 - m01) - (m10 - m00)
    return np.stack([main_a, main_b, interaction], axis=-1)


def _cell_means(x: np.ndarray, w_samples: np.ndarray, w_seeds: np.ndarray) -> np.ndarray:
    """x[cell, seed, sample]; w_samples[B, sample], w_seeds[B, seed] resample counts -> means[B, cell]."""
    valid = ~np.isnan(x)
    filled = np.where(valid, x, 0.0)
    num = np.einsum("csn,bn->bcs", filled, w_samples)
    den = np.einsum("csn,bn->bcs", valid.astype(float), w_samples)
    with np.errstate(invalid="ignore", divide="ignore"):
        run_mean = num / den  # mean over the resampled samples of each (cell, seed) run
    run_ok = ~np.isnan(run_mean)
    num_s = np.einsum("bcs,bs->bc", np.where(run_ok, run_mean, 0.0), w_seeds)
    den_s = np.einsum("bcs,bs->bc", run_ok.astype(float), w_seeds)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num_s / den_s


def factorial_effects(
    fact: Factorial, metric: str, n_resamples: int = N_RESAMPLES, rng_seed: int = RNG_SEED
) -> list[Effect] | None:
    """Main effects and interaction with percentile 95% intervals from a hierarchical bootstrap:
    each resample draws sample ids (shared by all runs: the comparison is paired) and seeds (shared by
    all cells) with replacement. None when some cell has no value for the metric."""
    x, n_ids, n_seeds = _score_tensor(fact, metric)
    if np.isnan(x).all(axis=(1, 2)).any():
        return None
    n = x.shape[2]
    s = x.shape[1]
    point = _contrasts(_cell_means(x, np.ones((1, n)), np.ones((1, s))))[0]
    rng = np.random.default_rng(rng_seed)
    w_samples = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_resamples)]).astype(float)
    if s > 1:
        w_seeds = np.stack([np.bincount(rng.integers(0, s, s), minlength=s) for _ in range(n_resamples)]).astype(float)
    else:
        w_seeds = np.ones((n_resamples, 1))
    boot = _contrasts(_cell_means(x, w_samples, w_seeds))
    # a resample that drew only seeds missing from some cell is NaN: percentiles over the rest
    low = np.nanpercentile(boot, 2.5, axis=0)
    high = np.nanpercentile(boot, 97.5, axis=0)
    contrasts = [
        f"{fact.levels_a[1]} vs {fact.levels_a[0]}",
        f"{fact.levels_b[1]} vs {fact.levels_b[0]}",
        f"({fact.a} effect at {fact.b}={fact.levels_b[1]}) - (at {fact.b}={fact.levels_b[0]})",
    ]
    names = [fact.a, fact.b, f"{fact.a} x {fact.b}"]
    return [
        Effect(names[k], metric, float(point[k]), float(low[k]), float(high[k]), contrasts[k], n_ids, n_seeds)
        for k in range(3)
    ]


def _fmt(v: float) -> str:
    return f"{v:+.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:+.2e}"


def describe(effect: Effect) -> str:
    interval = f"{_fmt(effect.estimate)} [{_fmt(effect.low)}, {_fmt(effect.high)}]"
    if effect.no_verdict:
        return (f"{effect.name}: {_fmt(effect.estimate)} ({effect.contrast}), one batch-average measurement per run: "
                "no interval and no verdict (machine load moves it; repeat with -m seed=0,1,2)")
    if effect.no_interval:
        interval = f"{_fmt(effect.estimate)} (one value per run: no interval; add seeds, e.g. -m seed=0,1,2)"
    if effect.within_noise:
        if " x " in effect.name:
            return f"the interaction {effect.name} is within noise ({interval}, {effect.contrast})"
        return f"{effect.name}'s effect is within noise ({interval}, {effect.contrast})"
    better = (effect.estimate > 0) == higher_is_better(effect.metric)
    if " x " in effect.name:
        return f"the interaction {effect.name} is {interval} ({effect.contrast})"
    return f"{effect.name} moves {effect.metric} by {interval} ({effect.contrast}: {'better' if better else 'worse'})"


def verdict(effects: list[Effect]) -> str:
    """One plain sentence per metric: the factors that move it first, then the ones within noise."""
    moving = [e for e in effects if not e.within_noise and not e.no_verdict]
    quiet = [e for e in effects if e.within_noise or e.no_verdict]
    parts = [describe(e) for e in moving + quiet]
    return "; ".join(parts) + "."


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """(cost, quality) pairs -> on the front (minimize cost, maximize quality): no other point is at least as
    cheap and at least as good, and strictly better in one of the two."""
    out = []
    for k, (c, q) in enumerate(points):
        dominated = any(
            (c2 <= c and q2 >= q) and (c2 < c or q2 > q) for m, (c2, q2) in enumerate(points) if m != k
        )
        out.append(not dominated)
    return out
