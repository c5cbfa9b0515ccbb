"""The report end to end: folders of hand-made runs -> CSV, Markdown, self-contained HTML, plots, CLI."""

from __future__ import annotations

import csv
import re

import pytest

from report_fakes import make_2x2, make_run
from vlmsweep.report import build_report, load_runs, main

B = 200


def _rows(out):
    with (out / "summary.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_2x2_report_with_a_failed_and_a_missing_run(tmp_path):
    root = make_2x2(tmp_path / "sweep", {
        ("nf4", "llm"): [0.5, 0.5], ("nf4", "all"): [0.8, 0.8], ("bf16", "llm"): [0.5, 0.5], ("bf16", "all"): [0.8, 0.8],
    }, extra={"tags.digit_flip": 3, "tags.parse_fail": 1, "contract.strict_parse_rate": 0.9})  # fmt: skip
    make_run(root / "4", choices={"quant": "fp16", "scope": "llm"}, status="failed", error="CUDA out of memory", write_metrics=False)
    make_run(root / "5", choices={"quant": "fp32", "scope": "llm"}, write_metrics=False)  # crashed before writing
    html_path = build_report(root, n_resamples=B, quiet=True)
    out = root / "report"
    assert html_path == out / "report.html"
    rows = _rows(out)
    assert [r["run"] for r in rows] == ["0", "1", "2", "3", "4", "5"]
    assert rows[4]["status"] == "failed" and rows[4]["error"] == "CUDA out of memory"
    assert rows[5]["status"] == "missing" and rows[5]["error"] == "metrics.json missing"
    assert float(rows[1]["content.field_em"]) == pytest.approx(0.8)
    md = (out / "summary.md").read_text()
    # the failed runs are listed; the four successful ones still make the 2x2
    assert "## 2×2: quant × scope" in md and "Averaged over" not in md
    assert "- **4** (" in md and "FAILED: CUDA out of memory" in md
    page = html_path.read_text()
    assert "CUDA out of memory" in page and "metrics.json missing" in page
    assert (out / "plots" / "failure_tags.png").stat().st_size > 1000


def test_2x2_verdict_html_and_plots(tmp_path):
    root = make_2x2(tmp_path / "sweep", {
        ("nf4", "llm"): [0.2, 0.4, 0.6], ("nf4", "all"): [0.5, 0.7, 0.9],
        ("bf16", "llm"): [0.2, 0.4, 0.6], ("bf16", "all"): [0.5, 0.7, 0.9],
    }, extra={"tags.digit_flip": 2})  # fmt: skip
    html_path = build_report(root, n_resamples=B, quiet=True)
    md = (root / "report" / "summary.md").read_text()
    assert "## 2×2: quant × scope" in md
    assert "scope moves content.field_em by +0.3 [+0.3, +0.3] (all vs llm: better)" in md
    assert "quant's effect is within noise (+0 [+0, +0], bf16 vs nf4)" in md
    page = html_path.read_text()
    # self-contained: no external stylesheet, script or image; every image is an inline PNG
    assert not re.search(r"<(link|script)\b", page)
    srcs = re.findall(r"src='([^']*)'", page) + re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page
    plots = sorted(p.name for p in (root / "report" / "plots").glob("*.png"))
    assert plots == ["effects_0_quant_x_scope.png", "failure_tags.png"]
    assert len(srcs) == len(plots)


def test_visual_budget_sweep_plots_pareto_and_optuna(tmp_path):
    root = tmp_path / "optuna"
    # (visual tokens, field_em, seconds/sample): 512 is dominated by 256 (cheaper and as good)
    for k, (v, q, sec) in enumerate(((256, 0.6, 1.0), (512, 0.6, 1.5), (1024, 0.8, 2.0))):
        make_run(root / str(k), choices={"max_pixels": "free"}, overrides=[f"max_pixels.visual_tokens={v}"],
                 scores={"content.field_em": [q]},
                 metrics={"cost.visual_tokens_per_image": v * 0.9, "cost.eval_seconds_per_sample": sec})  # fmt: skip
    (root / "optimization_results.yaml").write_text("name: optuna\nbest_params:\n  max_pixels.visual_tokens: 1024\nbest_value: 0.8\n")
    out = tmp_path / "elsewhere"
    build_report(root, out_dir=out, n_resamples=B, quiet=True)
    assert (out / "plots" / "visual_budget.png").stat().st_size > 1000
    md = (out / "summary.md").read_text()
    assert "best_value: 0.8" in md and "max_pixels.visual_tokens" in md.splitlines()[2]
    assert "cost.eval_seconds_per_sample ↓" in md


def test_receipt_ratio_plot(tmp_path):
    for k, r in enumerate((0.0, 0.25, 0.5)):
        make_run(tmp_path / str(k), overrides=[f"data_mix.receipt_ratio={r}"],
                 scores={"content.field_em": [0.5 + r / 4], "rate.leakage": [r / 2]})  # fmt: skip
    build_report(tmp_path, n_resamples=B, quiet=True)
    assert (tmp_path / "report" / "plots" / "receipt_ratio.png").stat().st_size > 1000


def test_loop_cycles_in_numeric_order(tmp_path):
    make_run(tmp_path, choices={"quant": "nf4"}, write_metrics=False)
    for c in (0, 1, 2, 10):
        make_run(tmp_path / f"cycle_{c}", scores={"content.field_em": [c / 10]})
    runs = load_runs(tmp_path)
    assert [r.name for r in runs] == ["cycle_0", "cycle_1", "cycle_2", "cycle_10"]
    assert runs[0].axes["quant"] == "nf4" and runs[3].axes["cycle"] == "10"
    build_report(tmp_path, n_resamples=B, quiet=True)
    assert (tmp_path / "report" / "plots" / "cycles.png").exists()


def test_broken_files_are_reported_not_fatal(tmp_path):
    run = make_run(tmp_path / "0", choices={"quant": "nf4"}, scores={"content.field_em": [1.0, 0.0]})
    with (run / "samples.jsonl").open("a") as fh:
        fh.write("{not json\n")
    (make_run(tmp_path / "1", choices={"quant": "bf16"}) / "metrics.json").write_text("{")
    runs = load_runs(tmp_path)
    assert runs[0].ok and "samples.jsonl line 3: invalid JSON" in runs[0].problems[0]
    assert runs[1].status == "failed" and "metrics.json" in runs[1].problems[0]
    page = build_report(tmp_path, n_resamples=B, quiet=True).read_text()
    assert "samples.jsonl line 3" in page


def test_cli(tmp_path, capsys):
    make_run(tmp_path / "0", choices={"quant": "nf4"}, scores={"content.field_em": [1.0]})
    make_run(tmp_path / "1", choices={"quant": "bf16"}, scores={"content.field_em": [0.0]})
    assert main([str(tmp_path), "--metrics", "content.field_em", "--resamples", "50"]) == 0
    assert "report.html" in capsys.readouterr().out
    assert main([str(tmp_path), "--metrics", "content.nope"]) == 2
    assert "content.nope not in any run's metrics.json" in capsys.readouterr().err
    assert main([str(tmp_path / "absent")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no run folders found" in capsys.readouterr().err


def test_report_plots_and_table_go_to_an_offline_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    root = make_2x2(tmp_path / "sweep", {
        ("nf4", "llm"): [0.5, 0.5], ("nf4", "all"): [0.8, 0.8], ("bf16", "llm"): [0.5, 0.5], ("bf16", "all"): [0.8, 0.8],
    })  # fmt: skip
    assert main([str(root), "--resamples", "50", "--wandb", "offline"]) == 0
    run_dirs = list((root / "report" / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    images = {p.name.rsplit("_", 2)[0] for p in (run_dirs[0] / "files" / "media" / "images" / "report").glob("*.png")}
    assert "effects_0_quant_x_scope" in images  # every png of report/plots is logged
    tables = list((run_dirs[0] / "files" / "media" / "table").rglob("*.table.json"))
    assert tables and "run" in __import__("json").loads(tables[0].read_text())["columns"]
