"""Evaluation during training (issue #41): the validation split, the callback's points, selection and early stop
(vlmsweep/train/validation.py), their config checks, and the command line's history, kept adapter and refusals."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import TrainerControl, TrainerState

from conftest import compose
from vlmsweep.data import needed_splits
from vlmsweep.train.validation import ValidationCallback, better, read_history
from userdata import FAST_CLI, line, run_dir, vlmsweep, write_user_data, SAMPLES


def fake_run(values: list[float], tmp_path: Path, select: str | None, higher: bool = True, patience: int = 0,
             every: int = 10, max_steps: int = 50):
    """Drives a ValidationCallback over a linear model whose weight is set to the step before each step's end, the
    validation returning values[i] at its i-th point. Returns (callback, model, sink calls, steps trained)."""
    model = torch.nn.Linear(2, 1, bias=False)
    scores = iter(values)
    sink: list[tuple[dict, int]] = []

    def evaluate():
        assert not torch.is_grad_enabled()
        torch.rand(3)  # generation draws from the random state: the training's must not see it
        random.random()
        return {"content.field_em": next(scores), "contract.strict_parse_rate": 1.0, "tags.run_on": 2.0,
                "by_domain.receipt.content.field_em": 0.5}

    cb = ValidationCallback(model, evaluate, every, tmp_path / "metrics_history.jsonl", lambda v, s: sink.append((v, s)),
                            select, higher, patience)
    args = SimpleNamespace(output_dir=str(tmp_path / "checkpoints"))
    state, control = TrainerState(max_steps=max_steps, is_world_process_zero=True), TrainerControl()
    cb.on_train_begin(args, state, control)
    for step in range(1, max_steps + 1):
        state.global_step = step
        with torch.no_grad():
            model.weight.fill_(float(step))
        torch.manual_seed(step)
        random.seed(step)
        cb.on_step_end(args, state, control)
        if control.should_training_stop:
            break
    return cb, model, sink, step


def test_points_every_n_steps_and_at_the_last_the_history_and_curves(tmp_path):
    cb, model, sink, steps = fake_run([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], tmp_path, None, every=10, max_steps=55)
    history = read_history(tmp_path / "metrics_history.jsonl")
    assert [p["step"] for p in history] == [10, 20, 30, 40, 50, 55] and steps == 55
    # the overall contract and content figures only: no tag counts, no per-domain scopes
    assert set(history[0]) == {"step", "seconds", "content.field_em", "contract.strict_parse_rate"}
    assert [s for _, s in sink] == [10, 20, 30, 40, 50, 55] and sink[0][0] == {
        "val/content.field_em": 0.1, "val/contract.strict_parse_rate": 1.0}
    assert cb.metrics()["train.eval_points"] == 6 and "train.selected_step" not in cb.metrics()
    cb.restore_best()  # no selection: the model is the last step's
    assert model.weight.flatten().tolist() == [55.0, 55.0]


@pytest.mark.parametrize("select, higher, best_step", [("content.field_em", True, 30), ("text.raw_cer", False, 10)])
def test_the_best_point_in_the_metrics_direction_is_restored_and_its_checkpoint_spared(tmp_path, select, higher,
                                                                                       best_step):
    from vlmsweep.metrics import higher_is_better

    assert higher_is_better(select) is higher  # the direction the run passes comes from the registry
    values = [0.2, 0.5, 0.7, 0.7, 0.4]  # a tie keeps the earlier step
    cb, model, _, _ = fake_run(values, tmp_path, "content.field_em", higher, max_steps=50)
    cb.restore_best()
    assert model.weight.flatten().tolist() == [float(best_step)] * 2
    m = cb.metrics()
    assert m["train.selected_step"] == best_step and m["train.stopped_early"] == 0.0
    assert m["train.selected_value"] == values[best_step // 10 - 1]


def test_early_stop_after_patience_points_without_improvement(tmp_path):
    cb, model, _, steps = fake_run([0.2, 0.5, 0.4, 0.5, 0.9, 1.0], tmp_path, "content.field_em", patience=2,
                                   max_steps=60)
    assert steps == 40 and cb.metrics()["train.stopped_early"] == 1.0 and cb.metrics()["train.eval_points"] == 4
    cb.restore_best()
    assert model.weight.flatten().tolist() == [20.0, 20.0]


def test_a_nan_never_wins_and_the_random_state_is_the_trainings(tmp_path):
    assert better(float("nan"), None, True) and not better(float("nan"), 0.1, True) and better(0.0, float("nan"), True)
    assert better(0.1, 0.2, False) and not better(0.2, 0.2, True)
    model = torch.nn.Linear(2, 1)
    cb = ValidationCallback(model, lambda: (torch.rand(5), random.random(), {})[2], 1, tmp_path / "h.jsonl")
    state = TrainerState(max_steps=1, is_world_process_zero=True)
    state.global_step = 1
    torch.manual_seed(0), random.seed(0)
    expected = (torch.rand(1).item(), random.random())
    torch.manual_seed(0), random.seed(0)
    cb.on_step_end(SimpleNamespace(output_dir=str(tmp_path)), state, TrainerControl())
    assert (torch.rand(1).item(), random.random()) == expected


def test_the_validation_split_is_read_only_when_evaluating_during_training():
    assert needed_splits(True, True, False) == ("train", "test")
    assert needed_splits(True, True, False, validate=True) == ("train", "test", "validation")


@pytest.mark.parametrize("overrides, message", [
    (["train.select=content.field_em"], r"train.select=content.field_em needs evaluations.*train.eval_every"),
    (["train.eval_every=5", "train.select=content.feild_em"], r"train.select=content.feild_em: expected a validation"),
    (["train.eval_every=5", "train.select=train.steps"], r"train.select=train.steps: a count has no better side"),
    (["train.eval_every=5", "train.select=cost.eval_seconds_per_sample"], r"expected a validation metric"),
    (["train.eval_every=5", "train.early_stop=3"], r"train.early_stop=3 stops on the selected metric"),
    (["train.eval_every=5", "data.val_size=0"], r"needs a validation set: data.val_size > 0 or data.val_manifest"),
    (["train.eval_every=-1"], r"train.eval_every=-1: expected steps between"),
    (["train.eval_every=5", "adapters=per_domain"], r"adapters=per_domain is not supported yet"),
    (["train.eval_every=5", "train.enabled=false"], r"this run trains nothing"),
])
def test_evaluation_during_training_options_are_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        compose(overrides)
    assert compose(["train.eval_every=5", "train.select=text.raw_cer", "train.early_stop=2"]).train.select == "text.raw_cer"


# ----------------------------------------------------------------------------- through the command line


def test_a_validation_manifest_sharing_a_page_with_the_test_manifest_is_refused_naming_the_ids(tmp_path, offline_env):
    m = write_user_data(tmp_path)
    shared = m["all"].parent / "val.jsonl"  # its second line is the test manifest's first page under another id
    shared.write_text(line(*SAMPLES[4]) + "\n" + line("my-val-2", *SAMPLES[2][1:]) + "\n", encoding="utf-8")
    proc = vlmsweep(["data.train_manifest=my_data/train.jsonl", "data.test_manifest=my_data/test.jsonl",
                     "data.val_manifest=my_data/val.jsonl", "train.eval_every=1", *FAST_CLI, "hydra.run.dir=runs/v"],
                    tmp_path, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "the validation set: 1 validation sample(s) would leak" in proc.stderr
    assert "my-val-2 (origin manifest) = test id rcpt-001 (same image file)" in proc.stderr
    assert "trainable parameters" not in proc.stdout + proc.stderr  # refused before the model loaded


@pytest.mark.slow
def test_eval_every_and_select_keep_the_adapter_of_the_recorded_step_and_test_it(tmp_path, offline_env):
    """The done-when command of issue #41, made small: a point every 10 steps, the adapter kept is the selected
    step's (its tensors equal that step's checkpoint, not the last one's), and the test set is scored with it."""
    from safetensors.torch import load_file

    proc = vlmsweep(["train.eval_every=10", "train.select=content.field_em", "train.max_steps=20", "train.save_steps=10",
                     "train.batch_size=1", "data.train_size=2", "data.test_size=2", "data.val_size=2",
                     "max_pixels=64tok", "eval.batch_size=2", "eval.max_new_tokens=16", "tracker=none",
                     "hydra.run.dir=runs/sel"], tmp_path)
    out = run_dir(proc)
    history = read_history(out / "metrics_history.jsonl")
    assert [p["step"] for p in history] == [10, 20]
    assert {"contract.strict_parse_rate", "contract.schema_valid_rate", "text.raw_cer"} <= set(history[0])
    metrics = json.loads((out / "metrics.json").read_text())
    step = int(metrics["train.selected_step"])
    assert step in (10, 20) and metrics["train.eval_points"] == 2 and metrics["cost.eval_during_train_seconds"] > 0
    kept = load_file(out / "adapter" / "adapter_model.safetensors")
    at = {s: load_file(out / "checkpoints" / f"checkpoint-{s}" / "adapter_model.safetensors") for s in (10, 20)}
    same = {s: all(torch.equal(kept[k], t[k]) for k in kept) and set(kept) == set(t) for s, t in at.items()}
    assert same == {10: step == 10, 20: step == 20}  # the two checkpoints differ: only the selected one matches
    report = (out / "report.md").read_text()
    assert f"adapter of **step {step}**" in report
    assert "![validation curve](metrics_history.png)" in report and (out / "metrics_history.png").stat().st_size > 1000
    assert "contract.strict_parse_rate" in metrics and (out / "samples.jsonl").is_file()  # the test set, scored


def test_the_loop_report_says_which_step_each_cycle_kept():
    from vlmsweep.loop.report import selection_lines
    from vlmsweep.loop.state import CycleResult

    history = [CycleResult(c, {"train.selected_value": v}, {}, {}, {"selected_step": s, "steps": 30})
               for c, s, v in ((0, 20, 0.25), (1, 30, float("nan")))]
    md = "\n".join(selection_lines(history, compose(["loop.cycles=1", "train.eval_every=10",
                                                     "train.select=content.field_em"])))
    assert "## Selected steps" in md and "| 0 | 20 | 30 | 0.250 |" in md and "| 1 | 30 | 30 | – |" in md
    assert selection_lines(history, compose(["loop.cycles=1"])) == []


@pytest.mark.slow
def test_each_loop_cycle_selects_its_step_on_the_validation_set(tmp_path, offline_env):
    proc = vlmsweep(["loop.cycles=1", "loop.noise_seeds=0", "loop.mine_per_tag=1", "loop.synth_per_tag=1",
                     "train.eval_every=1", "train.select=text.raw_cer", "train.max_steps=2", "train.batch_size=2",
                     "data.train_size=2", "data.test_size=2", "data.mining_size=2", "data.regression_size=2",
                     "data.val_size=2", "max_pixels=64tok", "eval.batch_size=2", "eval.max_new_tokens=8", "tracker=none",
                     "hydra.run.dir=runs/loop"], tmp_path)
    out = tmp_path / "runs" / "loop"
    for c in (0, 1):
        assert [p["step"] for p in read_history(out / f"cycle_{c}" / "metrics_history.jsonl")] == [1, 2]
        summary = json.loads((out / f"cycle_{c}" / "cycle.json").read_text())
        assert summary["selected_step"] in (1, 2) and summary["steps"] == 2
    assert (out / "splits" / "validation.jsonl").is_file()  # fixed at cycle 0 like the other splits
    assert "## Selected steps" in (out / "report.md").read_text() and proc.returncode == 0
