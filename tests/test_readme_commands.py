"""Every `python -m` command that README.md or a page of the manual (docs/*.md) shows runs here, as a user types
it, in a subprocess, from a folder outside the checkout - with small overrides for speed and its placeholders (DIR,
PATH, ...) filled with real folders. The commands are read out of those pages, so the two cannot drift apart: a new
command without an entry in STEPS fails `test_every_readme_command_has_a_step`. A command shown on several pages is
one step: it runs once - once in the whole session, whichever xdist worker asks first (the user's folder and what
each step printed are shared between workers, under file locks)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from filelock import FileLock

from conftest import made_once
from test_data_sroie import SAMPLE as SROIE_SAMPLE  # the sample's location (and why it may be absent) live there
from test_data_sroie import needs_sample
from userdata import REPO, draw, run_dir, samples, vlmsweep, write_user_data

README = REPO / "README.md"
DOCS = REPO / "docs"


def documented_pages() -> list[Path]:
    """README.md and every Markdown page of the manual, the pages whose commands users copy."""
    return [README, *sorted(DOCS.rglob("*.md"))]

# A few steps on a couple of samples with short answers: each run is seconds of work on 2 cores.
QUICK = ["train.max_steps=1", "train.batch_size=2", "train.logging_steps=1", "data.train_size=2", "data.test_size=1",
         "data.mining_size=2", "data.regression_size=1", "eval.batch_size=2", "eval.max_new_tokens=8", "tracker=none"]
# Two budgets instead of five (a 1280-token trial costs minutes on a CPU). Quoted: Hydra refuses to sweep its own
# config from the command line, but takes the search space as a string value.
SMALL_BUDGETS = 'hydra.sweeper.params.max_pixels="choice(256tok,512tok)"'
# Sweeps whose search space is all this step checks: the objective is the training loss, so a trial is one step.
NO_EVAL = ["eval.enabled=false", "sweep.objective=train.loss"]
NO_EVAL_WHY = ("the sweep's own search space, scored on the training loss: the sweep with evaluation runs in the "
               "config-dir sweep step and in tests/test_sweeps.py")
DATA = "data.train_manifest=my_data/train.jsonl data.test_manifest=my_data/test.jsonl"  # the user's manifests
# The per-domain multirun's speed overrides: 4 training and 3 test samples, so each group has a page of each
PER_DOMAIN_RUN = [x for x in QUICK if not x.startswith(("data.train_size", "data.test_size"))] + \
    ["data.train_size=4", "data.test_size=3"]


def readme_commands(text: str) -> list[str]:
    """Each distinct `python -m ...` command of the README: inline code or a code-block line, with `\\`
    continuations joined and trailing `# comments` dropped."""
    found: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        for m in re.finditer(r"python -m [^`|]*", line):
            cmd = m.group(0)
            while cmd.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd = cmd.rstrip()[:-1] + " " + lines[i].strip()
            cmd = re.sub(r"\s+#.*$", "", cmd)
            cmd = re.split(r"\s+&&\s+", cmd)[0]
            cmd = " ".join(cmd.split()).rstrip(".,;:")
            if cmd not in found:
                found.append(cmd)
        i += 1
    return found


@dataclass
class Step:
    """How a README command runs here: placeholder -> value, extra overrides, and what to check."""

    replace: dict[str, str] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)
    check: str | None = None  # name of a check function below
    why: str = ""  # why the command runs with more than speed overrides (shown on failure)
    needs_tesseract: bool = False  # the OCR baseline: skipped, naming the Debian packages, without Tesseract
    # The commands whose folders this one reads (RUN_DIR, DIR, ...): `made` runs them first in this workspace, once,
    # whichever test asks first - no step relies on the order or the worker pytest gives it.
    needs: tuple[str, ...] = ()
    # Steps with the same `alone` name write into the same folder (the report of one multirun): they run and are
    # checked one at a time, whichever workers they land on.
    alone: str = ""


# The README's commands ({ws} = the workspace). A step that reads another's folder names that command in `needs`.
DEFAULT_RUN = "python -m vlmsweep"  # the steps that other steps read from (their `needs`)
OWN_RUN = "python -m vlmsweep data.train_manifest=my_data/train.jsonl data.test_manifest=my_data/test.jsonl"
TWO_BY_TWO = "python -m vlmsweep -m quant=nf4,bf16 scope=llm,all"
AA = "python -m vlmsweep -m 'seed=range(8)'"
CONTROL = "python -m vlmsweep -m eval.perturb.blank=0,0.5 seed=0,1,2"
PREDICT_SCANS = "python -m vlmsweep.predict RUN_DIR/adapter scans/ --domain prescription_ko --out predictions.jsonl"
EXPORT_MERGED = "python -m vlmsweep.export RUN_DIR/adapter --out merged"
PER_DOMAIN = "python -m vlmsweep -m adapters=single,per_domain"
SROIE = "python -m vlmsweep.data sroie --root SROIE/ --out data/sroie"
EXP1 = "python -m vlmsweep +experiment=exp1 model.path=/models/Qwen2-VL-2B-Instruct-bnb-4bit $DATA"

STEPS: dict[str, Step | str] = {
    "python -m pytest -q": "the test command itself: this suite is what it runs",
    "python -m pytest -q -n 0": "the test command in one process: this suite is what it runs",
    "python -m pytest -q --shuffle SEED": "the test command in a shuffled order: this suite is what it runs",
    "python -m vlmsweep": Step(extra=QUICK + ["hydra.run.dir={ws}/runs/default"], check="run_ok"),
    "python -m vlmsweep train.eval_every=10 train.select=content.field_em":
        "made small (20 steps, 2 validation pages) in tests/test_validation.py::"
        "test_eval_every_and_select_keep_the_adapter_of_the_recorded_step_and_test_it, which checks its history and "
        "that the kept adapter is the selected step's checkpoint",
    "python -m vlmsweep.data check my_data/train.jsonl": Step(check="check_ok"),
    "python -m vlmsweep.data check MANIFEST": Step(replace={"MANIFEST": "my_data/test.jsonl"}, check="check_ok"),
    "python -m vlmsweep data.train_manifest=my_data/train.jsonl data.test_manifest=my_data/test.jsonl":
        Step(extra=QUICK + ["hydra.run.dir={ws}/runs/own"], check="own_data"),
    "python -m vlmsweep train.enabled=false model.adapter=RUN_DIR/adapter data.test_manifest=my_data/test.jsonl":
        Step(needs=(OWN_RUN,), replace={"RUN_DIR": "{ws}/runs/own"}, extra=QUICK + ["hydra.run.dir={ws}/runs/own_eval"],
             check="same_as_own"),
    "python -m vlmsweep loop.cycles=1 data.train_manifest=my_data/train.jsonl data.test_manifest=my_data/test.jsonl "
    "data.mining_manifest=my_data/pool.jsonl data.regression_manifest=my_data/regression.jsonl":
        Step(extra=QUICK + ["loop.mine_per_tag=1", "loop.synth_per_tag=1", "hydra.run.dir={ws}/runs/own_loop"],
             check="own_loop"),
    "python -m vlmsweep --config-dir my_conf +experiment=my_rx": Step(extra=QUICK + ["hydra.run.dir={ws}/runs/mine"],
                                                                      check="user_ids"),
    "python -m vlmsweep train.enabled=false model.adapter=PATH":
        Step(needs=(DEFAULT_RUN,), replace={"PATH": "{ws}/runs/default/adapter"}, extra=QUICK + ["hydra.run.dir={ws}/runs/eval"],
             check="same_as_default"),
    "python -m vlmsweep -m quant=nf4,bf16 scope=llm,all": Step(extra=QUICK + ["hydra.sweep.dir={ws}/multirun/2x2"],
                                                              check="four_runs"),
    "python -m vlmsweep.report outputs/multirun/DATE/TIME":
        "the `python -m vlmsweep.report DIR` step of tests/test_readme_commands.py runs this command on the 2x2's folder",
    "python -m vlmsweep.report DIR": Step(needs=(TWO_BY_TWO,), replace={"DIR": "{ws}/multirun/2x2"}, check="report",
                                          alone="2x2-report"),
    "python -m vlmsweep.report DIR --wandb offline": Step(needs=(TWO_BY_TWO,), replace={"DIR": "{ws}/multirun/2x2"},
                                                          check="report", alone="2x2-report"),
    "python -m vlmsweep -m quant=nf4,bf16 scope=llm,all seed=0,1,2":
        "the 2x2 step of tests/test_readme_commands.py runs this multirun without seeds, and its positive-control step "
        "runs seeds as an axis through the command line into the report; tests/test_report_effects.py and "
        "tests/test_report_calibration.py check the seed statistics",
    "python -m vlmsweep -m 'seed=range(8)'":
        Step(replace={"range(8)": "range(4)"},
             extra=QUICK + ["train.enabled=false", "data.test_size=2", "hydra.sweep.dir={ws}/multirun/aa"], check="aa_runs",
             why="four seeds (the fewest an A/A takes) of an evaluation-only run: the command's path at a fraction of its "
                 "cost; the A/A statistics on trained seeds are tests/test_report_calibration.py's and benchmarks/bench_aa.py's"),
    "python -m vlmsweep.report.calibrate DIR": Step(needs=(AA,), replace={"DIR": "{ws}/multirun/aa"}, check="calibration"),
    "python -m vlmsweep -m eval.perturb.blank=0,0.5 seed=0,1,2":
        Step(replace={"seed=0,1,2": "seed=0,1"},
             extra=["train.enabled=false", "data.test_size=16", "eval.batch_size=8", "eval.max_new_tokens=12",
                    "max_pixels.visual_tokens=16", "tracker=none", "hydra.sweep.dir={ws}/multirun/control"],
             check="control_runs",
             why="evaluation only with two seeds and 12-token answers at 16 visual tokens (the warm-up's cheapest budget, "
                 "where the warmed model opens its answers in the contract): the perturbation acts after generation, so training adds "
                 "nothing the control checks, and blanking an answer moves its raw CER to 1"),
    "python -m vlmsweep.report CONTROL_DIR --metrics contract.salvage_rate,text.raw_cer":
        Step(needs=(CONTROL,), replace={"CONTROL_DIR": "{ws}/multirun/control"}, check="control_found"),
    "python -m vlmsweep.export QLORA_RUN/adapter --out merged_nf4":
        Step(needs=(TWO_BY_TWO,), replace={"QLORA_RUN": "{ws}/multirun/2x2/0"}, extra=["--check", "1", "--max-new-tokens", "8"],
             check="export_nf4", why="the 2x2's quant=nf4 scope=llm run (job 0) on the default model is the QLoRA run"),
    "python -m vlmsweep -m decoding=free,json_schema":
        "tests/test_run.py::test_constrained_decoding_ab_through_the_run runs both decodings through run() and checks the "
        "constrained one is schema-valid; the command-line multirun path is the 2x2 step's",
    "python -m vlmsweep loop.cycles=3": Step(replace={"loop.cycles=3": "loop.cycles=1"},
                                             extra=QUICK + ["data.mining_size=3", "eval.max_new_tokens=200",
                                                            "loop.mine_per_tag=2", "loop.synth_per_tag=1",
                                                            "hydra.run.dir={ws}/runs/loop"], check="mined_loop",
                                             why="one retrain cycle instead of three: the same code path, a third the "
                                                 "time; room for whole answers, so the warmed model's own failures "
                                                 "are tagged and mined"),
    "python -m vlmsweep loop.cycles=2":
        "with the speed overrides (QUICK replaces its sizes and steps) it is the run of the `loop.cycles=3` step in "
        "tests/test_readme_commands.py, which runs one cycle and checks the mining of the model's own failures",
    "python -m vlmsweep -m quant=nf4,bf16 loop.cycles=3":
        "a multirun of loops: the multirun path is the 2x2 step's and the loop path the loop.cycles=3 step's in "
        "tests/test_readme_commands.py; tests/test_loop.py kills and resumes a loop in a subprocess",
    "python -m vlmsweep -m max_pixels=256tok,512tok train.enabled=false data.test_size=16 tracker=none":
        "the evaluation-only multirun that drew the report's plots in docs/sweeps.md: its multirun path is the 2x2 "
        "step's in tests/test_readme_commands.py, evaluation without training the `train.enabled=false` steps', and "
        "the report of a max_pixels axis is tests/test_report_build.py's",
    "python -m vlmsweep -m +sweep=max_pixels":
        "tests/test_sweeps.py::test_a_sweep_through_the_command_line_then_its_report_and_a_resumed_invocation runs this "
        "command from a user's folder (two budgets, three trials over two invocations) and its report",
    "python -m vlmsweep -m +sweep=max_pixels_pareto":
        "tests/test_sweeps.py::test_a_two_objective_sweep_prints_and_plots_its_pareto_front_and_the_dashboard_reads_it "
        "runs this command from a user's folder (two budgets, three trials), its report and the README's "
        "optuna-dashboard command on its storage",
    "python -m vlmsweep -m +sweep=receipt_ratio": Step(extra=QUICK + NO_EVAL + ["sweep.trials=1", "hydra.sweep.dir={ws}/sweeps/rr"],
                                                      why=NO_EVAL_WHY),
    "python -m vlmsweep -m +sweep=lora_rank": Step(extra=QUICK + NO_EVAL + ["sweep.trials=1", "hydra.sweep.dir={ws}/sweeps/rank"],
                                                  why=NO_EVAL_WHY),
    "python -m vlmsweep -m +sweep=lora_rank sweep.trials=40 sweep.storage=postgresql://vlmsweep:vlmsweep@DBHOST:5432/vlmsweep":
        "needs a PostgreSQL server: tests/test_cluster.py runs the shared study on a real one when it can start",
    "python -m vlmsweep -m +sweep=max_pixels hydra/launcher=slurm hydra.sweeper.n_jobs=4":
        "needs a SLURM cluster: tests/test_cluster.py composes the slurm preset and runs submitit_local",
    "python -m vlmsweep -m quant=nf4,bf16 scope=llm,all hydra/launcher=slurm hydra.launcher.partition=gpu":
        "needs a SLURM cluster: tests/test_cluster.py composes the slurm preset and runs submitit_local",
    "python -m vlmsweep +experiment=exp1 model.path=DIR":
        "needs the downloaded 4-bit release; tests/test_run.py runs +experiment=exp1..exp4 on the embedded model",
    # The README's real-checkpoint commands, on the embedded replicas: folders written as the release's
    # (and as its pre-quantized 4-bit copy's) are, loaded by the same model.path code.
    **{f"python -m vlmsweep +experiment=exp{i} model.path=/models/Qwen2-VL-2B-Instruct{suffix} $DATA":
       Step(replace={f"/models/Qwen2-VL-2B-Instruct{suffix}": "{%s}" % folder, "$DATA": DATA},
            extra=QUICK + ["max_pixels=256tok", f"hydra.run.dir={{ws}}/runs/exp{i}"], check=f"exp{i}",
            why="the embedded replica of the release stands in for the download; 256 visual tokens, not 1024")
       for i, suffix, folder in ((1, "-bnb-4bit", "bnb4"), (3, "", "release"))},
    **{f"python -m vlmsweep +experiment=exp{i} model.path=/models/Qwen2-VL-2B-Instruct{suffix} $DATA":
       f"exp{i} is exp{i - 1}'s command with scope=all: the exp{i - 1} step runs the command line on the replica, "
       "tests/test_release_run.py::test_prequantized_replica_trains_and_evaluates_on_the_cpu[all] and the 2x2 step "
       "(scope=all) run this scope" for i, suffix in ((2, "-bnb-4bit"), (4, ""))},
    "python -m vlmsweep --config-dir DIR -m +sweep=NAME":
        Step(replace={"DIR": "my_conf", "NAME": "my_budget"},
             extra=QUICK + ["sweep.trials=1", SMALL_BUDGETS, "hydra.sweep.dir={ws}/sweeps/mine"], check="my_sweep"),
    "python -m vlmsweep.data render --out DIR --n 24": Step(replace={"DIR": "{ws}/rendered", "--n 24": "--n 3"},
                                                           check="rendered"),
    "python -m vlmsweep.data render --out DIR --n 24 --mix rx_receipt_1_1_1":
        Step(replace={"DIR": "{ws}/rendered_mix", "--n 24": "--n 3"}, check="rendered"),
    "python -m vlmsweep.data sroie --root SROIE/ --out data/sroie": Step(check="sroie"),
    "python -m vlmsweep -m model=tiny,ocr_tesseract train.enabled=false":
        Step(extra=QUICK + ["hydra.sweep.dir={ws}/multirun/ocr"], check="ocr_report", needs_tesseract=True),
    "python -m vlmsweep model=ocr_tesseract 'eval.slices=[synthetic,numeric_challenge]'":
        "runs as part of the next command (the same slices plus a manifest slice), checked by _slices in "
        "tests/test_readme_commands.py; tests/test_slices.py runs it on five pages per slice",
    "python -m vlmsweep model=ocr_tesseract 'eval.slices=[synthetic,numeric_challenge]' "
    "+eval.slice_manifests.real_receipts=data/sroie/manifest.jsonl":
        Step(needs=(SROIE,), extra=QUICK + ["eval.slice_size=1", "hydra.run.dir={ws}/runs/real_receipts"], check="real_receipts",
             needs_tesseract=True),
    "python -m vlmsweep -m ocr_hint=none,tesseract max_pixels=256tok,1024tok":
        Step(replace={"max_pixels=256tok,1024tok": "max_pixels=64tok"}, extra=QUICK + ["hydra.sweep.dir={ws}/multirun/hint"],
             check="hint_ab", needs_tesseract=True,
             why="one budget of the two (a 1024-token page costs minutes here): the hint axis through the command line "
                 "into one comparison report; tests/test_ocr_hint.py checks the budget resolution and its cache key"),
    "python -m vlmsweep ocr_hint=tesseract":
        "tests/test_ocr_hint.py::test_an_unreadable_page_and_hints_over_the_limit_cost_hints_not_the_run runs it "
        "through the command line (small sets, a short sequence limit, a Tesseract that fails on one page) and predicts "
        "with its adapter; the hint A/B step here runs it beside ocr_hint=none",
    "python -m vlmsweep.recipes.warmup --ocr-hint tesseract":
        "a full build takes about 20 minutes on 2 cores (docs/ocr-hint.md); tests/test_warmup.py::"
        "test_a_reader_recipe_hints_each_page_before_it_is_scaled_and_keeps_other_keys checks its hinted documents, its "
        "card and its refusal with --ship, and the other tests there build the recipe's short form twice",
    "python -m vlmsweep model=tiny_reader ocr_hint=tesseract":
        "tests/test_reader.py::test_the_reader_reads_real_receipts_of_a_hand_written_manifest_with_their_ocr_text runs "
        "it through the command line (evaluation only, three receipts of a hand-written manifest) and checks every page "
        "got its hint and the report names the mechanism; training with a hint is the hint A/B step's",
    "python -m vlmsweep model=tiny_reader ocr_hint=rapidocr":
        "the reader's command with the other engine: tests/test_reader.py runs the reader through the command line with "
        "Tesseract, tests/test_ocr_hint.py::test_rapidocr_reads_a_chinese_prescription_in_reading_order reads a page "
        "with PP-OCRv4 and the hint A/B step here runs the engine axis through the command line",
    "python -m vlmsweep -m model=tiny_reader ocr_hint=none,tesseract seed=0,1,2":
        "benchmarks/bench_reader.py --only hint runs it (19 minutes on 2 cores); here the hint A/B step runs "
        "ocr_hint=none,tesseract through the command line into one comparison report, "
        "tests/test_reader.py runs model=tiny_reader through the command line and tests/test_report_effects.py checks the "
        "seed statistics",
    "python -m vlmsweep -m model=tiny_reader ocr_hint=tesseract ocr_hint.resolution=budget max_pixels=64tok,256tok "
    "seed=0,1,2":
        "benchmarks/bench_reader.py --only budget runs it (31 minutes on 2 cores shared with a test run); here the hint A/B step runs a "
        "hinted multirun through the command line into its report, tests/test_ocr_hint.py checks the budget resolution "
        "and its cache key and tests/test_reader.py runs model=tiny_reader through the command line",
    "python -m vlmsweep model=tiny_reader ocr_hint=tesseract loop.cycles=2":
        "benchmarks/bench_reader.py --only loop runs it (about 17 minutes on 2 cores); here the loop.cycles=3 step runs "
        "the loop through the command line and checks its seed-noise band in the cycle report, tests/test_loop.py "
        "checks the band's arithmetic and tests/test_reader.py runs model=tiny_reader with a hint through the command line",
    "python -m vlmsweep.recipes.warmup --reader":
        "a build of about 42 minutes on 2 cores (docs/ocr-hint.md): tests/test_warmup.py::"
        "test_a_reader_recipe_hints_each_page_before_it_is_scaled_and_keeps_other_keys checks the reader recipe's key, "
        "card and command-line refusals, test_layout_hints_are_each_pages_own_text_with_errors_cut_to_the_budget its "
        "hints, and the other tests there build the recipe's short form twice",
    "python -m vlmsweep +experiment=exp3 model.path=DIR ocr_hint=tesseract":
        "needs the downloaded release; tests/test_run.py runs +experiment=exp1..exp4 on the embedded model and "
        "tests/test_ocr_hint.py::test_the_budget_leaves_room_for_image_prompt_and_answer composes exp3 with the hint",
    "python -m vlmsweep.memory +experiment=exp2 max_pixels=1024tok": Step(check="memory_exp2"),
    "python -m vlmsweep.memory model=qwen2_5_vl_3b": Step(check="memory_qwen2_5"),
    "python -m vlmsweep.memory OVERRIDES": "a placeholder for any run's overrides: the two steps above and tests/test_memory.py run it",
    "python -m vlmsweep.predict RUN_DIR/adapter scans/ --domain prescription_ko --out predictions.jsonl":
        Step(needs=(DEFAULT_RUN,), replace={"RUN_DIR": "{ws}/runs/default"}, extra=["--max-new-tokens", "8"],
             check="predict_scans"),
    "python -m vlmsweep.predict RUN_DIR/adapter my_data/new.jsonl --routing model --summary ko":
        Step(needs=(DEFAULT_RUN,), replace={"RUN_DIR": "{ws}/runs/default"}, extra=["--max-new-tokens", "8"],
             check="predict_manifest"),
    "python -m vlmsweep.export RUN_DIR/adapter --out merged":
        Step(needs=(DEFAULT_RUN,), replace={"RUN_DIR": "{ws}/runs/default"}, extra=["--check", "2", "--max-new-tokens", "8"],
             check="export_tiny"),
    "python -m vlmsweep train.enabled=false model=qwen2_vl_2b model.path=merged":
        "the export steps' checks in tests/test_readme_commands.py (_evaluated_like) evaluate each merged folder with "
        "these overrides (and the run's speed overrides) through run() in the test process, and compare metrics and "
        "answers with the run's: one command-line start (about 14 s of imports) less per merged folder",
    "python -m vlmsweep.predict merged scans/ --domain prescription_ko --out predictions_merged.jsonl":
        Step(needs=(EXPORT_MERGED, PREDICT_SCANS), extra=["--max-new-tokens", "8"], check="predict_merged",
             why="the journey: run -> predict -> export -> reload and re-evaluate (the export's check) -> predict with the "
                 "merged folder, each step the command a user types"),
    "python -m vlmsweep.export EXP1_RUN/adapter --out merged_exp1":
        Step(needs=(EXP1,), replace={"EXP1_RUN": "{ws}/runs/exp1"}, extra=["--check", "2", "--max-new-tokens", "8"],
             check="export_bnb4", why="exp1's run on the 4-bit replica of the release stands in for a QLoRA run"),
    "python -m vlmsweep.export RUN_DIR/adapter --out lora --vllm-lora":
        Step(needs=(DEFAULT_RUN,), replace={"RUN_DIR": "{ws}/runs/default"}, check="vllm_lora"),
    "python -m vlmsweep -m adapters=single,per_domain":
        Step(extra=PER_DOMAIN_RUN + ["hydra.sweep.dir={ws}/multirun/adapters"],
             check="per_domain_multirun",
             why="4 training and 3 test samples: per_domain needs a prescription and a receipt in each"),
    "python -m vlmsweep adapters=per_domain adapters.routing=model train.enabled=false model.adapter=RUN_DIR/adapters "
    "data.test_manifest=my_data/test.jsonl":
        Step(needs=(PER_DOMAIN,), replace={"RUN_DIR": "{ws}/multirun/adapters/1"}, extra=QUICK + ["hydra.run.dir={ws}/runs/routed"],
             check="routed_eval"),
    "python -m vlmsweep.export RUN_DIR/adapters/receipts --out merged_receipts":
        Step(needs=(PER_DOMAIN,), replace={"RUN_DIR": "{ws}/multirun/adapters/1"}, extra=["--check", "1", "--max-new-tokens", "8"],
             check="export_per_domain"),
    "python -m vlmsweep.predict RUN_DIR/adapters scans/ --domain prescription_ko --routing model":
        Step(needs=(PER_DOMAIN,), replace={"RUN_DIR": "{ws}/multirun/adapters/1"}, extra=["--max-new-tokens", "4", "--out", "routed.jsonl"],
             check="routed_predict"),
    "python -m vlmsweep.recipes.warmup":
        "a rebuild from scratch by the recipe (minutes): tests/test_warmup.py::test_the_same_recipe_builds_the_same_bytes "
        "runs a reduced recipe twice to the same bytes, and test_the_default_model_is_the_warmed_one_and_model_tiny_the_raw_one "
        "checks the folder and card of the default model",
    "python -m vlmsweep.recipes.warmup --ship":
        "a build of minutes that rewrites the package's files; tests/test_warmup.py::"
        "test_a_build_packs_into_shipped_files_that_assemble_to_its_tensors packs a short build the same way",
    "python -m vlmsweep model=tiny":
        "the raw replica is what tests/test_warmup.py::test_the_default_model_is_the_warmed_one_and_model_tiny_the_raw_one "
        "resolves model=tiny to, and what tests/test_release_run.py trains and evaluates from its folder",
}


def documented_commands() -> dict[str, list[str]]:
    """Each distinct command of README.md and docs/*.md -> the pages that show it."""
    where: dict[str, list[str]] = {}
    for page in documented_pages():
        for command in readme_commands(page.read_text(encoding="utf-8")):
            where.setdefault(command, []).append(str(page.relative_to(REPO)))
    return where


def test_every_readme_command_has_a_step():
    """Every command of README.md and of the manual's pages has one step (or the test that covers it); every step
    is a command some page shows."""
    commands = documented_commands()
    assert len(commands) >= 10
    missing = [f"{c} ({', '.join(pages)})" for c, pages in commands.items() if c not in STEPS]
    assert not missing, f"commands of README.md or docs/ with no step in tests/test_readme_commands.py: {missing}"
    stale = [c for c in STEPS if c not in commands]
    assert not stale, f"steps for commands neither README.md nor docs/ shows: {stale}"
    for command, step in STEPS.items():
        if isinstance(step, str):  # a reason it cannot run here must say which test covers it instead
            assert "tests/" in step or "this suite" in step, command


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, offline_env):
    """A user's folder outside the checkout, one for the whole session (written by the first worker to ask)."""
    return made_once(tmp_path_factory, "readme-user", write_workspace)


def write_workspace(ws: Path) -> None:
    """Their data, their config folder, new scans, an SROIE download."""
    m = write_user_data(ws)
    (ws / "my_data" / "pool.jsonl").write_text(m["mining"].read_text(encoding="utf-8"), encoding="utf-8")
    (ws / "my_conf" / "experiment").mkdir(parents=True)
    (ws / "my_conf" / "experiment" / "my_rx.yaml").write_text(
        "# @package _global_\ndata:\n  train_manifest: my_data/train.jsonl\n  test_manifest: my_data/test.jsonl\n",
        encoding="utf-8")
    shipped = (REPO / "conf" / "sweep" / "max_pixels.yaml").read_text(encoding="utf-8")
    (ws / "my_conf" / "sweep").mkdir(parents=True)
    (ws / "my_conf" / "sweep" / "my_budget.yaml").write_text(shipped.replace("name: max_pixels", "name: my_budget"),
                                                             encoding="utf-8")
    # New, unlabelled scans to predict on: five drawn pages (PNG and JPEG), one corrupt file, one note that is no
    # image; and a manifest of new pages without targets (one image missing)
    for i in range(5):
        draw(ws / "scans" / f"page_{i}.{'png' if i % 2 else 'jpg'}", [f"PATIENT {i}", "AMOXICILLIN 500 mg", f"ID 1234{i}"])
    (ws / "scans" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"cut off in transfer")
    (ws / "scans" / "notes.txt").write_text("scanned on Monday", encoding="utf-8")
    # ... and pages whose domain nobody wrote down (predict --routing model): two real receipt scans (the SROIE
    # sample, where it is present) and a file torn in transfer
    (ws / "my_data" / "images" / "torn.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"torn")
    real = [p for p in sorted((SROIE_SAMPLE / "img").glob("*.jpg"))[:2]] if (SROIE_SAMPLE / "key").is_dir() else []
    for p in real:
        shutil.copyfile(p, ws / "my_data" / "images" / f"sroie_{p.name}")
    (ws / "my_data" / "new.jsonl").write_text("\n".join(json.dumps(x) for x in [
        {"id": "new-ko", "image": "images/rx_ko_001.png", "domain": "prescription_ko"},
        {"id": "new-rcpt", "image": "images/rcpt_001.jpg", "domain": "receipt"},
        {"id": "new-gone", "image": "images/never_scanned.png", "domain": "prescription_zh"},
        {"id": "new-torn", "image": "images/torn.jpg"},
        *({"id": f"sroie-{p.stem}", "image": f"images/sroie_{p.name}"} for p in real),
    ]) + "\n", encoding="utf-8")
    for sub in ("img", "key"):
        (ws / "SROIE" / sub).mkdir(parents=True)
    draw(ws / "SROIE" / "img" / "001.jpg", ["CORNER CAFE", "14/03/2025", "TOTAL 9.00"])
    (ws / "SROIE" / "key" / "001.json").write_text(json.dumps(
        {"company": "CORNER CAFE", "date": "14/03/2025", "address": "12 MAIN ST", "total": "9.00"}))


def replica(name: str) -> Path:
    """Where the embedded replica of the release (tiny) or of its 4-bit copy (tiny_bnb4) was written."""
    from vlmsweep.model.tiny import ensure_embedded_model

    return ensure_embedded_model(name, os.environ["VLMSWEEP_CACHE"])


RUNNABLE = [c for c, s in STEPS.items() if isinstance(s, Step)]

# What each step printed, by command, in this process; the file of record in the workspace's .steps/ is what every
# worker reads. A step that another needs runs once in the session, whether its own test or a test that needs it asks
# first, on whichever worker. A failed step is kept as its error, so the tests that need it fail at once with that
# error instead of running it again.
_MADE: dict[tuple[Path, str], subprocess.CompletedProcess | AssertionError] = {}


def step_file(ws: Path, name: str, suffix: str) -> Path:
    folder = ws / ".steps"
    folder.mkdir(exist_ok=True)
    return folder / (hashlib.sha256(name.encode()).hexdigest()[:16] + suffix)


def made(command: str, ws: Path) -> subprocess.CompletedProcess:
    """`command` run as the user types it (with its step's replacements and speed overrides) from `ws`, after the
    commands it needs: the one place that starts a README command, so the result never depends on test order or
    worker. Its lock is held while its needs are made: needs form no cycle (a test checks), so no two workers wait on
    each other."""
    key = (ws, command)
    if key not in _MADE:
        record = step_file(ws, command, ".json")
        with FileLock(f"{record}.lock"):
            if record.is_file():
                saved = json.loads(record.read_text(encoding="utf-8"))
                _MADE[key] = (AssertionError(saved["error"]) if "error" in saved
                              else subprocess.CompletedProcess(saved["args"], saved["returncode"], saved["stdout"],
                                                               saved["stderr"]))
            else:
                _MADE[key] = run_step(command, ws)
                done = _MADE[key]
                record.write_text(json.dumps({"error": str(done)} if isinstance(done, AssertionError) else
                                             {"args": done.args, "returncode": done.returncode, "stdout": done.stdout,
                                              "stderr": done.stderr}), encoding="utf-8")
    result = _MADE[key]
    if isinstance(result, AssertionError):
        raise result
    return result


def run_step(command: str, ws: Path) -> subprocess.CompletedProcess | AssertionError:
    step = STEPS[command]
    for need in step.needs:
        try:
            made(need, ws)
        except AssertionError as e:
            return AssertionError(f"needed step `{need}` failed:\n{e}")
    line = command
    for old, new in step.replace.items():
        line = line.replace(old, new)
    folders = {"ws": ws}
    if "{release}" in line or "{bnb4}" in line:
        folders |= {"release": replica("tiny"), "bnb4": replica("tiny_bnb4")}
    argv = shlex.split(line.format(**folders)) + [x.format(**folders) for x in step.extra]
    assert argv[:2] == ["python", "-m"]
    try:
        return vlmsweep(argv[3:], ws, module=argv[2])
    except AssertionError as e:
        return e


def test_every_need_is_a_runnable_step_and_no_step_needs_itself():
    """`needs` names commands that run here (not a reason string), and no chain of needs comes back to its start."""
    def chain(command: str, seen: tuple[str, ...]) -> None:
        assert command not in seen, f"a cycle of needs: {' -> '.join(seen + (command,))}"
        assert isinstance(STEPS.get(command), Step), f"{seen[-1]} needs `{command}`, which is no runnable step"
        for need in STEPS[command].needs:
            chain(need, seen + (command,))
    for command in RUNNABLE:
        chain(command, ())
    assert sum(bool(STEPS[c].needs) for c in RUNNABLE) >= 15  # the chains: every step that reads another's folder


@pytest.mark.slow
@pytest.mark.parametrize("command", RUNNABLE)
def test_readme_command_runs(command, workspace):
    step = STEPS[command]
    if step.needs_tesseract:
        from test_ocr import NO_TESSERACT

        if NO_TESSERACT:
            pytest.skip(NO_TESSERACT)
    with FileLock(f"{step_file(workspace, step.alone, '.lock')}") if step.alone else nullcontext():
        proc = made(command, workspace)
        if step.check:
            (CHECKS | OCR_CHECKS | PER_DOMAIN_CHECKS)[step.check](proc, workspace)


def _run_ok(proc, ws):
    out = run_dir(proc)
    assert json.loads((out / "run_info.json").read_text())["status"] == "ok"
    assert (out / "metrics.json").is_file()


def _user_ids(proc, ws):
    _run_ok(proc, ws)
    assert {s["id"] for s in samples(run_dir(proc))} == {"rcpt-001", "rx-ko-002"}


def _same_outputs_as(trained: str):
    """The adapter answered: evaluating it gives the very greedy outputs of the run that trained it."""
    def check(proc, ws):
        _run_ok(proc, ws)
        raw = lambda d: {s["id"]: s["raw"] for s in samples(d)}  # noqa: E731
        assert raw(run_dir(proc)) == raw(ws / "runs" / trained)
    return check


def _own_data(proc, ws):
    """Trained and evaluated on the user's manifests; the run records where each split came from."""
    _user_ids(proc, ws)
    info = json.loads((run_dir(proc) / "run_info.json").read_text())
    train = (ws / "my_data" / "train.jsonl").resolve()
    assert info["data"]["train"] == {"manifest": str(train), "from_manifest": 2, "skipped": [], "synthetic": 0,
                                     "nfc_normalized": []}
    assert set(info["data"]) == {"train", "test"}  # no mining pool or regression set rendered without a loop


def _own_loop(proc, ws):
    """One retrain cycle mines the user's pool and keeps the user's regression set fixed."""
    _run_ok(proc, ws)
    out = run_dir(proc)
    for cycle in (0, 1):
        d = out / f"cycle_{cycle}"
        assert {s["id"] for s in samples(d / "mining")} == {"rx-zh-002"}
        assert {s["id"] for s in samples(d / "regression")} == {"rcpt-002"}
        assert {s["id"] for s in samples(d)} == {"rcpt-001", "rx-ko-002"}
    fixed = {n: [json.loads(x)["id"] for x in (out / "splits" / f"{n}.jsonl").read_text().splitlines()]
             for n in ("train", "mining", "regression")}
    assert fixed == {"train": ["rx-ko-001", "rx-zh-001"], "mining": ["rx-zh-002"], "regression": ["rcpt-002"]}
    trained = [json.loads(x)["id"] for x in (out / "cycle_1" / "train.jsonl").read_text().splitlines()]
    assert "rcpt-002" not in trained and "rcpt-001" not in trained  # regression / test never trained on


def _mined_loop(proc, ws):
    """The default model's own outputs on the mining pool are tagged, mined and answered with targeted data that
    names the mined records; cycle 1 trains on that hard set."""
    _run_ok(proc, ws)
    out = run_dir(proc)
    mining = {s["id"]: s for s in samples(out / "cycle_0" / "mining")}
    hard = [json.loads(x) for x in (out / "cycle_0" / "hard_set.jsonl").read_text().splitlines()]
    mined = [r for r in hard if r["origin"].startswith("mined:0:")]
    synth = [r for r in hard if r["origin"].startswith("synth:0:")]
    assert mined and synth, f"nothing mined from the model's outputs: {[s['tags'] for s in mining.values()]}"
    for r in mined:  # mined under a tag the evaluator put on that very sample of the model's outputs
        assert r["origin"].split(":")[2] in mining[r["id"]]["tags"] and mining[r["id"]]["raw"]
    mined_ids = {r["id"] for r in mined}
    for r in synth:  # each targeted record traces back to mined records that carry its tag
        tag = r["origin"].split(":")[2]
        assert r["parents"] and set(r["parents"]) <= mined_ids
        assert all(tag in mining[p]["tags"] for p in r["parents"])
    trained = {json.loads(x)["id"] for x in (out / "cycle_1" / "train.jsonl").read_text().splitlines()}
    assert {r["id"] for r in hard} <= trained
    # The seed-noise band: cycle 0 under the two default noise seeds, scored on the regression set, and each tag
    # the hard set targeted read against it in the report.
    for seed in (1, 2):
        assert json.loads((out / "cycle_0" / "noise" / f"seed_{seed}" / "regression" / "metrics.json").read_text())
    report = (out / "report.md").read_text()
    for tag in {r["origin"].split(":")[2] for r in hard}:
        assert re.search(rf"^\| 1 \| {tag} \| \d+ \| \d+ \| [+-]\d+ \| \d+, \d+, \d+ \| ", report, re.M), (tag, report)


def _exp(quant: str, scope: str):
    def check(proc, ws):
        _user_ids(proc, ws)
        info = json.loads((run_dir(proc) / "run_info.json").read_text())
        assert (info["choices"]["quant"], info["choices"]["scope"]) == (quant, scope)
    return check


def _four_runs(proc, ws):
    assert "4 runs" in proc.stdout
    runs = [p for p in (ws / "multirun" / "2x2").iterdir() if (p / "run_info.json").is_file()]
    by = {}
    for r in runs:
        info = json.loads((r / "run_info.json").read_text())
        by[(info["choices"]["quant"], info["choices"]["scope"])] = json.loads((r / "metrics.json").read_text())
    assert set(by) == {("nf4", "llm"), ("nf4", "all"), ("bf16", "llm"), ("bf16", "all")}
    for quant in ("nf4", "bf16"):  # scope=all trains the vision tower, scope=llm never does
        assert by[(quant, "llm")]["train.trainable_params.vision"] == 0 < by[(quant, "all")]["train.trainable_params.vision"]


def _report(proc, ws):
    md = (ws / "multirun" / "2x2" / "report" / "summary.md").read_text(encoding="utf-8")
    assert "2×2: scope × quant" in md or "2×2: quant × scope" in md
    rows = [r for r in md.splitlines() if r.startswith("| contract.strict_parse_rate |")]
    assert len(rows) == 3  # scope, quant and their interaction
    assert "data:image/png;base64," in (ws / "multirun" / "2x2" / "report" / "report.html").read_text(encoding="utf-8")


def _aa_runs(proc, ws):
    infos = [json.loads(p.read_text()) for p in (ws / "multirun" / "aa").glob("*/run_info.json")]
    assert sorted(i["seed"] for i in infos) == [0, 1, 2, 3] and all(i["status"] == "ok" for i in infos)


def _calibration(proc, ws):
    cal = json.loads((ws / "multirun" / "aa" / "calibration.json").read_text(encoding="utf-8"))
    assert cal["runs"] == 4 and cal["fpr_by_design"].keys() == {"2 arms x 2 seeds"}
    assert all(m["tests"] == 3 for m in cal["metrics"])  # four runs split into two arms of two: three ways
    assert "false-positive rate" in proc.stdout


def _control_runs(proc, ws):
    infos = [json.loads(p.read_text()) for p in (ws / "multirun" / "control").glob("*/run_info.json")]
    blanked = [i["perturb"] for i in infos if i.get("perturb")]
    assert len(infos) == 4 and len(blanked) == 2  # two seeds per arm; the baseline arm records no perturbation
    for b in blanked:
        assert b["blank"] == 0.5 and b["answers_blanked"] == 8  # exactly half of the 16 answers
        assert b["injected"]["text.raw_cer"] > 0  # an empty answer misses every character of its target


def _control_found(proc, ws):
    md = (ws / "multirun" / "control" / "report" / "summary.md").read_text(encoding="utf-8")
    line = next(x for x in md.splitlines() if x.startswith("- positive control:"))
    assert "eval.perturb.blank on text.raw_cer: injected +" in line, line
    assert line.endswith("found, sign right, interval covers it"), line


def _check_ok(proc, ws):
    assert "2 usable records" in proc.stdout and "0 skipped" in proc.stdout


def _rendered(proc, ws):
    assert "rendered 3 samples" in proc.stdout


def _sroie(proc, ws):
    assert (ws / "data" / "sroie" / "manifest.jsonl").is_file() and "1 SROIE receipts" in proc.stdout


def _ocr_report(proc, ws):
    """The OCR baseline beside the tiny model: scored the same way, both in one comparison report."""
    runs = {json.loads((d / "run_info.json").read_text())["choices"]["model"]: d
            for d in (ws / "multirun" / "ocr").iterdir() if (d / "run_info.json").is_file()}
    assert set(runs) == {"tiny", "ocr_tesseract"}
    ocr = samples(runs["ocr_tesseract"])
    assert ocr and all(s["ocr_text"] and s["parsed"] is not None for s in ocr)
    assert json.loads((runs["ocr_tesseract"] / "metrics.json").read_text())["contract.key_set_rate"] == 1.0
    vlmsweep(["multirun/ocr"], ws, module="vlmsweep.report")
    summary = (ws / "multirun" / "ocr" / "report" / "summary.md").read_text(encoding="utf-8")
    assert "| tiny |" in summary and "| ocr_tesseract |" in summary


def _hint_ab(proc, ws):
    """The hint A/B: the hinted run's prompts held each page's OCR text, the other's none; one comparison report."""
    runs = {json.loads((d / "run_info.json").read_text())["choices"]["ocr_hint"]: d
            for d in (ws / "multirun" / "hint").iterdir() if (d / "run_info.json").is_file()}
    assert set(runs) == {"none", "tesseract"}
    hinted = json.loads((runs["tesseract"] / "metrics.json").read_text())
    assert hinted["ocr_hint.pages"] == 3 and hinted["ocr_hint.failed_pages"] == 0  # QUICK's 2 training + 1 test page
    assert all(s["ocr_hint"] for s in samples(runs["tesseract"])) and not any("ocr_hint" in s for s in samples(runs["none"]))
    assert "ocr_hint.pages" not in json.loads((runs["none"] / "metrics.json").read_text())
    vlmsweep(["multirun/hint"], ws, module="vlmsweep.report")
    summary = (ws / "multirun" / "hint" / "report" / "summary.md").read_text(encoding="utf-8")
    assert "- OCR hint: 1 run(s) prompted with the page's tesseract text (ocr_hint.resolution=page)" in summary


def _slices(proc, ws):
    metrics = json.loads((run_dir(proc) / "metrics.json").read_text())
    assert metrics["slice/synthetic/samples"] == metrics["slice/numeric_challenge/samples"] == 1
    assert samples(run_dir(proc) / "slices" / "numeric_challenge")[0]["id"].startswith("numeric-")
    assert "## Slices" in (run_dir(proc) / "report.md").read_text(encoding="utf-8")


def _real_receipts(proc, ws):
    _slices(proc, ws)
    metrics = json.loads((run_dir(proc) / "metrics.json").read_text())
    assert metrics["slice/real_receipts/samples"] == 1  # the SROIE-layout receipt converted by the sroie step
    assert samples(run_dir(proc) / "slices" / "real_receipts")[0]["id"] == "sroie-001"


def _per_domain_multirun(proc, ws):
    """Two runs: one adapter, and one per group in adapters/<group>/ (each a self-sufficient adapter folder) with
    routing.json; each page evaluated by its own group's adapter, the router asked anyway; both rows in the report."""
    from vlmsweep.pipeline import routing

    assert "2 runs" in proc.stdout
    runs = {json.loads((d / "run_info.json").read_text())["choices"]["adapters"]: d
            for d in (ws / "multirun" / "adapters").iterdir() if (d / "run_info.json").is_file()}
    assert set(runs) == {"single", "per_domain"} and runs["per_domain"].name == "1"
    per = runs["per_domain"]
    assert (runs["single"] / "adapter").is_dir() and not (per / "adapter").exists()
    assert sorted(p.name for p in (per / "adapters").iterdir()) == ["prescriptions", "receipts", "routing.json"]
    for group in ("prescriptions", "receipts"):
        assert {"adapter_config.json", "adapter_model.safetensors", "vlmsweep_adapter.json"} <= \
            {p.name for p in (per / "adapters" / group).iterdir()}
    groups = json.loads((per / "adapters" / "routing.json").read_text())["groups"]
    assert groups["receipts"] == ["receipt", "receipt_ko", "receipt_zh"]
    routed = samples(per)  # the metric is the share of pages the router sent to their own group
    assert {s["route"]["known"] for s in routed} == {"prescriptions", "receipts"}
    for s in routed:  # routing=known: each page went to its own group's adapter
        assert s["adapter"] == s["route"]["known"] == routing.group_of(s["domain"], groups)
        assert s["route"]["model"] == max(s["route"]["scores"], key=s["route"]["scores"].get)
    right = sum(s["route"]["model"] == s["route"]["known"] for s in routed)
    metrics = json.loads((per / "metrics.json").read_text())
    assert metrics["routing.accuracy"] == pytest.approx(right / len(routed))
    for group in ("prescriptions", "receipts"):
        assert f"by_group.{group}.contract.key_set_rate" in metrics and f"by_group.{group}.train.loss" in metrics
    assert "## Per-domain adapters" in (per / "report.md").read_text(encoding="utf-8")
    assert "routing.accuracy" not in json.loads((runs["single"] / "metrics.json").read_text())
    vlmsweep(["multirun/adapters"], ws, module="vlmsweep.report")
    table = (ws / "multirun" / "adapters" / "report" / "summary.md").read_text(encoding="utf-8").splitlines()
    header = next(line for line in table if line.startswith("| run |")).split(" | ")
    rows = {line.split(" | ")[1]: line.split(" | ") for line in table if "| single |" in line or "| per_domain |" in line}
    assert set(rows) == {"single", "per_domain"}
    col = next(i for i, h in enumerate(header) if h.startswith("routing.accuracy"))
    assert float(rows["per_domain"][col]) == pytest.approx(right / len(routed), abs=1e-3) and rows["single"][col].strip() == ""


def _routed_eval(proc, ws):
    """The user's test manifest through the trained adapters, each page to the adapter the router chose."""
    _user_ids(proc, ws)
    for s in samples(run_dir(proc)):
        assert s["adapter"] == s["route"]["model"] == max(s["route"]["scores"], key=s["route"]["scores"].get)
        assert s["route"]["by"] == "model" and s["route"]["known"] == ("receipts" if s["id"] == "rcpt-001" else "prescriptions")
    metrics = json.loads((run_dir(proc) / "metrics.json").read_text())
    assert metrics["routing.samples"] == 2 and "by_group.receipts.routing.accuracy" in metrics


def _routed_predict(proc, ws):
    """Each scan to the adapter the router chose, in input order; the corrupt one keeps its domain's group."""
    lines = _lines(ws / "routed.jsonl")
    assert [Path(x["image"]).name for x in lines] == ["broken.png"] + [f"page_{i}.{'png' if i % 2 else 'jpg'}"
                                                                    for i in range(5)]
    assert lines[0]["error"] and lines[0]["adapter"] == "prescriptions" and lines[0]["route"]["model"] is None
    for x in lines[1:]:
        scores = x["route"]["scores"]
        assert x["adapter"] == x["route"]["model"] == max(scores, key=scores.get) and x["error"] is None
    assert "6 lines" in proc.stderr and "routing model" in proc.stderr
    assert "is_gradient_checkpointing" not in proc.stderr  # peft's call of a deprecated attribute, filtered (quiet.py)


PER_DOMAIN_CHECKS = {"per_domain_multirun": _per_domain_multirun, "routed_eval": _routed_eval,
                     "routed_predict": _routed_predict}  # joined to CHECKS below
OCR_CHECKS = {"ocr_report": _ocr_report, "slices": _slices, "real_receipts": _real_receipts, "hint_ab": _hint_ab}  # joined to CHECKS below


def _memory(model: str, family: str, *more: str):
    def check(proc, ws):
        head = proc.stdout.splitlines()[0]
        assert head.startswith(f"model={model} ({family})") and all(m in proc.stdout for m in more), proc.stdout
        total = next(line for line in proc.stdout.splitlines() if line.startswith("total"))
        assert float(total.split()[1]) > 1.0  # GiB: a 2-3 B model's step
    return check


def _my_sweep(proc, ws):
    infos = [json.loads((p / "run_info.json").read_text()) for p in (ws / "sweeps" / "mine").iterdir()
             if (p / "run_info.json").is_file()]
    assert infos and all(i["status"] == "ok" and i["choices"]["sweep"] == "my_budget" for i in infos)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _predict_scans(proc, ws):
    """Six lines for six image files (the note is left out, and said so); the corrupt one is a line with its error."""
    lines = _lines(ws / "predictions.jsonl")
    assert sorted(Path(x["image"]).name for x in lines) == ["broken.png"] + [f"page_{i}.{'png' if i % 2 else 'jpg'}"
                                                                          for i in range(5)]
    errors = [x for x in lines if x["error"]]
    assert len(errors) == 1 and "broken.png" in errors[0]["error"] and errors[0]["parsed"] is None
    assert "notes.txt" in proc.stderr and "6 lines" in proc.stderr
    info = json.loads((ws / "runs" / "default" / "adapter" / "vlmsweep_adapter.json").read_text(encoding="utf-8"))
    budget = info["pixels"]["max_pixels"] // (28 * 28)
    for x in lines:
        assert x["domain"] == "prescription_ko" and x["decoding"] == "json_schema"
        if not x["error"]:  # the adapter's own pixel budget; under the schema every answer opens the object
            assert 0 < x["visual_tokens"] <= budget and x["raw"].startswith('{"patient_name"')
            assert x["stop_reason"] in ("eos", "json_complete", "max_new_tokens") and x["seconds"] > 0
            assert x["schema_valid"] == (x["parsed"] is not None)


def _predict_manifest(proc, ws):
    """A manifest without targets, to standard output: the domain of each line is asked; a missing image is a line;
    the pages without a domain (real receipt scans, a torn file) are routed by the base model and asked with the
    schema of the group it chose."""
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert [(x["id"], x["domain"]) for x in lines[:3]] == [("new-ko", "prescription_ko"), ("new-rcpt", "receipt"),
                                                           ("new-gone", "prescription_zh")]
    assert lines[0]["raw"].startswith('{"patient_name"') and lines[1]["raw"].startswith('{"store"')
    assert "never_scanned.png" in lines[2]["error"]
    assert all("route" not in x for x in lines[:3])  # a known domain is asked as given, never routed
    for x in lines[:2]:  # a summary only of a parsed answer (8 tokens of the random model parse none)
        assert "summary" in x and (x["summary"] is None) == (x["parsed"] is None)
    torn, real = lines[3], lines[4:]
    assert torn["id"] == "new-torn" and "torn.jpg" in torn["error"] and torn["domain"] is None and "route" not in torn
    first_key = {"prescriptions": '{"patient_name"', "receipts": '{"store"'}
    for x in real:  # the router's choice (the most probable group) decides the schema the page is asked with
        scores = x["route"]["scores"]
        assert x["domain"] is None and x["error"] is None and x["route"]["model"] == max(scores, key=scores.get)
        assert x["schema"] == x["route"]["model"].removesuffix("s") and x["raw"].startswith(first_key[x["route"]["model"]])
    assert f"{len(real)} routed by the base model" in proc.stderr
    if not real:
        pytest.skip(f"the routed real receipt scans were not checked: {needs_sample.kwargs['reason']}")


def _evaluated_like(ws: Path, folder: Path, overrides: list[str]) -> tuple[dict, dict]:
    """The merged folder evaluated as a checkpoint (the README's `train.enabled=false model=qwen2_vl_2b
    model.path=merged`, in the quant of its dtype) with the run's overrides; (its metrics, its samples by id)."""
    from vlmsweep.model.inference import QUANT_OF_DTYPE
    from vlmsweep.config.compose import compose
    from vlmsweep.run import run as run_config

    dtype = json.loads((folder / "export_check.json").read_text(encoding="utf-8"))["dtype"]
    out = ws / "runs" / f"evaluated_{folder.name}"
    run_config(compose(overrides + ["train.enabled=false", "model=qwen2_vl_2b", f"model.path={folder}",
                                    f"quant={QUANT_OF_DTYPE[dtype]}", "tracker=none"], out))
    return json.loads((out / "metrics.json").read_text()), {s["id"]: s for s in samples(out)}


def _same_evaluation(evaluated: dict, by_id: dict, run: Path, prefix: str = "", pages=None):
    """The run's metrics (its `prefix` ones, e.g. one group's) and greedy answers, from the merged folder."""
    theirs = json.loads((run / "metrics.json").read_text())
    scored = lambda k: k.startswith(("contract.", "content.", "rate.", "tags.", "text.")) and ".cost." not in k  # noqa: E731
    shared = {k.removeprefix(prefix): v for k, v in theirs.items() if k.startswith(prefix) and scored(k.removeprefix(prefix))}
    assert len(shared) > 10
    assert {k: json.dumps(v) for k, v in shared.items()} == {k: json.dumps(evaluated[k]) for k in shared}
    ran = [s for s in samples(run) if pages is None or s["id"] in pages]
    assert ran and all(by_id[s["id"]]["raw"] == s["raw"] for s in ran)


def _from_pretrained_answers_as_the_adapter(folder: Path):
    """A plain transformers load of the folder (its own dtype, processor and greedy generation config) answers
    the export check's documents, in one left-padded batch as the check did, exactly as the adapter did."""
    import torch
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    from vlmsweep import prompts
    from vlmsweep.pipeline.export import check_documents

    check = json.loads((folder / "export_check.json").read_text(encoding="utf-8"))
    info = json.loads((folder / "vlmsweep_adapter.json").read_text(encoding="utf-8"))
    model = Qwen2VLForConditionalGeneration.from_pretrained(folder)
    assert model.dtype == getattr(torch, check["dtype"])
    processor = AutoProcessor.from_pretrained(folder)
    docs = check_documents(len(check["documents"]))
    texts = [processor.apply_chat_template(prompts.messages(d, info["prompt"]["domain_tag"],
                                                            text=info["prompt"]["instructions"][d]),
                                           add_generation_prompt=True, tokenize=False) for _, d, _ in docs]
    inputs = processor(text=texts, images=[img for _, _, img in docs], padding=True, padding_side="left",
                       return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs)
    got = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert got == [d["adapter"] for d in check["documents"]]


def _merged_weights_ok(out: Path, run: Path, documents: int = 2):
    """The check passed and was written; the folder is a plain 16/32-bit checkpoint in the adapter's own dtype."""
    from safetensors.torch import load_file

    check = json.loads((out / "export_check.json").read_text(encoding="utf-8"))
    assert check["greedy_equal"] and len(check["documents"]) == documents and all(d["equal"] for d in check["documents"])
    assert not (out.parent / (out.name + ".partial")).exists()
    assert json.loads((out / "generation_config.json").read_text())["do_sample"] is False
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    info = json.loads((out / "vlmsweep_adapter.json").read_text(encoding="utf-8"))
    trained = json.loads((run / "adapter" / "vlmsweep_adapter.json").read_text())
    assert info["pixels"] == trained["pixels"]
    assert check["dtype"] == trained["precision"]["weights"] == info["merged"]["dtype"]  # --dtype auto: the adapter's
    return load_file(str(out / "model.safetensors")), load_file(str(run / "adapter" / "adapter_model.safetensors")), check


def _export_tiny(proc, ws):
    """base + (alpha / r) B A on every LoRA layer, under the release's names, rounded once to the adapter's dtype;
    a plain from_pretrained answers as the adapter; evaluated as a checkpoint, the folder gives the run's metrics."""
    import torch
    from safetensors.torch import load_file

    from vlmsweep.model.shipped import ensure_warm_model

    merged, lora, check = _merged_weights_ok(ws / "merged", ws / "runs" / "default")
    assert check["dequantised"] is None
    if check["dtype"] == "float32":  # the merge is exact arithmetic there; in bf16 only the answers are bound
        assert check["max_abs_logit_diff"] < 1e-4
    dtype = getattr(torch, check["dtype"])
    eps = torch.finfo(dtype).eps
    base = load_file(str(ensure_warm_model(os.environ["VLMSWEEP_CACHE"]) / "model.safetensors"))  # the default model
    config = json.loads((ws / "runs" / "default" / "adapter" / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    layers = {k.split(".lora_")[0].removeprefix("base_model.model.model.language_model.") for k in lora}
    assert len(layers) == 14  # 2 layers x 7 projections
    for layer in layers:
        name = f"model.{layer}.weight"  # the 4.x names the release uses
        prefix = f"base_model.model.model.language_model.{layer}"
        delta = scale * lora[f"{prefix}.lora_B.weight"] @ lora[f"{prefix}.lora_A.weight"]
        assert delta.abs().max() > 0  # the adapter moved, so the merge is visible
        expected = base[name].to(dtype).float() + delta  # the base as the adapter computed with it, plus the update
        assert merged[name].dtype == dtype
        assert (merged[name].float() - expected).abs().max() <= 2 * eps * expected.abs().max(), name
    untouched = [k for k in base if "layers" not in k or "_proj" not in k]
    assert all((merged[k] == base[k].to(dtype)).all() for k in untouched if k in merged)
    _from_pretrained_answers_as_the_adapter(ws / "merged")
    _same_evaluation(*_evaluated_like(ws, ws / "merged", QUICK), ws / "runs" / "default")


def _export_nf4(proc, ws):
    """The 2x2's QLoRA run (quant=nf4 on the default model, quantised while loading): dequantised, merged in float32
    (its 16-bit weights were upcast to float32), answering and evaluating as the 4-bit adapter did."""
    import torch

    run = ws / "multirun" / "2x2" / "0"
    choices = json.loads((run / "run_info.json").read_text())["choices"]
    assert (choices["quant"], choices["scope"], choices["model"]) == ("nf4", "llm", "tiny_warm")
    merged, _, check = _merged_weights_ok(ws / "merged_nf4", run, documents=1)
    assert check["dequantised"].startswith("4-bit nf4 ->") and check["dtype"] == "float32"
    assert all(v.dtype == torch.float32 for v in merged.values())  # nothing packed in 4-bit any more
    _from_pretrained_answers_as_the_adapter(ws / "merged_nf4")
    _same_evaluation(*_evaluated_like(ws, ws / "merged_nf4", QUICK), run)


def _export_per_domain(proc, ws):
    """One group's adapter of a per-domain run exports alone; evaluated on the run's test set, the merged folder
    gives that group's metrics and answers on the pages the run sent to it."""
    run = ws / "multirun" / "adapters" / "1"
    group = run / "adapters" / "receipts"
    check = json.loads((ws / "merged_receipts" / "export_check.json").read_text(encoding="utf-8"))
    assert check["greedy_equal"] and check["adapter"] == str(group.resolve())
    assert check["dtype"] == json.loads((group / "vlmsweep_adapter.json").read_text())["precision"]["weights"]
    _from_pretrained_answers_as_the_adapter(ws / "merged_receipts")
    pages = {s["id"] for s in samples(run) if s["adapter"] == "receipts"}
    assert pages and {s["domain"] for s in samples(run) if s["id"] in pages} == {"receipt"}
    metrics, by_id = _evaluated_like(ws, ws / "merged_receipts", PER_DOMAIN_RUN + ["eval.batch_size=1"])
    receipt = {k.removeprefix("by_domain.receipt."): v for k, v in metrics.items() if k.startswith("by_domain.receipt.")}
    _same_evaluation(receipt, by_id, run, prefix="by_group.receipts.", pages=pages)


def _predict_merged(proc, ws):
    """The exported folder answers the new scans exactly as the adapter did."""
    merged = {x["id"].rsplit("/", 1)[-1]: x["raw"] for x in _lines(ws / "predictions_merged.jsonl")}
    adapter = {x["id"].rsplit("/", 1)[-1]: x["raw"] for x in _lines(ws / "predictions.jsonl")}
    assert merged == adapter and sum(v is not None for v in merged.values()) == 5


def _export_bnb4(proc, ws):
    merged, _, check = _merged_weights_ok(ws / "merged_exp1", ws / "runs" / "exp1")
    assert check["dequantised"].startswith("4-bit nf4 ->") and "dequantised 4-bit nf4" in proc.stdout
    assert all(v.dtype.is_floating_point for v in merged.values())  # nothing packed in 4-bit any more


def _vllm_lora(proc, ws):
    from safetensors.torch import load_file

    lora = load_file(str(ws / "runs" / "default" / "adapter" / "adapter_model.safetensors"))
    out = load_file(str(ws / "lora" / "adapter_model.safetensors"))
    assert all(k.startswith("base_model.model.model.layers.") for k in out)  # the release's names, which vLLM maps
    back = {k.replace("base_model.model.model.", "base_model.model.model.language_model.", 1): v for k, v in out.items()}
    assert back.keys() == lora.keys() and all((back[k] == lora[k]).all() for k in lora)
    config = json.loads((ws / "lora" / "adapter_config.json").read_text())
    assert config["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


CHECKS = {"same_as_default": _same_outputs_as("default"), "same_as_own": _same_outputs_as("own"), "own_data": _own_data, "own_loop": _own_loop, "mined_loop": _mined_loop, "exp1": _exp("nf4", "llm"), "exp2": _exp("nf4", "all"),
          "exp3": _exp("bf16", "llm"), "exp4": _exp("bf16", "all"), "my_sweep": _my_sweep, "run_ok": _run_ok, "user_ids": _user_ids, "four_runs": _four_runs, "report": _report,
          "aa_runs": _aa_runs, "calibration": _calibration, "control_runs": _control_runs, "control_found": _control_found, "check_ok": _check_ok,
          "rendered": _rendered, "sroie": _sroie, "predict_scans": _predict_scans,
          "predict_manifest": _predict_manifest, "export_tiny": _export_tiny, "predict_merged": _predict_merged,
          "export_bnb4": _export_bnb4, "vllm_lora": _vllm_lora, "export_nf4": _export_nf4,
          "export_per_domain": _export_per_domain,
          "memory_exp2": _memory("qwen2_vl_2b_bnb4", "qwen2_vl", "quant=nf4, scope=all", "1024 visual", "exp2: ~12 GB"),
          "memory_qwen2_5": _memory("qwen2_5_vl_3b", "qwen2_5_vl", "quant=bf16, scope=llm")}
