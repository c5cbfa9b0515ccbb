"""Effects of a 2x2 and of two-level axes, with intervals over test samples and training seeds; Pareto fronts.
Which way is better is the metric registry's (vlmsweep.metrics)."""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from vlmsweep.metrics import is_wall_clock, metric
from vlmsweep.report.runs import SEED_AXIS, RunResult, same_partition


@dataclass
class Effect:
    name: str  # factor name, or "A x B" for the interaction
    metric: str
    estimate: float
    low: float
    high: float
    contrast: str  # "all vs llm", or the interaction's convention
    n_samples: int
    n_seeds: int  # replicate seeds whose runs exist in every cell (those the seed noise is measured on)
    se: float = float("nan")  # standard error of the estimate
    df: float = float("nan")  # its degrees of freedom (Satterthwaite)
    noise: str = "none"  # what the interval covers: "seeds and samples" | "samples only" | "seeds only" | "none"
    injected: float | None = None  # a positive control's known size (eval.perturb), measured on the clean outputs
    unmeasurable: str = ""  # why this design cannot answer it (a scope effect on content when every run read an OCR hint)

    @property
    def no_interval(self) -> bool:
        """One value per run and one seed (e.g. a cost): nothing to estimate a spread from, so no interval."""
        return self.noise == "none"

    @property
    def no_verdict(self) -> bool:
        """A wall-clock average measured once per run: the difference mostly reflects machine load."""
        return self.no_interval and is_wall_clock(self.metric)

    @property
    def seed_noise_measured(self) -> bool:
        return self.noise in ("seeds and samples", "seeds only")

    @property
    def interval_text(self) -> str:
        """What every table shows in its interval column: never a zero-width interval for one value per run."""
        if self.no_interval:
            return "no interval (one value per run)"
        return f"[{self.low:+.4g}, {self.high:+.4g}]"

    @property
    def identical(self) -> bool:
        """Every paired comparison came out exactly 0 (e.g. strict parse 1 in every run): a zero-width interval on 0
        measures no noise, so the report says what happened instead of 'not distinguishable from seed noise'."""
        return not self.no_interval and self.low == self.high == self.estimate == 0.0

    @property
    def within_noise(self) -> bool:
        return not self.no_interval and self.low <= 0.0 <= self.high

    @property
    def found(self) -> bool:
        """An effect the report calls one: its interval excludes 0 and covers training-seed noise too."""
        return not self.unmeasurable and not self.no_interval and not self.within_noise and self.seed_noise_measured

    @property
    def mde(self) -> float:
        """Minimum detectable effect at this design: the true size found with 80% power by a two-sided 5% test."""
        return float("nan") if self.no_interval else minimum_detectable(self.se, self.df)

    @property
    def covers_injected(self) -> bool | None:
        return None if self.injected is None else bool(self.low <= self.injected <= self.high)

    @property
    def verdict_text(self) -> str:
        """The table's verdict column, from the interval and what noise it covers."""
        if self.unmeasurable:
            return self.unmeasurable
        if self.no_verdict:
            return "no verdict (one batch-average measurement per run)"
        if self.no_interval:
            return "no interval (one value per run)"
        if not self.seed_noise_measured:
            return "no verdict: one training seed (interval covers test samples only)"
        if self.identical:
            return "no difference: exactly 0 in every paired comparison"
        return "found" if self.found else "not distinguishable from seed noise"


@dataclass
class Factorial:
    """A 2x2: factors a and b, each with (baseline, other) levels; runs[(i, j)] for a at level i, b at j."""

    a: str
    b: str
    levels_a: tuple[str, str]
    levels_b: tuple[str, str]
    runs: dict[tuple[int, int], list[RunResult]]
    averaged_over: list[str] = field(default_factory=list)  # other varying axes (not seed) in the cells

    @property
    def cells(self) -> list[list[RunResult]]:
        return [self.runs[(i, j)] for i in (0, 1) for j in (0, 1)]


@dataclass
class Comparison:
    """One two-level axis outside any 2x2 (e.g. `eval.perturb.digit_flip=0,0.3 seed=0,1,2`): other vs baseline."""

    axis: str
    levels: tuple[str, str]
    runs: dict[int, list[RunResult]]
    averaged_over: list[str] = field(default_factory=list)

    @property
    def cells(self) -> list[list[RunResult]]:
        return [self.runs[0], self.runs[1]]


class DesignError(ValueError):
    """Runs that cannot be compared as asked (different test sets): the message names the cells."""


def _levels(ok: list[RunResult], axis: str) -> list[str]:
    levels: list[str] = []
    for run in ok:
        value = run.axes.get(axis)
        if value is not None and value not in levels:
            levels.append(value)
    return levels


def _two_level_axes(ok: list[RunResult], axes: list[str]) -> list[tuple[str, tuple[str, str]]]:
    out = []
    for axis in axes:
        if axis == SEED_AXIS:
            continue
        levels = _levels(ok, axis)
        if len(levels) == 2 and all(run.axes.get(axis) is not None for run in ok):
            out.append((axis, (levels[0], levels[1])))
    return out


def _others(ok: list[RunResult], axes: list[str], used: tuple[str, ...]) -> list[str]:
    return [
        x for x in axes
        if x not in (*used, SEED_AXIS) and len({r.axes.get(x) for r in ok}) > 1
        and not any(same_partition(ok, x, u) for u in used)
    ]  # fmt: skip


def find_factorials(runs: list[RunResult], axes: list[str]) -> list[Factorial]:
    """Every pair of two-level axes whose four cells all hold ok runs. The baseline level is the one of the
    lowest-numbered run (Hydra's order of `quant=nf4,bf16`), so contrasts read "other vs baseline"."""
    ok = [r for r in runs if r.ok]
    out = []
    for (a, la), (b, lb) in itertools.combinations(_two_level_axes(ok, axes), 2):
        if same_partition(ok, a, b):  # max_pixels and max_pixels.visual_tokens: one axis under two names
            continue
        cells: dict[tuple[int, int], list[RunResult]] = {(i, j): [] for i in (0, 1) for j in (0, 1)}
        for run in ok:
            cells[(la.index(run.axes[a]), lb.index(run.axes[b]))].append(run)
        if all(cells.values()):
            out.append(Factorial(a, b, la, lb, cells, averaged_over=_others(ok, axes, (a, b))))
    return out


def find_comparisons(runs: list[RunResult], axes: list[str], factorials: list[Factorial]) -> list[Comparison]:
    """Two-level axes that no 2x2 covers (a 2x2's main effects already compare its axes' levels), one name
    per axis (a choice and its value that always move together count once)."""
    ok = [r for r in runs if r.ok]
    covered = {f.a for f in factorials} | {f.b for f in factorials}
    out: list[Comparison] = []
    for axis, levels in _two_level_axes(ok, axes):
        if any(same_partition(ok, axis, c) for c in covered | {c.axis for c in out}):
            continue
        cells = {k: [r for r in ok if r.axes[axis] == levels[k]] for k in (0, 1)}
        out.append(Comparison(axis, levels, cells, averaged_over=_others(ok, axes, (axis,))))
    return out


def check_same_test_set(cells: list[list[RunResult]], names: list[str]) -> None:
    """Effects are paired on test ids: runs that scored different samples cannot be compared sample by sample."""
    by_run = [(name, r, frozenset(r.scores)) for name, cell in zip(names, cells) for r in cell if r.scores]
    if not by_run:
        return
    ref_name, ref, ref_ids = by_run[0]
    for name, run, ids in by_run[1:]:
        if ids != ref_ids:
            raise DesignError(
                f"cells {ref_name} (run {ref.name}) and {name} (run {run.name}) were evaluated on different test "
                f"sets ({len(ref_ids)} vs {len(ids)} sample ids, {len(ref_ids ^ ids)} not shared): effects pair runs "
                "sample by sample, so give every run the same data.seed, data.test_size and data.test_manifest"
            )


def score_tensor(cells: list[list[RunResult]], metric: str, by: str = "seed") -> tuple[np.ndarray, list[str]]:
    """X[cell, replicate, sample]: per-sample score of a cell's run for that replicate, NaN where absent.
    by="seed": replicates are seed labels, shared across cells (seed s of every cell is one replicate: same
    LoRA init and data order); by="slot": the k-th run of each cell (an A/A's arbitrary pairing). A run
    without per-sample scores for the metric contributes its metrics.json value as one sample column."""
    all_runs = [r for cell in cells for r in cell]
    ids = sorted({sid for r in all_runs for sid, s in r.scores.items() if metric in s})
    per_sample = bool(ids)
    replicates: list[str] = []
    slot_of: dict[int, int] = {}
    for cell in cells:
        used: set[int] = set()
        for k, r in enumerate(cell):
            key = (r.seed if r.seed is not None else r.name) if by == "seed" else str(k)
            if key not in replicates:
                replicates.append(key)
            slot = replicates.index(key)
            while slot in used:  # two runs of one cell with one seed label: separate replicates
                key = f"{key}#"
                if key not in replicates:
                    replicates.append(key)
                slot = replicates.index(key)
            used.add(slot)
            slot_of[id(r)] = slot
    x = np.full((len(cells), len(replicates), max(len(ids), 1)), np.nan)
    col = {sid: k for k, sid in enumerate(ids)}
    for c, cell in enumerate(cells):
        for r in cell:
            row = x[c, slot_of[id(r)]]
            if per_sample:
                for sid, s in r.scores.items():
                    if metric in s and s[metric] is not None:
                        row[col[sid]] = s[metric]
            elif metric in r.metrics:
                row[0] = r.metrics[metric]
    return x, ids


@dataclass(frozen=True)
class Estimate:
    value: float
    se: float
    df: float
    n_samples: int
    n_seeds: int
    noise: str  # see Effect.noise


def _contrast_estimate(x: np.ndarray, w: np.ndarray) -> Estimate:
    """A linear contrast sum_c w_c mean(cell c) of x[cell, run, sample] and its standard error when both the test
    samples and the training seeds are draws from larger populations:

        x[c, r, n] = cell_c + sample_n + (cell x sample)_cn + run_cr + residual_crn

    Var(estimate) = sum_c w_c^2 (V_cs / N + V_run / R_c + V_res / (R_c N)); each part is estimated by moments and
    pooled over the cells (written by hand: no statistics library has this paired, crossed design):
      - between runs (seeds): a seed present in every cell is a block (same LoRA init and data order in each cell;
        for an evaluation-side axis such as eval.perturb, the very same trained adapter), and the cell x seed
        residual of the runs' means has (C - 1)(S - 1) degrees of freedom, 6 in a 2x2 of three seeds; without two
        complete seeds, the pooled within-cell variance of run means (sum_c (R_c - 1) degrees of freedom);
      - between samples: the variance of the per-sample contrast e_n over the N samples, N - 1 degrees of freedom;
      - the run x sample residual, counted in both of the above once too many, is subtracted.
    The seeds' and the samples' parts each get their own Student-t quantile (S - 1 or pooled degrees of freedom,
    and N - 1), combined in quadrature into the interval's half-width. Pooling the block residual over the contrasts gives the seed noise 6 degrees of freedom
    in a 2x2 of three seeds, where one contrast's own paired differences have 2. A percentile bootstrap over 3 seeds undercovers (its
    variance is 2/3 of the truth and its quantiles are normal ones). The level is measured, not assumed:
    tests/test_report_calibration.py and `python -m vlmsweep.report.calibrate` on an A/A multirun. Values missing
    (a metric undefined on a sample, a cell with fewer runs) are averaged over what exists."""
    nan = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean/nanvar of an all-NaN slice is NaN, as wanted
        run_mean = np.nanmean(x, axis=2)  # [cell, run]
        cell_mean = np.nanmean(run_mean, axis=1)  # [cell]
        value = float(np.dot(w, cell_mean))
        runs_per_cell = np.isfinite(run_mean).sum(axis=1)  # R_c
        sample_e = np.einsum("c,cn->n", w, np.nanmean(x, axis=1))  # NaN for a sample undefined in some cell
        sample_e = sample_e[np.isfinite(sample_e)]
        # seed noise, from the runs' means: seeds present in every cell are blocks (a randomized complete block
        # design: the cell x seed residual, (C - 1)(S - 1) degrees of freedom, pooled over the contrasts); without
        # two complete seeds, the pooled within-cell variance (sum_c (R_c - 1) degrees of freedom)
        complete = np.isfinite(run_mean).all(axis=0)
        blocks = int(complete.sum())
        if blocks >= 2 and len(w) >= 2:
            m = run_mean[:, complete]
            resid_cs = m - m.mean(axis=1, keepdims=True) - m.mean(axis=0, keepdims=True) + m.mean()
            df_run = (m.shape[0] - 1) * (blocks - 1)
            v_run = float(np.sum(resid_cs**2) / df_run)
            run_weight = float(np.sum(w**2)) / blocks  # sum_c w_c^2 / S
        else:
            dev = run_mean - cell_mean[:, None]
            df_run = int(np.sum(np.maximum(runs_per_cell - 1, 0)))
            v_run = float(np.nansum(dev**2) / df_run) if df_run > 0 else nan
            run_weight = float(np.sum(w**2 / np.maximum(runs_per_cell, 1)))  # sum_c w_c^2 / R_c
        # run x sample residual within each cell: x - run mean - (cell's per-sample mean) + cell mean
        cell_sample = np.nanmean(x, axis=1, keepdims=True)
        resid = x - run_mean[:, :, None] - cell_sample + cell_mean[:, None, None]
    n_samples = len(sample_e)
    n_seeds = int(runs_per_cell.min()) if len(runs_per_cell) else 0
    per_sample = x.shape[2] > 1
    inv_r = float(np.sum(w**2 / np.maximum(runs_per_cell, 1)))  # sum_c w_c^2 / R_c
    if df_run == 0 and (not per_sample or n_samples < 2):
        return Estimate(value, nan, nan, n_samples, n_seeds, "none")
    if df_run == 0:  # one run per cell: a paired comparison over test samples, seed noise unmeasured
        m2 = float(np.var(sample_e, ddof=1))
        return Estimate(value, float(np.sqrt(m2 / n_samples)), float(n_samples - 1), n_samples, n_seeds, "samples only")
    seeds_term = (v_run * run_weight, df_run)
    if not per_sample or n_samples < 2:
        return Estimate(value, float(np.sqrt(seeds_term[0])), float(df_run), n_samples, n_seeds, "seeds only")
    samples_term = (float(np.var(sample_e, ddof=1)) / n_samples, n_samples - 1)
    df_res = max(int(np.sum(np.maximum(runs_per_cell - 1, 0))) * (n_samples - 1), 1)  # the within-cell residual's
    resid_term = (float(np.nansum(resid**2)) / df_res * inv_r / n_samples, df_res)
    # the samples' part net of the run x sample residual it shares with the seeds' part
    samples_net = max(samples_term[0] - resid_term[0], 0.0)
    var = seeds_term[0] + samples_net
    if var <= 0.0:
        return Estimate(value, 0.0, float(df_run), n_samples, n_seeds, "seeds and samples")
    # Each part keeps its own t quantile, added in quadrature: with a few seeds, a seed variance that came out small
    # by chance must not borrow the samples' many degrees of freedom (a pooled Satterthwaite t did: 13% false
    # positives with two seeds in the simulated designs of tests/test_report_calibration.py); the interval's
    # degrees of freedom are those of the t quantile this gives.
    half = np.sqrt(stats.t.ppf(0.975, df_run) ** 2 * seeds_term[0] + stats.t.ppf(0.975, samples_term[1]) ** 2 * samples_net)
    df = _df_for_quantile(float(half / np.sqrt(var)))
    return Estimate(value, float(np.sqrt(var)), df, n_samples, n_seeds, "seeds and samples")


def minimum_detectable(se: float, df: float, power: float = 0.80, level: float = 0.95) -> float:
    """The true effect a two-sided test at `level` finds with probability `power`, for this standard error."""
    if not np.isfinite(se) or not np.isfinite(df):
        return float("nan")
    return float((stats.t.ppf(0.5 + level / 2, df) + stats.t.ppf(power, df)) * se)


def _df_for_quantile(t975: float) -> float:
    """The degrees of freedom whose 97.5% t quantile is t975 (bisection on log df; 1e6 stands for normal)."""
    if t975 <= stats.norm.ppf(0.975) + 1e-9:
        return 1e6
    lo, hi = 0.0, np.log(1e6)  # log df
    for _ in range(60):
        mid = (lo + hi) / 2
        if stats.t.ppf(0.975, np.exp(mid)) > t975:
            lo = mid
        else:
            hi = mid
    return float(np.exp((lo + hi) / 2))


def contrast_estimate(x: np.ndarray, w: np.ndarray) -> Estimate:
    """See _contrast_estimate; floating-point residue of exact arithmetic is set to 0."""
    return _clean(_contrast_estimate(x, w))


EPS = 1e-12  # below this an estimate or a standard error is floating-point residue of exact arithmetic: 0


def _clean(est: Estimate) -> Estimate:
    value = 0.0 if abs(est.value) < EPS else est.value
    se = 0.0 if est.se == est.se and est.se < EPS else est.se
    return Estimate(value, se, est.df, est.n_samples, est.n_seeds, est.noise)


def interval(est: Estimate, level: float = 0.95) -> tuple[float, float]:
    if est.noise == "none":
        return est.value, est.value
    if est.se == 0.0:
        return est.value, est.value
    half = float(stats.t.ppf(0.5 + level / 2, est.df) * est.se)
    return est.value - half, est.value + half


def _effect(name: str, metric: str, contrast: str, est: Estimate, injected: float | None) -> Effect:
    low, high = interval(est)
    return Effect(name, metric, est.value, low, high, contrast, est.n_samples, est.n_seeds, se=est.se, df=est.df,
                  noise=est.noise, injected=injected)


def _injected(cells: list[list[RunResult]], w: np.ndarray, metric: str) -> float | None:
    """A positive control's known size: the same contrast over each run's injected change (run_info.json
    perturb.injected, measured as perturbed minus clean scoring of its own outputs); None without perturbation."""
    if not any((r.info.get("perturb") or {}).get("injected") for cell in cells for r in cell):
        return None
    means = []
    for cell in cells:
        values = [float(((r.info.get("perturb") or {}).get("injected") or {}).get(metric, 0.0)) for r in cell]
        means.append(float(np.mean(values)) if values else 0.0)
    return float(np.dot(w, means))


FACTORIAL_WEIGHTS = np.array([  # cell order (a0b0, a0b1, a1b0, a1b1)
    [-0.5, -0.5, 0.5, 0.5],  # main a = mean over b of (a1 - a0)
    [-0.5, 0.5, -0.5, 0.5],  # main b
    [1.0, -1.0, -1.0, 1.0],  # interaction = (a1b1 - a0b1) - (a1b0 - a0b0): a difference of differences
])
COMPARISON_WEIGHTS = np.array([-1.0, 1.0])


def factorial_effects(fact: Factorial, metric: str) -> list[Effect] | None:
    """Main effects and interaction with 95% intervals over test samples (paired across runs) and training
    seeds (see contrast_estimate). None when some cell has no value for the metric."""
    cells = fact.cells
    check_same_test_set(cells, [f"{fact.a}={la} {fact.b}={lb}" for la in fact.levels_a for lb in fact.levels_b])
    x, _ = score_tensor(cells, metric)
    if np.isnan(x).all(axis=(1, 2)).any():
        return None
    contrasts = [
        f"{fact.levels_a[1]} vs {fact.levels_a[0]}",
        f"{fact.levels_b[1]} vs {fact.levels_b[0]}",
        f"({fact.a} effect at {fact.b}={fact.levels_b[1]}) - (at {fact.b}={fact.levels_b[0]})",
    ]
    names = [fact.a, fact.b, f"{fact.a} x {fact.b}"]
    return [
        _effect(names[k], metric, contrasts[k], contrast_estimate(x, w), _injected(cells, w, metric))
        for k, w in enumerate(FACTORIAL_WEIGHTS)
    ]


def comparison_effect(comp: Comparison, metric: str) -> Effect | None:
    cells = comp.cells
    check_same_test_set(cells, [f"{comp.axis}={level}" for level in comp.levels])
    x, _ = score_tensor(cells, metric)
    if np.isnan(x).all(axis=(1, 2)).any():
        return None
    est = contrast_estimate(x, COMPARISON_WEIGHTS)
    return _effect(comp.axis, metric, f"{comp.levels[1]} vs {comp.levels[0]}", est,
                   _injected(cells, COMPARISON_WEIGHTS, metric))


def _fmt(v: float) -> str:
    return f"{v:+.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:+.2e}"


def describe(effect: Effect) -> str:
    interval_s = f"{_fmt(effect.estimate)} [{_fmt(effect.low)}, {_fmt(effect.high)}]"
    subject = f"the interaction {effect.name}" if " x " in effect.name else effect.name
    if effect.unmeasurable:
        return f"{subject}: {_fmt(effect.estimate)} ({effect.contrast}), {effect.unmeasurable}"
    if effect.no_verdict:
        return (f"{effect.name}: {_fmt(effect.estimate)} ({effect.contrast}), one batch-average measurement per run: "
                "no interval and no verdict (machine load moves it; repeat with -m seed=0,1,2)")
    if effect.no_interval:
        return f"{subject}: {_fmt(effect.estimate)} ({effect.contrast}; one value per run: no interval; add seeds, e.g. -m seed=0,1,2)"
    if not effect.seed_noise_measured:
        return (f"{subject}: {interval_s} over test samples only ({effect.contrast}); one training seed, so seed "
                "noise is not measured: no verdict (add seeds, e.g. -m seed=0,1,2)")
    if effect.identical:
        return (f"{subject}: no difference ({effect.contrast}); each sample scored the same at both levels under every "
                "seed, so there is no spread to measure noise or an effect against")
    if effect.within_noise:
        return (f"{subject} is not distinguishable from seed noise ({interval_s}, {effect.contrast}; "
                f"detectable at this size: {effect.mde:.2g})")
    if " x " in effect.name:
        return f"the interaction {effect.name} is {interval_s} ({effect.contrast})"
    direction = metric(effect.metric).direction  # the registry's (vlmsweep.metrics); unknown: KeyError naming it
    if direction == "none":  # a count: it moved, neither better nor worse
        return f"{effect.name} moves {effect.metric} by {interval_s} ({effect.contrast})"
    better = (effect.estimate > 0) == (direction == "higher")
    return f"{effect.name} moves {effect.metric} by {interval_s} ({effect.contrast}: {'better' if better else 'worse'})"


def verdict(effects: list[Effect]) -> str:
    """One plain sentence per metric: the effects found first, then the rest."""
    found = [e for e in effects if e.found]
    rest = [e for e in effects if not e.found]
    return "; ".join(describe(e) for e in found + rest) + "."


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
