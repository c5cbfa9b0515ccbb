"""The report end to end: folders of hand-made runs -> CSV, Markdown, self-contained HTML, plots, CLI."""

from __future__ import annotations

import csv
import re
import subprocess
import sys

import pytest

from report_fakes import make_2x2, make_run
from vlmsweep.cli.report import main
from vlmsweep.report import build_report, load_runs

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
    html_path = build_report(root, quiet=True)
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
    }, extra={"tags.digit_flip": 2}, seeds=2)  # fmt: skip
    html_path = build_report(root, quiet=True)
    md = (root / "report" / "summary.md").read_text()
    assert "## 2×2: quant × scope" in md
    assert "2×2 quant × scope: n = 3 test samples (paired across runs), 2 seed(s) per cell" in md
    assert "scope moves content.field_em by +0.3 [+0.3, +0.3] (all vs llm: better)" in md
    assert "quant: no difference (bf16 vs nf4); each sample scored the same at both levels under every seed" in md
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
    build_report(root, out_dir=out, quiet=True)
    assert (out / "plots" / "visual_budget.png").stat().st_size > 1000
    md = (out / "summary.md").read_text()
    assert "best_value: 0.8" in md and "max_pixels.visual_tokens" in md.splitlines()[2]
    assert "cost.eval_seconds_per_sample ↓" in md


def test_receipt_ratio_plot(tmp_path):
    for k, r in enumerate((0.0, 0.25, 0.5)):
        make_run(tmp_path / str(k), overrides=[f"data_mix.receipt_ratio={r}"],
                 scores={"content.field_em": [0.5 + r / 4], "rate.leakage": [r / 2]})  # fmt: skip
    build_report(tmp_path, quiet=True)
    assert (tmp_path / "report" / "plots" / "receipt_ratio.png").stat().st_size > 1000


def test_loop_cycles_in_numeric_order(tmp_path):
    make_run(tmp_path, choices={"quant": "nf4"}, write_metrics=False)
    for c in (0, 1, 2, 10):
        make_run(tmp_path / f"cycle_{c}", scores={"content.field_em": [c / 10]})
    runs = load_runs(tmp_path)
    assert [r.name for r in runs] == ["cycle_0", "cycle_1", "cycle_2", "cycle_10"]
    assert runs[0].axes["quant"] == "nf4" and runs[3].axes["cycle"] == "10"
    build_report(tmp_path, quiet=True)
    assert (tmp_path / "report" / "plots" / "cycles.png").exists()


def test_broken_files_are_reported_not_fatal(tmp_path):
    run = make_run(tmp_path / "0", choices={"quant": "nf4"}, scores={"content.field_em": [1.0, 0.0]})
    with (run / "samples.jsonl").open("a") as fh:
        fh.write("{not json\n")
    (make_run(tmp_path / "1", choices={"quant": "bf16"}) / "metrics.json").write_text("{")
    runs = load_runs(tmp_path)
    assert runs[0].ok and "samples.jsonl line 3: invalid JSON" in runs[0].problems[0]
    assert runs[1].status == "failed" and "metrics.json" in runs[1].problems[0]
    page = build_report(tmp_path, quiet=True).read_text()
    assert "samples.jsonl line 3" in page


def test_cli(tmp_path, capsys):
    make_run(tmp_path / "0", choices={"quant": "nf4"}, scores={"content.field_em": [1.0]})
    make_run(tmp_path / "1", choices={"quant": "bf16"}, scores={"content.field_em": [0.0]})
    assert main([str(tmp_path), "--metrics", "content.field_em"]) == 0
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
    assert main([str(root), "--wandb", "offline"]) == 0
    run_dirs = list((root / "report" / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    images = {p.name.rsplit("_", 2)[0] for p in (run_dirs[0] / "files" / "media" / "images" / "report").glob("*.png")}
    assert "effects_0_quant_x_scope" in images  # every png of report/plots is logged
    tables = list((run_dirs[0] / "files" / "media" / "table").rglob("*.table.json"))
    assert tables and "run" in __import__("json").loads(tables[0].read_text())["columns"]


def test_one_value_per_run_metrics_get_no_interval_in_any_table(tmp_path):
    """Costs are one number per run: every table says "no interval (one value per run)", never a
    zero-width interval; a wall-clock batch average gets no better/worse verdict either."""
    root = tmp_path / "sweep"
    k = 0
    for quant, sec, mem in (("nf4", 1.1, 1800.0), ("bf16", 0.5, 1900.0)):
        for scope in ("llm", "all"):
            make_run(root / str(k), choices={"quant": quant, "scope": scope},
                     scores={"content.field_em": [0.2, 0.4, 0.6]},
                     metrics={"cost.eval_seconds_per_sample": sec + 0.01 * k, "cost.train_peak_memory_mb": mem + k})
            k += 1
    build_report(root, quiet=True)
    md = (root / "report" / "summary.md").read_text()
    rows = [line.split(" | ") for line in md.splitlines() if line.startswith("| cost.")]
    assert len(rows) == 6  # two costs x (quant, scope, interaction)
    for row in rows:
        assert row[4] == "no interval (one value per run)" and row[5].startswith(("no interval", "no verdict")), row
        assert row[6] == "—", row  # no minimum detectable effect without a spread
    # per-sample metrics keep their interval (over test samples: one seed, so no verdict)
    em = [line for line in md.splitlines() if line.startswith("| content.field_em |")]
    assert len(em) == 3 and all("[" in line and "no interval" not in line for line in em)
    # no zero-width interval anywhere for a metric with one value per run
    for low, high in re.findall(r"\[([-+0-9.e]+), ([-+0-9.e]+)\]", md):
        assert not (low == high and low not in ("+0", "-0")), md
    seconds = next(line for line in md.splitlines() if line.startswith("- **cost.eval_seconds_per_sample**"))
    assert "no interval and no verdict" in seconds and "better" not in seconds and "worse" not in seconds
    assert "cost.eval_seconds_per_sample ↓ (batch avg)" in md
    memory = next(line for line in md.splitlines() if line.startswith("- **cost.train_peak_memory_mb**"))
    assert "one value per run: no interval" in memory


def test_plots_and_csv_label_runs_by_what_differs(tmp_path):
    root = make_2x2(tmp_path / "sweep", {
        ("nf4", "llm"): [0.5], ("nf4", "all"): [0.8], ("bf16", "llm"): [0.5], ("bf16", "all"): [0.8],
    }, extra={"tags.parse_fail": 1})  # fmt: skip
    runs = load_runs(root)
    # seed and max_pixels are the same everywhere; the overrides quant=/scope= repeat the choices
    assert [r.label for r in runs] == ["quant=nf4 scope=llm", "quant=nf4 scope=all", "quant=bf16 scope=llm",
                                       "quant=bf16 scope=all"]
    build_report(root, quiet=True)
    assert [r["label"] for r in _rows(root / "report")] == [r.label for r in runs]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_sweep_folder_with_timestamped_trials_read_with_its_study(tmp_path):
    """An Optuna sweep folder as the sweeper leaves it: trials in timestamped folders from two invocations,
    a failed trial, a trial left RUNNING by a killed worker, a trial whose folder is elsewhere; the study
    numbers, states and values them. Two budgets tie: no best."""
    import optuna

    from vlmsweep.sweep.sweeper import HEARTBEAT, WORKER, host_key, set_system_attr

    root = tmp_path / "sweeps" / "max_pixels"
    root.mkdir(parents=True)
    study = optuna.create_study(study_name="max_pixels", storage=f"sqlite:///{root}/optuna.db", direction="maximize")
    dist = optuna.distributions.CategoricalDistribution(["256tok", "512tok", "768tok", "1024tok"])
    plan = [("20261129-101500-000001", "512tok", "ok", 0.0), ("20261129-101530-000002", "256tok", "ok", 0.0),
            ("20261129-120000-000003", "768tok", "failed", None), ("20261129-120100-000004", "768tok", "running", None)]
    for folder, budget, status, value in plan:
        study.enqueue_trial({"max_pixels": budget})
        trial = study.ask({"max_pixels": dist})
        trial.set_user_attr("run_dir", f"/elsewhere/outputs/sweeps/max_pixels/{folder}")  # moved since
        tokens = int(budget[:-3])
        sweep = {"sweep": {"name": "max_pixels", "objective": "content.field_em"}}
        make_run(root / folder, choices={"max_pixels": budget, "sweep": "max_pixels"},
                 overrides=[f"max_pixels={budget}", "+sweep=max_pixels", "sweep.trials=4"], status=status,
                 error="CUDA out of memory" if status == "failed" else None,
                 scores={"content.field_em": [value]} if value is not None else None,
                 metrics={"cost.visual_tokens_per_image": tokens * 0.9, "cost.eval_seconds_per_sample": tokens / 256},
                 write_metrics=value is not None)
        (root / folder / "config.yaml").write_text(__import__("yaml").safe_dump(sweep))
        info = __import__("json").loads((root / folder / "run_info.json").read_text())
        (root / folder / "run_info.json").write_text(__import__("json").dumps({**info, "visual_tokens": tokens}))
        if status == "ok":
            study.tell(trial, value)
        elif status == "failed":
            trial.set_user_attr("error", "RuntimeError: CUDA out of memory")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:  # its worker was killed: a pid of this machine that has exited
            child = subprocess.Popen([sys.executable, "-c", "pass"])
            child.wait()
            set_system_attr(study, trial, WORKER, {"host": host_key(), "pid": child.pid})
            set_system_attr(study, trial, HEARTBEAT, 0.0)
    study.enqueue_trial({"max_pixels": "1024tok"})
    ghost = study.ask({"max_pixels": dist})  # told by a worker whose folder is on another machine
    ghost.set_user_attr("run_dir", "/node7/outputs/sweeps/max_pixels/20261129-130000-000005")
    study.tell(ghost, 0.0)

    runs = load_runs(root)
    assert [r.name for r in runs] == ["trial 0", "trial 1", "trial 2", "trial 3", "trial 4"]
    assert [r.status for r in runs] == ["ok", "ok", "failed", "running", "missing"]
    assert [r.label for r in runs][:2] == ["max_pixels=512tok", "max_pixels=256tok"]
    assert "exited" in runs[3].error and "runs it again" in runs[3].error
    assert "sweep.trials" not in runs[0].axes  # how many trials were asked for is not an axis
    html_path = build_report(root, quiet=True)
    md = (root / "report" / "summary.md").read_text()
    assert "# Optuna study max_pixels: 5 trials" in md
    assert "- trials: 3 COMPLETE, 1 FAIL, 1 RUNNING" in md
    assert "trials score 0: no best" in md and "best:" not in md
    assert "CUDA out of memory" in md and "no run folder under" in md
    assert (root / "report" / "plots" / "visual_budget.png").stat().st_size > 1000
    assert "max_pixels=512tok" in html_path.read_text()


def test_a_runs_report_md_says_what_was_evaluated(tmp_path):
    """report.md opens with model, adapter, data and decoding from the run's config.yaml; on the embedded
    model one sentence on what its numbers mean. Without a config (outputs scored elsewhere) no header."""
    import yaml

    from vlmsweep.evaluate.outputs import EMBEDDED_MEANING, describe_evaluation, render_report, write_outputs

    cfg = {"model": {"name": "tiny", "source": "tiny", "path": None, "adapter": None}, "quant": {"name": "nf4"},
           "scope": {"name": "all"}, "train": {"enabled": True}, "eval": {"max_new_tokens": 64},
           "data": {"seed": 3, "test_size": 8, "mining_size": 4, "noise": "scan", "test_manifest": None},
           "data_mix": {"name": "medical_only"}, "decoding": {"name": "json_schema"}, "domain_tag": {"name": "none"},
           "max_pixels": {"visual_tokens": 512}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    write_outputs(tmp_path / "cycle_1" / "mining", {}, [], worst_per_tag=1)  # a loop cycle's mining pool
    text = (tmp_path / "cycle_1" / "mining" / "report.md").read_text()
    assert "- model: tiny (built locally), quant nf4, scope all" in text
    assert "- adapter: LoRA trained in this run" in text
    assert "- data: synthetic mining split: 4 samples, data seed 3, mix medical_only, noise scan" in text
    assert "- decoding: json_schema, greedy, at most 64 new tokens; at most 512 visual tokens per image" in text
    assert EMBEDDED_MEANING in text
    real = dict(cfg, model={"name": "qwen2_vl_2b", "source": "pretrained", "path": "/models/q", "adapter": "/a"},
                train={"enabled": False}, data=dict(cfg["data"], test_manifest="my/test.jsonl"))
    lines = describe_evaluation(real, "test")
    assert "- adapter: /a" in lines and "- data: manifest my/test.jsonl" in lines and EMBEDDED_MEANING not in lines
    assert render_report({}, []).startswith("# Evaluation\n\n0 samples")
