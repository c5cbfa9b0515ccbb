"""Comparison report of many runs: summary.csv / summary.md / self-contained report.html / plots, and the CLI."""

from __future__ import annotations

import base64
import csv
import html
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmsweep.report import plots
from vlmsweep.report.effects import (
    Comparison,
    Effect,
    Factorial,
    comparison_effect,
    factorial_effects,
    find_comparisons,
    find_factorials,
    verdict,
)
from vlmsweep.metrics import arrow, higher_is_better, is_known, is_wall_clock
from vlmsweep.report.runs import HEADLINE_METRICS, RunResult, load_sweep, read_optuna_results, sweep_axes
from vlmsweep.report.study import StudyRecord


@dataclass
class Analysis:
    runs: list[RunResult]
    axes: list[str]
    metrics: list[str]
    factorials: list[tuple[Factorial, dict[str, list[Effect]]]] = field(default_factory=list)
    comparisons: list[tuple[Comparison, dict[str, list[Effect]]]] = field(default_factory=list)  # two-level axes outside a 2x2
    optuna: dict[str, Any] | None = None  # optimization_results.yaml, when no study could be read
    study: StudyRecord | None = None
    figures: list[tuple[str, Path]] = field(default_factory=list)
    captions: dict[Path, str] = field(default_factory=dict)  # figure -> the runs it shows, by label (text, searchable)


def headline_metrics(runs: list[RunResult]) -> list[str]:
    present = {k for r in runs for k in r.metrics}
    out = [m for m in HEADLINE_METRICS if m in present]
    out += sorted(k for k in present if k.startswith("cost.") and is_known(k))  # an older run's unknown cost: left out
    return out


def analyse(sweep_dir: Path, metrics: list[str] | None = None, storage: str | None = None) -> Analysis:
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
    outcomes = [m for m in chosen if not m.startswith("cost.visual_tokens")]  # a budget, not an outcome
    factorials = find_factorials(runs, axes)
    for fact in factorials:
        effects = {m: found for m in outcomes if (found := factorial_effects(fact, m)) is not None}
        result.factorials.append((fact, effects))
    for comp in find_comparisons(runs, axes, factorials):
        effects = {m: [found] for m in outcomes if (found := comparison_effect(comp, m)) is not None}
        result.comparisons.append((comp, effects))
    for design, effects in result.factorials + result.comparisons:
        mark_unmeasurable(design.cells, effects)
    return result


# Why a scope effect on content says nothing when every run read an OCR hint: the answers a reader gets right come from
# the text in the prompt, so training the vision tower or not cannot show whether it helps reading pixels
HINT_HIDES_SCOPE = ("not measurable with ocr_hint: every run read the page's OCR text in its prompt, which no vision "
                    "layer reads; compare scope with ocr_hint=none")


def mark_unmeasurable(cells: list[list[RunResult]], effects: dict[str, list[Effect]]) -> None:
    """Label a scope effect (main or interaction) on a content metric as unmeasurable when every run had an OCR hint,
    instead of letting its null read as an answer."""
    runs = [r for cell in cells for r in cell]
    if not runs or any(((r.config.get("ocr_hint") or {}).get("engine") or "none") == "none" for r in runs):
        return
    for m, es in effects.items():
        if m.startswith("content."):
            for e in es:
                if "scope" in e.name.split(" x "):
                    e.unmeasurable = HINT_HIDES_SCOPE


def design_lines(a: Analysis) -> list[str]:
    """The report's header on its comparisons: test samples, seeds per cell, and the minimum detectable effect
    of each metric's first contrast (what a true effect must reach to be found 4 times in 5)."""
    out = []
    for title, effects in [(f"2×2 {f.a} × {f.b}", e) for f, e in a.factorials] + [(c.axis, e) for c, e in a.comparisons]:
        first = [es[0] for es in effects.values() if es and not es[0].no_interval]
        if not first:
            continue
        n, seeds = max(e.n_samples for e in first), max(e.n_seeds for e in first)
        noise = ("test samples only: one training seed per cell, so no effect is called found; add seeds, "
                 "e.g. -m ... seed=0,1,2" if seeds < 2 else "intervals cover test-sample and training-seed noise")
        mdes = ", ".join(f"{e.metric} {e.mde:.2g}" for e in first if e.mde == e.mde)
        out.append(f"{title}: n = {n} test samples (paired across runs), {seeds} seed(s) per cell; {noise}. "
                   f"Minimum detectable effect (80% power, 5% two-sided): {mdes}.")
    return out + hint_lines(a)


def hint_lines(a: Analysis) -> list[str]:
    """What an OCR hint (ocr_hint) makes of the runs' effects: the mechanism named, and a budget effect under
    ocr_hint.resolution=budget named as the OCR engine's too."""
    hinted = {}
    for r in a.runs:
        h = r.config.get("ocr_hint") or {}
        if h.get("engine", "none") != "none":
            hinted.setdefault((h["engine"], h.get("resolution", "page")), []).append(r.label or r.name)
    out = []
    for (engine, resolution), runs in sorted(hinted.items()):
        out.append(f"OCR hint: {len(runs)} run(s) prompted with the page's {engine} text (ocr_hint.resolution="
                   f"{resolution}): their answers come from the image and that text, so a content effect involving "
                   "them is the OCR engine's as much as the model's"
                   + ("; with resolution=budget the engine read each page at the run's max_pixels, so a visual-token "
                      "budget effect among them includes the OCR engine's, not Qwen2-VL's alone" if resolution == "budget"
                      else ""))
    return out


def control_lines(a: Analysis) -> list[str]:
    """A positive control (eval.perturb): the injected size beside the estimate, and whether the report found it."""
    out = []
    for _, effects in a.factorials + a.comparisons:
        for es in effects.values():
            for e in es:
                if e.injected is None or abs(e.injected) < 1e-12:
                    continue
                state = ("found, sign right, interval covers it" if e.found and (e.estimate > 0) == (e.injected > 0)
                         and e.covers_injected else "NOT recovered" + ("" if e.found else " (not found)"))
                out.append(f"{e.name} on {e.metric}: injected {_signed(e.injected)}, estimated {_signed(e.estimate)} "
                           f"{e.interval_text}: {state}")
    return out


def _signed(v: float) -> str:
    return f"{v:+.4g}"


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


def _column(metric: str) -> str:
    return f"{metric} {arrow(metric)}".rstrip() + (" (batch avg)" if is_wall_clock(metric) else "")


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
    header = ["metric", "effect", "contrast", "estimate", "95% CI", "verdict", "MDE", "samples", "seeds"]
    rows = [
        [m, e.name, e.contrast, f"{e.estimate:+.4g}", e.interval_text, e.verdict_text,
         "—" if e.mde != e.mde else f"{e.mde:.3g}", str(e.n_samples), str(e.n_seeds)]
        for m, es in effects.items()
        for e in es
    ]
    return header, rows


CONVENTION = (
    "Main effect of a factor = mean over the other factor's two levels of (other level − baseline level); "
    "interaction = (A's effect with B at its other level) − (A's effect with B at baseline), a difference of "
    "differences. The baseline level is the one in the lowest-numbered run. Intervals: Student-t 95% over two "
    "crossed sources of noise, the test samples (paired across runs) and the training seeds (replicate runs "
    "within a cell), variances by moments pooled over the cells with Satterthwaite degrees of freedom; their "
    "false-positive rate is measured by `python -m vlmsweep.report.calibrate` on an A/A multirun. 'Found' = the "
    "interval excludes 0 and covers seed noise (at least two seeds per cell); with one seed an interval covers "
    "test samples only and gets no verdict. MDE = minimum detectable effect (80% power, 5% two-sided). "
    "↑/↓: higher/lower is better."
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
    if len(st.directions) > 1:
        goal = "objectives " + ", ".join(f"{n} ({d})" for n, d in zip(st.metric_names, st.directions))
    else:
        goal = f"objective {objective or '?'} ({st.direction})"
    return [
        f"study {st.name} ({st.storage}), {goal}",
        "trials: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())),
        st.best(),
    ]


def _title(a: Analysis) -> str:
    if a.study is not None:
        return f"Optuna study {a.study.name}: {len(a.runs)} trials"
    return f"Comparison report: {len(a.runs)} runs"


def _sections(a: Analysis) -> list[tuple[str, str, list[str], dict[str, list[Effect]]]]:
    """(title, file-name slug, averaged-over axes, effects) of every 2x2 and every two-level comparison."""
    return ([(f"2×2: {f.a} × {f.b}", f"{f.a}_x_{f.b}", f.averaged_over, e) for f, e in a.factorials]
            + [(f"{c.axis}: {c.levels[1]} vs {c.levels[0]}", c.axis, c.averaged_over, e) for c, e in a.comparisons])


def write_markdown(a: Analysis, path: Path) -> None:
    out = [f"# {_title(a)}", ""]
    out += ["Varying axes: " + (", ".join(a.axes) if a.axes else "none"), ""]
    out += [f"- {line}" for line in design_lines(a)] + ([""] if design_lines(a) else [])
    out += [f"- positive control: {line}" for line in control_lines(a)] + ([""] if control_lines(a) else [])
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
    for title, _, averaged_over, effects in _sections(a):
        out += [f"## {title}", ""]
        if averaged_over:
            out += [f"Averaged over the other varying axes: {', '.join(averaged_over)}.", ""]
        out += [CONVENTION, ""]
        out += [f"- **{m}** {arrow(m)}: {verdict(es)}" for m, es in effects.items()] + [""]
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


def write_html(a: Analysis, path: Path) -> None:
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
    header_lines = design_lines(a) + [f"positive control: {line}" for line in control_lines(a)]
    if header_lines:
        parts.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in header_lines) + "</ul>")
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
    for title, _, averaged_over, effects in _sections(a):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if averaged_over:
            parts.append(f"<p>Averaged over the other varying axes: {html.escape(', '.join(averaged_over))}.</p>")
        parts.append(f"<p><small>{html.escape(CONVENTION)}</small></p><ul>")
        parts += [f"<li><b>{html.escape(m)}</b> {arrow(m)}: {html.escape(verdict(es))}</li>" for m, es in effects.items()]
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
    for line in design_lines(a):
        console.print(line, markup=False)
    for line in control_lines(a):
        console.print(f"positive control: {line}", markup=False)
    for title, _, _, effects in _sections(a):
        console.print(f"[bold]{title}[/bold]")
        for m, es in effects.items():
            console.print(f"  {m} {arrow(m)}: {verdict(es)}", markup=False)
    console.print(f"report: {out_dir / 'report.html'}")


def build_report(
    sweep_dir: Path | str,
    out_dir: Path | str | None = None,
    metrics: list[str] | None = None,
    quiet: bool = False,
    storage: str | None = None,
) -> Path:
    """Write summary.csv, summary.md, report.html and plots/*.png; returns the path of report.html."""
    sweep_dir = Path(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    a = analyse(sweep_dir, metrics, storage=storage)
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    quality = next((m for m in ("content.field_em", *a.metrics) if any(m in r.metrics for r in a.runs) and not m.startswith("cost.")), None)
    for k, (title, slug, _, effects) in enumerate(_sections(a)):
        flat = [e for es in effects.values() for e in es]
        if flat:
            name = f"effects_{k}_{slug}".replace("/", "_")
            a.figures.append((f"Effects: {title}", plots.effects_plot(flat, title, plot_dir / f"{name}.png")))
    shown = [r for r in a.runs if r.ok]
    caption = "Runs shown: " + "; ".join(f"{r.name}: {r.label}" for r in shown) if shown and shown[0].label != shown[0].name else None
    if quality:
        if fig := plots.budget_plot(a.runs, quality, plot_dir / "visual_budget.png"):
            a.figures.append((f"{quality} vs visual-token budget and cost (Pareto front ringed)", fig))
        if fig := plots.receipt_ratio_plot(a.runs, quality, plot_dir / "receipt_ratio.png"):
            a.figures.append((f"{quality} and leakage vs receipt ratio", fig))
    if a.study is not None and (fig := plots.pareto_plot(a.study, plot_dir / "pareto_front.png")):
        a.figures.append((f"Pareto front of study {a.study.name} (Optuna's non-dominated trials ringed)", fig))
    if fig := plots.tags_plot(a.runs, plot_dir / "failure_tags.png"):
        a.figures.append(("Failure tags per run", fig))
    if fig := plots.cycles_plot(a.runs, a.metrics, plot_dir / "cycles.png"):
        a.figures.append(("Metrics per cycle", fig))
    if caption:  # the plots of runs (not of effects) name each run by its label; the text says so too
        a.captions.update({fig: caption for title, fig in a.figures if not title.startswith("Effects")})
    write_csv(a, out / "summary.csv")
    write_markdown(a, out / "summary.md")
    html_path = out / "report.html"
    write_html(a, html_path)
    if not quiet:
        print_rich(a, out)
    return html_path


def effect_records(a: Analysis) -> list[dict[str, Any]]:
    """Every effect of the report as one flat row (what the W&B report run logs as its effects table)."""
    return [
        {"comparison": title, "averaged_over": ", ".join(averaged_over), "metric": m,
         "higher_is_better": higher_is_better(m), "effect": e.name, "contrast": e.contrast, "estimate": e.estimate,
         "low": None if e.no_interval else e.low, "high": None if e.no_interval else e.high,
         "interval": e.interval_text, "verdict": e.verdict_text, "mde": None if e.mde != e.mde else e.mde,
         "n_samples": e.n_samples, "seeds_per_cell": e.n_seeds, "noise": e.noise}
        for title, _, averaged_over, effects in _sections(a)
        for m, es in effects.items()
        for e in es
    ]


def log_to_wandb(sweep_dir: Path, report_dir: Path, mode: str, project: str | None = None, entity: str | None = None,
                 metrics: list[str] | None = None, storage: str | None = None) -> None:
    """The report as data in one W&B run named "report" (job_type report) in the experiment's group, in the
    runs' tracker.project / tracker.entity unless given: the effects table (a W&B panel plots it beside the
    runs), the summary table, the plots, and report.html as an artifact. Never fatal."""
    import re

    from vlmsweep.pipeline.tracking import Tracker, experiment_group

    sweep_dir = Path(sweep_dir)
    try:
        import wandb

        a = analyse(sweep_dir, metrics, storage=storage)
        tracker_cfg = next((r.config.get("tracker") for r in a.runs if r.config.get("tracker")), None) or {}
        group = experiment_group(sweep_dir, tracker_cfg.get("group"))
        run = wandb.init(project=project or tracker_cfg.get("project") or "vlmsweep",
                         entity=entity or tracker_cfg.get("entity"), group=group, name="report", job_type="report",
                         dir=str(report_dir), mode=mode, reinit="finish_previous")
    except Exception as err:  # noqa: BLE001 - the files on disk are the report; W&B is a copy
        print(f"warning: W&B report run could not start ({err}); the report files are written", file=sys.stderr)
        return
    tracker = Tracker(run)
    tracker.table("report/effects", effect_records(a))
    with open(report_dir / "summary.csv", newline="", encoding="utf-8") as f:
        tracker.table("report/summary", list(csv.DictReader(f)))
    for png in sorted((report_dir / "plots").glob("*.png")):
        tracker.image(f"report/{png.stem}", png)
    tracker.artifact(f"report-{re.sub(r'[^A-Za-z0-9_.-]+', '-', group)}", "report", [report_dir / "report.html"])
    tracker.finish()
