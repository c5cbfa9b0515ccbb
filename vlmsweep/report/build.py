"""Comparison report of many runs: summary.csv / summary.md / self-contained report.html / plots, and the CLI."""

from __future__ import annotations

import argparse
import base64
import csv
import html
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmsweep.report import plots
from vlmsweep.report.effects import (
    N_RESAMPLES,
    Effect,
    Factorial,
    factorial_effects,
    find_factorials,
    higher_is_better,
    verdict,
)
from vlmsweep.metric_names import is_wall_clock
from vlmsweep.report.runs import HEADLINE_METRICS, RunResult, load_sweep, read_optuna_results, sweep_axes
from vlmsweep.report.study import StudyRecord


@dataclass
class Analysis:
    runs: list[RunResult]
    axes: list[str]
    metrics: list[str]
    factorials: list[tuple[Factorial, dict[str, list[Effect]]]] = field(default_factory=list)
    optuna: dict[str, Any] | None = None  # optimization_results.yaml, when no study could be read
    study: StudyRecord | None = None
    figures: list[tuple[str, Path]] = field(default_factory=list)
    captions: dict[Path, str] = field(default_factory=dict)  # figure -> the runs it shows, by label (text, searchable)


def headline_metrics(runs: list[RunResult]) -> list[str]:
    present = {k for r in runs for k in r.metrics}
    out = [m for m in HEADLINE_METRICS if m in present]
    out += sorted(k for k in present if k.startswith("cost."))
    return out


def analyse(sweep_dir: Path, metrics: list[str] | None = None, n_resamples: int = N_RESAMPLES,
            storage: str | None = None) -> Analysis:
    runs, study = load_sweep(sweep_dir, storage)
    axes = sweep_axes(runs, study)
    chosen = list(metrics) if metrics else headline_metrics(runs)
    if metrics:
        known = {k for r in runs for k in r.metrics}
        unknown = [m for m in metrics if m not in known]
        if unknown and any(r.ok for r in runs):
            raise ValueError(
                f"--metrics: {', '.join(unknown)} not in any run's metrics.json under {sweep_dir} "
                f"(available: {', '.join(sorted(known)[:20])}{' ...' if len(known) > 20 else ''})"
            )
    result = Analysis(runs=runs, axes=axes, metrics=chosen, study=study,
                      optuna=None if study is not None else read_optuna_results(sweep_dir))
    for fact in find_factorials(runs, axes):
        effects = {}
        for metric in chosen:
            if metric.startswith("cost.visual_tokens"):
                continue  # a budget, not an outcome
            found = factorial_effects(fact, metric, n_resamples=n_resamples)
            if found is not None:
                effects[metric] = found
        result.factorials.append((fact, effects))
    return result


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _status(run: RunResult) -> str:
    return "ok" if run.ok else f"{run.status.upper()}: {run.error or 'no reason recorded'}"


def write_csv(a: Analysis, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["run", "label", "folder", "status", "error", *a.axes, *a.metrics])
        for r in a.runs:
            w.writerow([r.name, r.label, r.path.name, r.status, r.error or "", *(r.axes.get(x, "") for x in a.axes),
                        *(_cell(r.metrics.get(m)) for m in a.metrics)])


def _arrow(metric: str) -> str:
    return "↑" if higher_is_better(metric) else "↓"


def _column(metric: str) -> str:
    return f"{metric} {_arrow(metric)}" + (" (batch avg)" if is_wall_clock(metric) else "")


def summary_rows(a: Analysis) -> tuple[list[str], list[list[str]]]:
    header = ["run", *a.axes, *(_column(m) for m in a.metrics), "status"]
    rows = [[r.name, *(r.axes.get(x, "—") for x in a.axes), *(_cell(r.metrics.get(m)) for m in a.metrics), _status(r)] for r in a.runs]
    return header, rows


def slice_tables(a: Analysis) -> list[tuple[str, list[str], list[list[str]]]]:
    """One table per evaluation slice (eval.slices): the runs' headline metrics measured on that slice alone."""
    names = sorted({k.split("/")[1] for r in a.runs for k in r.metrics if k.startswith("slice/") and k.count("/") >= 2})
    tables = []
    for name in names:
        present = {k.split("/", 2)[2] for r in a.runs for k in r.metrics if k.startswith(f"slice/{name}/")}
        metrics = [m for m in ("samples", *HEADLINE_METRICS, "content.digit_acc") if m in present]
        header = ["run", *a.axes, *(m if m == "samples" else _column(m) for m in metrics)]
        rows = [[r.name, *(r.axes.get(x, "—") for x in a.axes), *(_cell(r.metrics.get(f"slice/{name}/{m}")) for m in metrics)]
                for r in a.runs]
        tables.append((name, header, rows))
    return tables


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _effect_rows(effects: dict[str, list[Effect]]) -> tuple[list[str], list[list[str]]]:
    header = ["metric", "effect", "contrast", "estimate", "95% CI", "within noise", "samples", "seeds"]
    rows = [
        [m, e.name, e.contrast, f"{e.estimate:+.4g}", e.interval_text, "—" if e.no_interval else ("yes" if e.within_noise else "no"),
         str(e.n_samples), str(e.n_seeds)]
        for m, es in effects.items()
        for e in es
    ]
    return header, rows


CONVENTION = (
    "Main effect of a factor = mean over the other factor's two levels of (other level − baseline level); "
    "interaction = (A's effect with B at its other level) − (A's effect with B at baseline), a difference of "
    "differences. The baseline level is the one in the lowest-numbered run. Intervals: percentile 95% from a "
    "paired hierarchical bootstrap (sample ids resampled jointly across runs, then seeds jointly across cells; "
    "{n} resamples, fixed rng seed). 'Within noise' = the interval contains 0. ↑/↓: higher/lower is better."
)


def study_lines(a: Analysis) -> list[str]:
    """The Optuna study in a few lines: name, objective direction, trials by state, best or tie."""
    st = a.study
    if st is None:
        return []
    states: dict[str, int] = {}
    for t in st.trials:
        states[t.state] = states.get(t.state, 0) + 1
    objective = next((r.config.get("sweep", {}).get("objective") for r in a.runs if r.config.get("sweep")), None)
    return [
        f"study {st.name} ({st.storage}), objective {objective or '?'} ({st.direction})",
        "trials: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())),
        st.best(),
    ]


def _title(a: Analysis) -> str:
    if a.study is not None:
        return f"Optuna study {a.study.name}: {len(a.runs)} trials"
    return f"Comparison report: {len(a.runs)} runs"


def write_markdown(a: Analysis, path: Path, n_resamples: int) -> None:
    out = [f"# {_title(a)}", ""]
    out += ["Varying axes: " + (", ".join(a.axes) if a.axes else "none"), ""]
    out += [_md_table(*summary_rows(a)), ""]
    for name, header, rows in slice_tables(a):
        out += [f"## Slice {name}", "", _md_table(header, rows), ""]
    failed = [r for r in a.runs if not r.ok]
    if failed:
        out += ["## Runs without results", ""] + [f"- **{r.name}** ({r.path}): {_status(r)}" for r in failed] + [""]
    problems = [(r, p) for r in a.runs for p in r.problems]
    if problems:
        out += ["## Problems found while reading", ""] + [f"- {r.name}: {p}" for r, p in problems] + [""]
    if a.study is not None:
        out += ["## Optuna", "", *(f"- {line}" for line in study_lines(a)), ""]
    elif a.optuna:
        out += ["## Optuna", "", "```", *(f"{k}: {v}" for k, v in a.optuna.items()), "```", ""]
    for fact, effects in a.factorials:
        out += [f"## 2×2: {fact.a} × {fact.b}", ""]
        if fact.averaged_over:
            out += [f"Averaged over the other varying axes: {', '.join(fact.averaged_over)}.", ""]
        out += [CONVENTION.format(n=n_resamples), ""]
        out += [f"- **{m}** {_arrow(m)}: {verdict(es)}" for m, es in effects.items()] + [""]
        out += [_md_table(*_effect_rows(effects)), ""]
    for title, fig in a.figures:
        out += [f"![{title}](plots/{fig.name})" if fig.parent.name == "plots" else f"![{title}]({fig})"]
        if fig in a.captions:
            out += ["", a.captions[fig], ""]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def _html_table(header: list[str], rows: list[list[str]], bad_rows: set[int] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for k, row in enumerate(rows):
        cls = ' class="bad"' if bad_rows and k in bad_rows else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_html(a: Analysis, path: Path, n_resamples: int) -> None:
    """One file, no external resources: styles inline, figures as base64 PNG data URIs."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>vlmsweep report</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#eee}"
        "tr.bad td{background:#fdd}li{margin:.3em 0}img{max-width:100%;border:1px solid #eee;margin:.5em 0}",
        "</style></head><body>",
        f"<h1>{html.escape(_title(a))}</h1>",
        f"<p>Varying axes: {html.escape(', '.join(a.axes) or 'none')}</p>",
    ]
    header, rows = summary_rows(a)
    parts.append(_html_table(header, rows, {k for k, r in enumerate(a.runs) if not r.ok}))
    for name, s_header, s_rows in slice_tables(a):
        parts.append(f"<h2>Slice {html.escape(name)}</h2>" + _html_table(s_header, s_rows))
    failed = [r for r in a.runs if not r.ok]
    if failed:
        parts.append("<h2>Runs without results</h2><ul>")
        parts += [f"<li><b>{html.escape(r.name)}</b>: {html.escape(_status(r))}</li>" for r in failed]
        parts.append("</ul>")
    problems = [(r, p) for r in a.runs for p in r.problems]
    if problems:
        parts.append("<h2>Problems found while reading</h2><ul>")
        parts += [f"<li>{html.escape(r.name)}: {html.escape(p)}</li>" for r, p in problems]
        parts.append("</ul>")
    if a.study is not None:
        parts.append("<h2>Optuna</h2><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in study_lines(a)) + "</ul>")
    elif a.optuna:
        parts.append("<h2>Optuna</h2><pre>" + html.escape("\n".join(f"{k}: {v}" for k, v in a.optuna.items())) + "</pre>")
    for fact, effects in a.factorials:
        parts.append(f"<h2>2×2: {html.escape(fact.a)} × {html.escape(fact.b)}</h2>")
        if fact.averaged_over:
            parts.append(f"<p>Averaged over the other varying axes: {html.escape(', '.join(fact.averaged_over))}.</p>")
        parts.append(f"<p><small>{html.escape(CONVENTION.format(n=n_resamples))}</small></p><ul>")
        parts += [f"<li><b>{html.escape(m)}</b> {_arrow(m)}: {html.escape(verdict(es))}</li>" for m, es in effects.items()]
        parts.append("</ul>" + _html_table(*_effect_rows(effects)))
    for title, fig in a.figures:
        data = base64.b64encode(fig.read_bytes()).decode("ascii")
        parts.append(f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>")
        if fig in a.captions:
            parts.append(f"<p><small>{html.escape(a.captions[fig])}</small></p>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def print_rich(a: Analysis, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 160))  # a wide table stays readable in logs
    header, rows = summary_rows(a)
    # the terminal shows axes and quality metrics; cost columns are in summary.md/.csv and the HTML
    keep = [k for k, h in enumerate(header) if not h.startswith("cost.") and k < len(header) - 1]
    table = Table(title=f"{len(a.runs)} runs (full names and cost columns in summary.csv)")
    for k in keep:  # short headers keep the columns readable in a terminal
        h = header[k]
        short = h.rsplit(".", 1)[-1]
        widest = max([len(short)] + [len(str(row[k])) for row in rows])
        table.add_column(short, overflow="ellipsis", no_wrap=True, min_width=min(widest, 12))
    table.add_column("status", no_wrap=True)
    for run, row in zip(a.runs, rows):
        table.add_row(*[row[k] for k in keep], run.status, style=None if run.ok else "red")
    console.print(table)
    for run in a.runs:
        if not run.ok:
            console.print(f"[red]run {run.name}: {_status(run)}[/red]")
    for line in study_lines(a):
        console.print(line)
    for fact, effects in a.factorials:
        console.print(f"[bold]2×2 {fact.a} × {fact.b}[/bold]")
        for m, es in effects.items():
            console.print(f"  {m} {_arrow(m)}: {verdict(es)}")
    console.print(f"report: {out_dir / 'report.html'}")


def build_report(
    sweep_dir: Path | str,
    out_dir: Path | str | None = None,
    metrics: list[str] | None = None,
    n_resamples: int = N_RESAMPLES,
    quiet: bool = False,
    storage: str | None = None,
) -> Path:
    """Write summary.csv, summary.md, report.html and plots/*.png; returns the path of report.html."""
    sweep_dir = Path(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    a = analyse(sweep_dir, metrics, n_resamples=n_resamples, storage=storage)
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    quality = next((m for m in ("content.field_em", *a.metrics) if any(m in r.metrics for r in a.runs) and not m.startswith("cost.")), None)
    for k, (fact, effects) in enumerate(a.factorials):
        flat = [e for es in effects.values() for e in es]
        if flat:
            name = f"effects_{k}_{fact.a}_x_{fact.b}".replace("/", "_")
            a.figures.append((f"Effects: {fact.a} × {fact.b}", plots.effects_plot(flat, f"{fact.a} × {fact.b}", plot_dir / f"{name}.png")))
    shown = [r for r in a.runs if r.ok]
    caption = "Runs shown: " + "; ".join(f"{r.name}: {r.label}" for r in shown) if shown and shown[0].label != shown[0].name else None
    if quality:
        if fig := plots.budget_plot(a.runs, quality, plot_dir / "visual_budget.png"):
            a.figures.append((f"{quality} vs visual-token budget and cost (Pareto front ringed)", fig))
        if fig := plots.receipt_ratio_plot(a.runs, quality, plot_dir / "receipt_ratio.png"):
            a.figures.append((f"{quality} and leakage vs receipt ratio", fig))
    if fig := plots.tags_plot(a.runs, plot_dir / "failure_tags.png"):
        a.figures.append(("Failure tags per run", fig))
    if fig := plots.cycles_plot(a.runs, a.metrics, plot_dir / "cycles.png"):
        a.figures.append(("Metrics per cycle", fig))
    if caption:  # the plots of runs (not of effects) name each run by its label; the text says so too
        a.captions.update({fig: caption for title, fig in a.figures if not title.startswith("Effects")})
    write_csv(a, out / "summary.csv")
    write_markdown(a, out / "summary.md", n_resamples)
    html_path = out / "report.html"
    write_html(a, html_path, n_resamples)
    if not quiet:
        print_rich(a, out)
    return html_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vlmsweep.report", description="Compare the runs of a multirun, sweep or loop folder.")
    ap.add_argument("dir", type=Path, help="multirun folder (0/, 1/, ...), Optuna sweep folder, or loop run (cycle_N/)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: DIR/report)")
    ap.add_argument("--metrics", default=None, help="comma-separated metric names (default: the headline metrics)")
    ap.add_argument("--resamples", type=int, default=N_RESAMPLES, help="bootstrap resamples")
    ap.add_argument("--storage", default=None,
                    help="Optuna storage URL of the sweep's study (default: DIR/optuna.db, else the trials' sweep.storage)")
    ap.add_argument("--wandb", choices=("offline", "online"), default=None,
                    help="also log the summary table and the plots to a W&B run in the sweep's group")
    ap.add_argument("--wandb-project", default="vlmsweep")
    args = ap.parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        html_path = build_report(args.dir, args.out, metrics, n_resamples=args.resamples, storage=args.storage)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.wandb:
        log_to_wandb(args.dir, html_path.parent, mode=args.wandb, project=args.wandb_project)
    return 0


def log_to_wandb(sweep_dir: Path, report_dir: Path, mode: str, project: str) -> None:
    """The report's table and plots as one W&B run named "report" in the sweep's group (the runs of a
    multirun are grouped by their folder's name, which is the sweep folder). Never fatal."""
    import csv

    from vlmsweep.tracking import Tracker

    sweep_dir = Path(sweep_dir)
    try:
        import wandb

        run = wandb.init(project=project, group=sweep_dir.name, name="report", job_type="report",
                         dir=str(report_dir), mode=mode, reinit="finish_previous")
    except Exception as err:  # noqa: BLE001 - the files on disk are the report; W&B is a copy
        print(f"warning: W&B report run could not start ({err}); the report files are written", file=sys.stderr)
        return
    tracker = Tracker(run)
    with open(report_dir / "summary.csv", newline="", encoding="utf-8") as f:
        tracker.table("report/summary", list(csv.DictReader(f)))
    for png in sorted((report_dir / "plots").glob("*.png")):
        tracker.image(f"report/{png.stem}", png)
    tracker.finish()
