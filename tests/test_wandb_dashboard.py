"""W&B as the comparison dashboard (issue #40), read from the offline run files a user's commands write (what
`wandb sync` uploads): runs named by their axes in a dated group, a per-sample table with the page, the test set
and adapter as artifacts, every loop cycle's metrics, and the report's effects as a table in the same group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import compose, made_once
from test_tracking import read_wandb_records
from userdata import vlmsweep
from vlmsweep.pipeline import tracking

SPEED = ["train.max_steps=1", "train.batch_size=2", "train.logging_steps=1", "eval.batch_size=2",
         "eval.max_new_tokens=8", "max_pixels=256tok", "data.train_size=2", "data.test_size=2", "data.mining_size=2",
         "data.regression_size=2", "tracker=wandb", "tracker.project=dash", "tracker.tags=[mine]"]
SWEEP = "multirun/2026-12-07/12-00-00"  # Hydra's default layout: the date folder, then the time of day


class OfflineRun:
    """One offline run's records, by kind."""

    def __init__(self, path: Path):
        self.path = path
        self.records = read_wandb_records(path)
        self.run = next(r.run for r in self.records if r.WhichOneof("record_type") == "run")
        self.config = {i.key: json.loads(i.value_json) for i in self.run.config.update}
        self.history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                        for r in self.records if r.WhichOneof("record_type") == "history"]
        self.artifacts = [r.artifact for r in self.records if r.WhichOneof("record_type") == "artifact"]
        self.metrics = {r.metric.name: r.metric for r in self.records if r.WhichOneof("record_type") == "metric"}

    def artifact(self, kind: str):
        found = [a for a in self.artifacts if a.type == kind]
        assert len(found) == 1, [a.name for a in self.artifacts]
        return found[0]

    def table(self, name: str) -> dict:
        """The table as W&B stores it in the run's run_table artifact (typed columns; images as files)."""
        art, entry = next((a, e) for a in self.artifacts if a.type == "run_table" for e in a.manifest.contents
                          if e.path == f"{name}.table.json")
        return {**json.loads(Path(entry.local_path).read_text(encoding="utf-8")),
                "images": [e.path for e in art.manifest.contents if e.path.startswith("media/images/")]}


def offline_runs(folder: Path, pattern: str = "**") -> list[OfflineRun]:
    """The offline runs under FOLDER (in the subfolders PATTERN matches: `[0-9]*` for a multirun's jobs alone)."""
    return [OfflineRun(p) for p in sorted(folder.glob(f"{pattern}/wandb/offline-run-*/run-*.wandb"))]


def column_type(table: dict, column: str) -> set[str]:
    t = table["column_types"]["params"]["type_map"][column]
    return {x["wb_type"] for x in t["params"]["allowed_types"]} if t["wb_type"] == "union" else {t["wb_type"]}


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory, offline_env):
    """The multirun, once in the session (its two tests may land on two workers); the report test adds report/ to it,
    so the runs test reads the jobs' folders alone."""
    cwd = made_once(tmp_path_factory, "dash", lambda folder: vlmsweep(
        ["-m", "quant=nf4,bf16", "seed=0,1", *SPEED, f"hydra.sweep.dir={SWEEP}"], folder))
    return cwd / SWEEP


@pytest.mark.slow
def test_a_2x2_is_four_runs_named_by_their_axes_in_the_dated_group_with_pages_and_artifacts(two_by_two):
    runs = offline_runs(two_by_two, "[0-9]*")
    assert len(runs) == 4
    assert sorted(r.config["trial"]["job"] for r in runs) == [0, 1, 2, 3]
    assert sorted(r.run.display_name for r in runs) == ["quant=bf16 seed=0", "quant=bf16 seed=1",
                                                        "quant=nf4 seed=0", "quant=nf4 seed=1"]
    assert {(r.run.run_group, r.run.job_type, r.run.project) for r in runs} == {("2026-12-07/12-00-00", "train", "dash")}
    for r in runs:
        quant, seed = (part.split("=")[1] for part in r.run.display_name.split())
        assert {f"quant={quant}", f"seed={seed}", "scope=llm", "mine", f"job={r.config['trial']['job']}"} <= set(r.run.tags)
        assert r.config["trial"]["params"] == {"quant": quant}
        # the direction of each logged metric comes from vlmsweep.metrics
        assert r.metrics["train/loss"].summary.min and r.metrics["train/loss"].step_metric == tracking.STEP

    tables = [r.table("samples") for r in runs]
    for table in tables:
        assert column_type(table, "page") >= {"image-file"} and len(table["images"]) == len(table["data"]) == 2
        assert "number" in column_type(table, "contract.strict_parse_rate")
        assert "number" in column_type(table, "text.raw_cer")
        assert "boolean" in column_type(table, "tag/parse_fail") and "boolean" in column_type(table, "tag/digit_flip")
    ids = [[row[table["columns"].index("id")] for row in table["data"]] for table in tables]
    assert all(i == ids[0] for i in ids)  # W&B's table comparison joins the runs page by page

    test_sets = {(r.artifact("dataset").name, r.artifact("dataset").digest) for r in runs}
    assert len(test_sets) == 1 and next(iter(test_sets))[0].startswith("test-synthetic-")
    for r in runs:
        model = r.artifact("model")
        meta = json.loads(model.metadata)
        assert model.name == "adapter-" + r.run.display_name.replace("=", "-").replace(" ", "-")
        assert meta["choices"]["quant"] in r.run.display_name and "contract.strict_parse_rate" in meta["metrics"]
        assert any(e.path == "adapter_config.json" for e in model.manifest.contents)


@pytest.mark.slow
def test_the_report_logs_its_effects_as_a_table_into_the_runs_project_and_group(two_by_two):
    vlmsweep([str(two_by_two), "--wandb", "offline"], two_by_two.parent, module="vlmsweep.report")
    (report,) = offline_runs(two_by_two / "report")
    assert (report.run.display_name, report.run.run_group, report.run.job_type, report.run.project) == (
        "report", "2026-12-07/12-00-00", "report", "dash")
    effects = report.table("report/effects")
    rows = [dict(zip(effects["columns"], row)) for row in effects["data"]]
    quant = [r for r in rows if r["effect"] == "quant" and r["metric"] == "contract.strict_parse_rate"]
    assert len(quant) == 1 and quant[0]["higher_is_better"] is True and quant[0]["seeds_per_cell"] == 2
    assert quant[0]["n_samples"] == 2 and {"estimate", "low", "high", "verdict", "mde"} <= set(quant[0])
    assert "number" in column_type(effects, "estimate")
    assert report.artifact("report").manifest.contents[0].path == "report.html"


@pytest.mark.slow
def test_every_loop_cycle_logs_its_metrics(tmp_path, offline_env):
    """Each cycle's row used to be logged at a step below W&B's own (its tables had advanced it): W&B printed
    'Tried to log to step 2 that is less than the current step 3 ... ignored' and kept no loop/* row at all."""
    vlmsweep(["loop.cycles=2", *SPEED, "hydra.run.dir=loop"], tmp_path)
    (run,) = offline_runs(tmp_path / "loop")
    assert run.run.job_type == "loop"
    rows = [h for h in run.history if "loop/cycle" in h]
    assert sorted(h["loop/cycle"] for h in rows) == [0, 1, 2]
    assert all("loop/test/contract.strict_parse_rate" in h and "loop/regression/text.raw_cer" in h for h in rows)
    assert run.metrics["loop/test/contract.strict_parse_rate"].step_metric == "loop/cycle"
    assert run.metrics["loop/test/contract.strict_parse_rate"].summary.max
    # every cycle's training step, after the previous cycles' (train.max_steps=1)
    assert sorted(h[tracking.STEP] for h in run.history if "train/loss" in h) == [1, 2, 3]


def test_outside_hydra_a_run_keeps_the_callers_name_and_group_and_gets_seed_and_own_tags():
    cfg = compose(["tracker=wandb", "seed=3", "tracker.tags=[baseline]"])
    who = tracking.identity(cfg, "r1", "exp")
    assert (who["name"], who["group"], who["job_type"]) == ("r1", "exp", "train")
    assert {"seed=3", "baseline", "quant=bf16"} <= set(who["tags"])
    assert tracking.identity(compose(["tracker=wandb", "tracker.group=mine"]), "r1", "exp")["group"] == "mine"
    assert tracking.experiment_group(Path("outputs/multirun/2026-12-07/12-00-00")) == "2026-12-07/12-00-00"
    assert tracking.experiment_group(Path("runs/ablation")) == "ablation"
