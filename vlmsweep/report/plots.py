"""The report's figures (matplotlib, Agg): effects, quality vs visual budget and cost, receipt ratio, tags, cycles."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI boxes and cluster nodes
import matplotlib.pyplot as plt  # noqa: E402

from vlmsweep.report.effects import Effect, pareto_front  # noqa: E402
from vlmsweep.report.runs import RECEIPT_RATIO_AXES, VISUAL_TOKENS_AXES, RunResult  # noqa: E402

COST_METRICS = ("cost.visual_tokens_per_image", "cost.eval_seconds_per_sample")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def effects_plot(effects: list[Effect], title: str, path: Path) -> Path:
    """Forest plot, one panel per metric (each on its own scale: rates and seconds do not share an
    axis): a row per effect with its 95% interval, zero marked, grey unless found; a metric with one
    value per run is a hollow point and its panel says so."""
    metrics = list(dict.fromkeys(e.metric for e in effects))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(7, 0.9 * len(metrics) + 0.8), squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        rows = [e for e in effects if e.metric == metric]
        ys = list(range(len(rows)))[::-1]
        for y, e in zip(ys, rows):
            if e.no_interval:  # one value per run: the difference alone, hollow, never a zero-width bar
                ax.plot([e.estimate], [y], "o", mfc="none", color="grey")
                continue
            color = "tab:blue" if e.found else "grey"  # blue only for an effect the report calls found
            ax.plot([e.low, e.high], [y, y], color=color, lw=2)
            ax.plot([e.estimate], [y], "o", color=color)
        ax.axvline(0.0, color="black", lw=0.8, ls="--")
        ax.set_yticks(ys, [e.name for e in rows], fontsize=7)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        note = " (one value per run: no interval)" if all(e.no_interval for e in rows) else ""
        ax.set_title(metric + note, fontsize=8, loc="left")
        ax.tick_params(axis="x", labelsize=7)
    axes[-1, 0].set_xlabel("effect (other level minus baseline), 95% interval over test samples and seeds", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def budget_plot(runs: list[RunResult], quality: str, path: Path) -> Path | None:
    """Quality vs the visual-token budget, and quality vs each cost with the Pareto front ringed."""
    pts = [(r.axis_float(VISUAL_TOKENS_AXES), r) for r in runs if r.ok and quality in r.metrics]
    pts = sorted([(v, r) for v, r in pts if v is not None], key=lambda t: t[0])
    if len({v for v, _ in pts}) < 2:
        return None
    costs = [c for c in COST_METRICS if all(c in r.metrics for _, r in pts)]
    fig, axes = plt.subplots(1, 1 + len(costs), figsize=(4.2 * (1 + len(costs)), 3.6), squeeze=False)
    ax = axes[0][0]
    ax.plot([v for v, _ in pts], [r.metrics[quality] for _, r in pts], "o-")
    ax.set_xlabel("max visual tokens per image (max_pixels / 28²)")
    ax.set_ylabel(quality)
    for k, cost in enumerate(costs, 1):
        ax = axes[0][k]
        xy = [(r.metrics[cost], r.metrics[quality]) for _, r in pts]
        front = pareto_front(xy)
        ax.scatter([c for c, _ in xy], [q for _, q in xy], color="tab:blue")
        fx = sorted((c, q) for (c, q), f in zip(xy, front) if f)
        ax.plot([c for c, _ in fx], [q for _, q in fx], "o--", mfc="none", ms=12, color="tab:red", label="Pareto front")
        for (c, q), (_, r) in zip(xy, pts):
            ax.annotate(r.label, (c, q), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(cost + " (lower is better)")
        ax.set_ylabel(quality)
        ax.legend(fontsize=7)
    return _save(fig, path)


def pareto_plot(study, path: Path) -> Path | None:
    """A two-objective study's COMPLETE trials, its Pareto front (Optuna's) ringed and joined. Drawn from the
    StudyRecord rather than optuna.visualization.matplotlib.plot_pareto_front, which needs the live study
    and its storage: the report also runs on a copied sweep folder."""
    if len(study.directions) != 2:
        return None
    done = [t for t in study.trials if t.state == "COMPLETE" and t.values]
    if not done:
        return None
    (xn, yn), (xd, yd) = study.metric_names, study.directions
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    ax.scatter([t.values[0] for t in done], [t.values[1] for t in done], color="tab:blue", label="trials")
    front = sorted((t.values[0], t.values[1]) for t in done if t.on_front)
    ax.plot([x for x, _ in front], [y for _, y in front], "o--", mfc="none", ms=12, color="tab:red", label="Pareto front")
    for t in done:
        label = f"trial {t.number}: " + " ".join(f"{k}={v}" for k, v in sorted(t.params.items()))
        ax.annotate(label, (t.values[0], t.values[1]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"{xn} ({'higher' if xd == 'maximize' else 'lower'} is better)")
    ax.set_ylabel(f"{yn} ({'higher' if yd == 'maximize' else 'lower'} is better)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def receipt_ratio_plot(runs: list[RunResult], quality: str, path: Path) -> Path | None:
    pts = sorted(
        [(v, r) for r in runs if r.ok and (v := r.axis_float(RECEIPT_RATIO_AXES)) is not None], key=lambda t: t[0]
    )
    if len({v for v, _ in pts}) < 2:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for metric, style in ((quality, "o-"), ("rate.leakage", "s--")):
        xy = [(v, r.metrics[metric]) for v, r in pts if metric in r.metrics]
        if xy:
            ax.plot([x for x, _ in xy], [y for _, y in xy], style, label=metric)
    ax.set_xlabel("receipt ratio in the training mix")
    ax.legend(fontsize=8)
    return _save(fig, path)


def tags_plot(runs: list[RunResult], path: Path) -> Path | None:
    """Stacked bar of failure-tag counts (tags.* metrics) per run, each bar named by what differs (its label)."""
    tags = sorted({k for r in runs if r.ok for k in r.metrics if k.startswith("tags.")})
    shown = [r for r in runs if r.ok]
    if not tags or not shown:
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(shown) + 3), 3.8))
    bottom = [0.0] * len(shown)
    cmap = plt.get_cmap("tab20")
    for k, tag in enumerate(tags):
        heights = [r.metrics.get(tag, 0.0) for r in shown]
        ax.bar(range(len(shown)), heights, bottom=bottom, label=tag.removeprefix("tags."), color=cmap(k % 20))
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xticks(range(len(shown)), [r.label or r.name for r in shown], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("samples with the tag")
    ax.legend(fontsize=6, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _save(fig, path)


def cycles_plot(runs: list[RunResult], metrics: list[str], path: Path) -> Path | None:
    shown = [r for r in runs if r.ok and "cycle" in r.axes]
    if len(shown) < 2:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for metric in metrics:
        xy = [(int(r.axes["cycle"]), r.metrics[metric]) for r in shown if metric in r.metrics]
        if xy and not metric.startswith("cost."):
            ax.plot([x for x, _ in xy], [y for _, y in xy], "o-", label=metric)
    ax.set_xlabel("cycle")
    ax.legend(fontsize=7)
    return _save(fig, path)
