"""A pass's evaluators: one list, run in order with one predict function, each folder written once (no model here:
predict is a stand-in system that answers every page with its own target)."""

from __future__ import annotations

from pathlib import Path

from conftest import compose
from helpers import read_json
from vlmsweep import prompts
from vlmsweep.data import Record
from vlmsweep.data.schema import empty_target
from vlmsweep.evaluate import score_outputs
from vlmsweep.evaluate.evaluators import EvalSet, PerturbControl, Slices, for_pass
from vlmsweep.pipeline import stages


def recs(prefix: str, n: int) -> list[Record]:
    domains = ("receipt", "prescription_ko")
    return [Record(id=f"{prefix}{i}", image=Path(f"/nowhere/{prefix}{i}.png"), domain=domains[i % 2],
                   target=empty_target(prompts.schema_name(domains[i % 2])), image_domain=domains[i % 2])
            for i in range(n)]


class Info:
    """run_info.json's updates, kept in memory."""

    def __init__(self):
        self.data: dict = {}

    def update(self, **values):
        self.data.update(values)


def system(cfg, asked: list[list[str]]):
    """A predict function that answers each page with its target (scored with the run's eval.perturb), noting what it was asked."""
    def predict(records):
        asked.append([r.id for r in records])
        return score_outputs([prompts.serialize(r.target) for r in records], records,
                             perturb=(cfg.eval.perturb.digit_flip, cfg.eval.perturb.blank, cfg.seed))
    return predict


def test_the_sets_then_slices_and_the_perturbation_control_each_folder_written_once(tmp_path, monkeypatch):
    cfg = compose(["eval.slices=[synthetic,numeric_challenge]", "eval.perturb.blank=0.5"], output_dir=tmp_path)
    test, numeric = recs("t", 4), recs("n", 3)
    p = stages.Pass(out_dir=tmp_path, train=[], evals={"test": (test, tmp_path)}, tracker=None, samples_table=None,
                    slices={"synthetic": test, "numeric_challenge": numeric})
    evaluators = for_pass(cfg, p.evals, p.main_set, p.slices, p.out_dir)
    assert [type(e) for e in evaluators] == [EvalSet, Slices, PerturbControl]
    assert [e.name for e in for_pass(compose([]), p.evals, "test", {}, tmp_path)] == ["test"]  # nothing configured

    asked: list[list[str]] = []
    done = stages.evaluate_stage(evaluators, system(cfg, asked))
    assert asked == [["t0", "t1", "t2", "t3"], ["n0", "n1", "n2"]]  # the synthetic slice is the test set: scored once

    written: list[Path] = []
    real = stages.write_stage
    monkeypatch.setattr(stages, "write_stage", lambda cfg, folder, *a, **k: written.append(folder) or real(cfg, folder, *a, **k))
    info = Info()
    result = stages.write_evaluations(cfg, p, done, {"train.loss": 0.5}, info)
    assert sorted(written) == sorted([tmp_path, tmp_path / "slices" / "numeric_challenge"])  # each folder once
    assert written[-1] == tmp_path  # the main set last, with what the others add
    assert set(result.sets) == {"test"}
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics == result.metrics and metrics["train.loss"] == 0.5
    assert metrics["slice/synthetic/samples"] == 4 and metrics["slice/numeric_challenge/samples"] == 3
    assert metrics["slice/numeric_challenge/contract.key_set_rate"] == read_json(
        tmp_path / "slices" / "numeric_challenge" / "metrics.json")["contract.key_set_rate"]
    assert "train.loss" not in read_json(tmp_path / "slices" / "numeric_challenge" / "metrics.json")
    assert "## Slices" in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert not (tmp_path / "slices" / "synthetic").exists()
    assert info.data["perturb"]["blank"] == 0.5 and info.data["perturb"]["answers_blanked"] == 2


def test_a_pass_without_its_main_set_writes_the_training_metrics_alone(tmp_path):
    cfg = compose(["eval.slices=[numeric_challenge]"], output_dir=tmp_path)
    p = stages.Pass(out_dir=tmp_path, train=recs("r", 2), evals={}, tracker=None, slices={"numeric_challenge": recs("n", 2)})
    evaluators = for_pass(cfg, p.evals, p.main_set, p.slices, p.out_dir)
    assert evaluators == []  # slices are scored beside a main set only
    result = stages.write_evaluations(cfg, p, stages.evaluate_stage(evaluators, system(cfg, [])), {"train.loss": 0.5}, Info())
    assert read_json(tmp_path / "metrics.json") == result.metrics == {"train.loss": 0.5}
    assert sorted(f.name for f in tmp_path.iterdir()) == ["metrics.json"]
