"""The retrain loop's report: every metric and failure tag of each evaluated set, cycle over cycle, and a plot."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from vlmsweep.config import Config
from vlmsweep.evaluate.grounding import LEVEL
from vlmsweep.evaluate.metrics import METRICS, TAGS
from vlmsweep.metrics import higher_is_better
from vlmsweep.evaluate.remedies import FOCUS_OF_TAG, MISREADING_TAGS, UNFIXABLE_TAGS, config_fixes, misreading_share
from vlmsweep.loop.noise import TargetedChange
from vlmsweep.loop.state import CycleResult

log = logging.getLogger(__name__)


def _cell(value: float | None, ref: float | None, is_count: bool) -> str:
    if value is None:
        return "–"
    # Counts (tags, bytes, parameters) print as integers; rates and errors with 3 decimals.
    whole = is_count or (abs(value) >= 1e4 and float(value).is_integer())
    text = f"{value:.0f}" if whole else f"{value:.3f}"
    if ref is None:
        return text
    delta = value - ref
    return text + (f" ({delta:+.0f})" if whole else f" ({delta:+.3f})")


def _metric_order(names: set[str]) -> list[str]:
    known = [n for n in METRICS if n in names and not n.startswith("tags.")]
    others = sorted(n for n in names if n not in METRICS and not n.startswith("by_domain."))
    tags = [f"tags.{t}" for t in TAGS if f"tags.{t}" in names]
    by_domain = sorted(n for n in names if n.startswith("by_domain."))
    return known + others + tags + by_domain


def metrics_table(per_cycle: Sequence[tuple[int, dict[str, float]]]) -> list[str]:
    """Markdown rows: one per metric, one column per cycle, deltas against the previous cycle; by_domain
    copies folded into a <details> block."""
    names = _metric_order(set().union(*(m.keys() for _, m in per_cycle)))
    head = "| metric | better | " + " | ".join(f"cycle {c}" for c, _ in per_cycle) + " |"
    rule = "|---|---|" + "---|" * len(per_cycle)
    main, folded = [head, rule], [head, rule]
    for name in names:
        base = name.split(".", 2)[-1] if name.startswith("by_domain.") else name
        try:
            arrow = "↑" if higher_is_better(name) else "↓"
        except KeyError:
            arrow = ""
        cells = []
        for i, (_, m) in enumerate(per_cycle):
            ref = per_cycle[i - 1][1].get(name) if i > 0 else None
            cells.append(_cell(m.get(name), ref, base.startswith("tags.")))
        (folded if name.startswith("by_domain.") else main).append(f"| {name} | {arrow} | " + " | ".join(cells) + " |")
    if len(folded) > 2:
        main += ["", "<details><summary>per domain</summary>", "", *folded, "", "</details>"]
    return main


def targeted_table(changes: Sequence[TargetedChange], noise_seeds: int) -> list[str]:
    """Markdown: each targeted tag's regression-set change, cycle over cycle, against cycle 0's seed-noise band."""
    lines = ["## Targeted tags against seed noise", "",
             "Each cycle's hard set targets the failure tags mined for it; this is how their count on the regression set "
             f"moved in the cycle that trained on it. The band is the change that cycle 0 trained with "
             f"{noise_seeds + 1} seeds shows on its own (95%, t(n-1) x s x sqrt(2) over the seeds' counts; "
             "loop.noise_seeds). A continued cycle also trains longer: a change beyond the band is the hard set and "
             "the extra steps together.", ""]
    if not changes:
        return lines + ["No cycle trained on a hard set (nothing was mined, or the loop stopped after cycle 0).", ""]
    lines += ["| cycle | targeted tag | before | after | change | cycle-0 counts over seeds | band (±) | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for c in changes:
        band = "–" if c.band is None else f"{c.band:.1f}"
        lines.append(f"| {c.cycle} | {c.tag} | {c.before:.0f} | {c.after:.0f} | {c.change:+.0f} | "
                     f"{', '.join(f'{v:.0f}' for v in c.seeds)} | {band} | {c.verdict} |")
    return lines + [""]


def chance_lines(history: Sequence[CycleResult]) -> list[str]:
    """Whether each cycle's test answers depend on their page (vlmsweep/evaluate/grounding.py): a tag can be a
    misreading only on a model that reads, so mined tags of a model whose answers do not are guesses."""
    tests = [(h.cycle, h.summary.get("chance_test")) for h in history if h.summary.get("chance_test")]
    if not tests:
        return []
    cells = "; ".join(f"cycle {c}: field EM {t['own']:.3f} against {t['chance']:.3f} by chance (margin {t['margin']:+.3f}, "
                      f"p = {t['p_value']:.3f}, {t['distinct_outputs']} distinct outputs for {t['pages']} pages)"
                      for c, t in tests)
    lines = ["", f"Do the test answers depend on the page? {cells}."]
    if not any(t["p_value"] < LEVEL for _, t in tests):
        lines.append(f"No cycle's answers do: the model is not reading, so its {', '.join(MISREADING_TAGS)} tags mark "
                     "guesses that landed near the truth, not misreadings, and a hard set mined from them trains on guesses.")
    return lines


def selection_lines(history: Sequence[CycleResult], cfg: Config) -> list[str]:
    """Which step's adapter each cycle kept, tested and handed on (train.select), with its validation value."""
    if cfg.train.eval_every <= 0:
        return []
    if not cfg.train.select:
        return ["", f"Each cycle scored the validation set every {cfg.train.eval_every} steps "
                    "(cycle_N/metrics_history.jsonl) and kept its last step (no train.select)."]
    lines = ["", "## Selected steps", "",
             f"Each cycle kept the adapter of its best `{cfg.train.select}` on the validation set (train.select; "
             "cycle_N/metrics_history.jsonl): that adapter is the one its test, regression and mining sets scored "
             "and the next cycle continued from.", "", f"| cycle | selected step | of steps | validation `{cfg.train.select}` |",
             "|---|---|---|---|"]
    for h in history:
        step = h.summary.get("selected_step")
        value = h.test.get("train.selected_value")
        lines.append(f"| {h.cycle} | {'–' if step is None else step} | {h.summary.get('steps', '–')} | "
                     f"{'–' if value is None or value != value else f'{value:.3f}'} |")
    return lines


def render_loop_report(history: Sequence[CycleResult], cfg: Config, stopped: dict | None, plot_name: str | None,
                       changes: Sequence[TargetedChange] = ()) -> str:
    loop = cfg.loop
    lines = [
        "# Retrain loop",
        "",
        f"{len(history)} cycle(s) done of {loop.cycles + 1} planned (cycle 0 + loop.cycles={loop.cycles}). "
        f"Hard set: top {loop.mine_per_tag} mined per failure tag + {loop.synth_per_tag} synthesised per tag, "
        f"x{loop.oversample} in the next training set; "
        f"{'continue from the previous adapter' if loop.continue_adapter else 'restart from the base model'} each cycle. "
        "Deltas in parentheses are against the previous cycle.",
        "",
    ]
    warnings = [w for h in history for w in h.summary.get("regression_warnings", [])]
    empty = [h.cycle for h in history if h.summary["hard_set_next"]["size"] == 0]
    if stopped is not None:
        warnings.append(f"stopped before cycle {stopped['cycle']}: {stopped['reason']}")
    for c in empty:
        went_on = loop.on_empty_mine == "train" and c != history[-1].cycle
        warnings.append(f"cycle {c} mined nothing from the mining pool (no data-fixable failure tag)"
                        + (" - the next cycle trained on the base set only" if went_on else ""))
    lines += ["## Warnings", ""] + ([f"- ⚠ {w}" for w in warnings] or ["none"]) + [""]
    for title, attr, note in (
        ("Test set", "test", "cycle_N/metrics.json (training metrics included)"),
        ("Regression set", "regression", "fixed at cycle 0, never trained on; cycle_N/regression/"),
        ("Mining pool", "mining", "where failures are mined; cycle_N/mining/"),
    ):
        lines += [f"## {title}", "", f"{note}.", ""]
        lines += metrics_table([(h.cycle, getattr(h, attr)) for h in history]) + [""]
    lines += targeted_table(changes, cfg.loop.noise_seeds)
    lines += ["## Training sets", "", "| cycle | samples | base | mined | synth | hard set (unique) | adapter from |",
              "|---|---|---|---|---|---|---|"]
    for h in history:
        o = h.summary["train_origins"]
        base = h.summary["train_size"] - o.get("mined", 0) - o.get("synth", 0)  # base, or "manifest" for user data
        lines.append(f"| {h.cycle} | {h.summary['train_size']} | {base} | {o.get('mined', 0)} | "
                     f"{o.get('synth', 0)} | {h.summary['hard_set_trained']} | {h.summary['adapter_from']} |")
    lines += selection_lines(history, cfg)
    lines += ["", "## Hard sets built (for the next cycle)", "",
              "| cycle | tag | in mining pool | mined | synthesised | generator focus |", "|---|---|---|---|---|---|"]
    for h in history:
        hs = h.summary["hard_set_next"]
        rows = [t for t in FOCUS_OF_TAG if hs["counts"].get(t, 0) or hs["mined"].get(t) or hs["synthesised"].get(t)]
        for t in rows:
            lines.append(f"| {h.cycle} | {t} | {hs['counts'].get(t, 0)} | {hs['mined'].get(t, 0)} | "
                         f"{hs['synthesised'].get(t, 0)} | {FOCUS_OF_TAG[t]} |")
        if not rows:
            lines.append(f"| {h.cycle} | – | 0 | 0 | 0 | nothing mined |")
    share = misreading_share([h.summary["hard_set_next"] for h in history])
    if share is not None:
        lines += ["", f"Mined for a misreading ({', '.join(MISREADING_TAGS)}): {share:.0%} of the mined records; "
                      "the rest were mined for blanks, invented values or leakage."]
    lines += chance_lines(history)
    last = history[-1]
    lines += ["", "## Failures a config change addresses (last cycle)", "",
              "Tags data cannot fix are not papered over with data; domain_leakage gets hard negatives and this too.", "",
              "| tag | test | mining | config change |", "|---|---|---|---|"]
    shown = [t for t in (*UNFIXABLE_TAGS, "domain_leakage")
             if last.test.get(f"tags.{t}", 0) or last.mining.get(f"tags.{t}", 0)]
    for t in shown:
        n_test, n_mining = last.test.get(f"tags.{t}", 0), last.mining.get(f"tags.{t}", 0)
        lines.append(f"| {t} | {n_test:.0f} | {n_mining:.0f} | {config_fixes(t, cfg)} |")
    if not shown:
        lines.append("| – | 0 | 0 | none needed |")
    if plot_name:
        lines += ["", "## Failure tags over cycles", "", f"![tags over cycles]({plot_name})"]
    lines += ["", "## Re-running a cycle", "",
              "Every cycle keeps its training manifest (`cycle_N/train.jsonl`, `origin` per line: base, "
              "mined:<cycle>:<tag>, synth:<cycle>:<tag>). To re-run cycle N with the overrides of config.yaml:",
              "", "```",
              "python -m vlmsweep data.train_manifest=cycle_N/train.jsonl model.adapter=cycle_<N-1>/adapter",
              "# model.adapter only with loop.continue_adapter=true; leave it out to restart from the base model",
              "```", ""]
    return "\n".join(lines)


def plot_tags(history: Sequence[CycleResult], path: Path) -> Path | None:
    """Failure-tag counts over cycles, one panel per evaluated set (matplotlib Agg)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError as err:  # a missing plot never fails a loop that trained and evaluated
        log.warning("loop: no plot (%s)", err)
        return None
    sets = (("test", "test"), ("regression", "regression"), ("mining", "mining pool"))
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.8), sharey=False)
    cycles = [h.cycle for h in history]
    for ax, (attr, title) in zip(axes, sets):
        drawn = 0
        for tag in TAGS:
            ys = [getattr(h, attr).get(f"tags.{tag}", 0.0) for h in history]
            if any(ys):
                ax.plot(cycles, ys, marker="o", label=tag)
                drawn += 1
        ax.set_title(title)
        ax.set_xlabel("cycle")
        ax.set_ylabel("samples tagged")
        ax.set_xticks(cycles)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(bottom=0)
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no failure tags", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
