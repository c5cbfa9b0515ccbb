"""The visual-token budget's effect, measured with the report's own statistics: 64 vs 256 visual tokens under K seeds.

    python benchmarks/bench_budget.py [--seeds 3] [--levels 64tok,256tok] [--out DIR] [OVERRIDES...]
    python benchmarks/bench_budget.py --reuse DIR          # only the figures, from an existing multirun folder

Trains and evaluates the default run at both budgets under seeds 0..K-1, as a user would: `python -m vlmsweep -m
max_pixels=64tok,256tok seed=0,1,2 tracker=none hydra.sweep.dir=DIR` (one process, from a temporary folder outside
the checkout; this checkout's vlmsweep and conf/). Then it reads the multirun with the report's code
(vlmsweep.report.build.analyse, what `python -m vlmsweep.report DIR` prints as the max_pixels comparison) and prints,
for content.field_em, its margin over chance, content.digit_acc and contract.strict_parse_rate: each budget's mean (per run over its test
samples, then over the seeds), the effect in the report's convention (second level minus first, "256tok vs 64tok":
positive = more at 256 tokens), its 95% interval over test samples and training seeds, the minimum detectable effect
(80% power, 5% two-sided), the report's verdict ("found" / "not distinguishable from seed noise") and its sentence;
then the machine (CPU model, cores, torch) and the wall time, a table and one JSON line. OVERRIDES go to every run
(e.g. data.test_size=16). Without --out the runs are deleted afterwards; with --out DIR they stay there, and
`python -m vlmsweep.report DIR` draws the whole report. Time: the 6 default runs of 3 seeds took 2715 s on 2 CPU cores
that another job shared (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from multirun import has_runs, machine, machine_line, run_multirun  # benchmarks/multirun.py, beside this script
from vlmsweep.report.build import analyse
from vlmsweep.report.effects import Comparison, DesignError, Effect, verdict
from vlmsweep.report.runs import same_partition

AXIS = "max_pixels"
# content.field_em_margin: the part of field EM that comes from the page (vlmsweep/evaluate/grounding.py); a budget
# that lets a model read moves it, one that changes only its guesses does not
METRICS = ("content.field_em", "content.field_em_margin", "content.digit_acc", "contract.strict_parse_rate")


def parse_levels(text: str) -> tuple[str, str]:
    levels = tuple(x.strip() for x in text.split(",") if x.strip())
    if len(levels) != 2 or levels[0] == levels[1]:
        raise argparse.ArgumentTypeError(f"--levels {text!r}: two different max_pixels options, e.g. 64tok,256tok")
    return levels  # type: ignore[return-value]


def sweep_overrides(levels: tuple[str, str], seeds: int) -> list[str]:
    """The multirun's sweep: the budget first, so runs 0..K-1 are the first level (the report's baseline)."""
    return [f"{AXIS}={','.join(levels)}", "seed=" + ",".join(str(s) for s in range(seeds))]


def _budget_comparison(sweep_dir: Path, metrics: list[str]) -> tuple[Comparison, dict[str, list[Effect]], list]:
    """The report's two-level comparison of max_pixels in the multirun (under whichever of its names the report keeps)."""
    a = analyse(sweep_dir, metrics=metrics)
    ok = [r for r in a.runs if r.ok]
    for comp, effects in a.comparisons:
        if comp.axis == AXIS or same_partition(ok, comp.axis, AXIS):
            return comp, effects, a.runs
    failed = [f"run {r.name}: {r.status} ({r.error})" for r in a.runs if not r.ok]
    sys.exit(f"{sweep_dir}: the report finds no two-level {AXIS} comparison (varying axes: {', '.join(a.axes) or 'none'}; "
             f"{len(ok)} ok runs{'; ' + '; '.join(failed) if failed else ''}): run both budgets, and only the seed besides")


def budget_effects(sweep_dir: Path, metrics: tuple[str, ...] = METRICS) -> dict:
    """Per metric: each level's mean, the report's effect, interval, MDE and verdict; plus the design (levels, seeds,
    test samples, runs)."""
    present = [m for m in metrics if any(m in json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json"))]
    try:
        comp, effects, runs = _budget_comparison(sweep_dir, present)
    except DesignError as err:
        sys.exit(f"error: {err}")
    baseline, other = comp.levels
    rows = {}
    for m in metrics:
        means = {}
        for level, cell in zip(comp.levels, comp.cells):
            values = [r.metrics[m] for r in cell if m in r.metrics]
            means[level] = round(sum(values) / len(values), 4) if values else None
        e = (effects.get(m) or [None])[0]
        if e is None:
            rows[m] = {"mean": means, "effect": None, "low": None, "high": None, "mde": None, "noise": None,
                       "verdict": f"no value at {' and '.join(lv for lv, v in means.items() if v is None) or 'some level'}",
                       "sentence": None, "n_samples": None, "n_seeds": None}
            continue
        finite = lambda v: None if v != v else round(v, 4)  # noqa: E731 - NaN (no interval) -> null in the JSON
        rows[m] = {"mean": means, "effect": round(e.estimate, 4), "low": finite(e.low) if not e.no_interval else None,
                   "high": finite(e.high) if not e.no_interval else None, "mde": finite(e.mde), "noise": e.noise,
                   "verdict": e.verdict_text, "sentence": verdict([e]), "n_samples": e.n_samples, "n_seeds": e.n_seeds}
    return {
        "axis": comp.axis, "baseline": baseline, "other": other, "contrast": f"{other} vs {baseline}",
        "effect_is": f"{other} minus {baseline}",
        "seeds": sorted({r.seed for cell in comp.cells for r in cell if r.seed is not None}, key=lambda s: (len(s), s)),
        "runs": {level: len(cell) for level, cell in zip(comp.levels, comp.cells)},
        "failed_runs": [r.name for r in runs if not r.ok],
        "metrics": rows,
    }  # fmt: skip


def _num(v: float | None, signed: bool = False) -> str:
    return "—" if v is None else (f"{v:+.3f}" if signed else f"{v:.3f}")


def table(result: dict) -> str:
    b, o = result["baseline"], result["other"]
    first = next((r for r in result["metrics"].values() if r["n_samples"] is not None), {})
    lines = [
        f"{result['axis']}: {result['contrast']}; effect = {result['effect_is']} (the report's 'other vs baseline'); "
        + ", ".join(f"{n} runs at {level}" for level, n in result["runs"].items())
        + f" (seeds {', '.join(result['seeds'])}), {first.get('n_samples', '?')} test samples"
        + (f"; failed runs: {', '.join(result['failed_runs'])}" if result["failed_runs"] else ""),
        f"{'metric':<28} {b:>8} {o:>8} {'effect':>8} {'95% interval':>18} {'MDE':>6}  verdict",
    ]
    for m, r in result["metrics"].items():
        ci = "—" if r["low"] is None else f"[{r['low']:+.3f}, {r['high']:+.3f}]"
        lines.append(f"{m:<28} {_num(r['mean'][b]):>8} {_num(r['mean'][o]):>8} {_num(r['effect'], True):>8} {ci:>18} "
                     f"{_num(r['mde']):>6}  {r['verdict']}")
    lines += [f"  {m}: {r['sentence']}" for m, r in result["metrics"].items() if r["sentence"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1 per budget (default 3)")
    ap.add_argument("--levels", type=parse_levels, default=("64tok", "256tok"),
                    help="the two max_pixels options, baseline first (default 64tok,256tok)")
    ap.add_argument("--out", type=Path, help="multirun folder to write and keep (default: a temporary one, deleted)")
    ap.add_argument("--reuse", type=Path, help="an existing multirun folder: only compute, no training")
    ap.add_argument("overrides", nargs="*", help="further overrides for every run, e.g. data.test_size=16")
    a = ap.parse_args(argv)
    if a.seeds < 2 and not a.reuse:
        ap.error("--seeds: at least 2 (with one seed the report measures no seed noise and gives no verdict)")
    if a.reuse and (a.out or a.overrides):
        ap.error("--reuse reads an existing multirun: no --out, no overrides")
    if a.reuse and not has_runs(a.reuse):
        ap.error(f"--reuse {a.reuse}: no run folder with metrics.json there")
    if a.out and has_runs(a.out):
        ap.error(f"--out {a.out} holds runs already: compute from them with --reuse {a.out}, or give a new folder")
    started = time.perf_counter()
    runs_seconds = None
    with tempfile.TemporaryDirectory(prefix="vlmsweep-budget-") as tmp:
        out = (a.reuse or a.out or Path(tmp) / "multirun").resolve()
        if not a.reuse:
            runs_seconds = run_multirun(out, sweep_overrides(a.levels, a.seeds), a.overrides)
            print(f"{2 * a.seeds} runs in {runs_seconds:.0f} s", flush=True)
        result = budget_effects(out)
    m = machine()
    result |= {"benchmark": "bench_budget", "dir": str(out) if (a.reuse or a.out) else None, "reused": bool(a.reuse),
               "overrides": a.overrides, "machine": m, "runs_seconds": None if runs_seconds is None else round(runs_seconds, 1),
               "wall_seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    print(table(result))
    print(f"machine: {machine_line(m)}; wall {result['wall_seconds']:.0f} s"
          + ("" if runs_seconds is None else f" (training and evaluating the {2 * a.seeds} runs: {runs_seconds:.0f} s)")
          + (f"; runs kept in {out}" if a.out else ""))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
