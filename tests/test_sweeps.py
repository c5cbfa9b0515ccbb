"""Optuna sweeps: resume from SQLite to the requested total; a failing trial is recorded and the sweep goes on;
which RUNNING trials count toward the total (vlmsweep.sweeper)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from helpers import REPO, TINY_RUN, read_json, vlmsweep
from vlmsweep.metric_names import direction_of
from vlmsweep.sweeper import HEARTBEAT, INTERRUPTED, WORKER, Progress, host_key, progress, stale_reason, study_progress

SWEEP = ["-m", "+sweep=max_pixels", 'hydra.sweeper.params.max_pixels="choice(256tok,512tok)"']
# No evaluation: the objective is the training loss, so a trial is model load + one step (seconds).
NO_EVAL = ["eval.enabled=false", "sweep.objective=train.loss"]


def states(tmp_path):
    study = optuna.load_study(study_name="max_pixels", storage=f"sqlite:///{tmp_path}/outputs/sweeps/max_pixels/optuna.db")
    return [t.state.name for t in study.trials]


def test_direction_comes_from_the_metric_and_unknown_objective_fails_early(tmp_path):
    assert direction_of("content.field_em") == "maximize"
    assert direction_of("content.cer") == "minimize" and direction_of("rate.leakage") == "minimize"
    assert direction_of("by_domain.prescription_ko.content.anls") == "maximize"
    proc = vlmsweep(*SWEEP, "sweep.objective=content.f1_typo", *TINY_RUN, cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "unknown metric 'content.f1_typo'" in proc.stderr
    assert not list(tmp_path.glob("outputs/sweeps/max_pixels/*/metrics.json"))  # nothing trained


def test_killed_sweep_resumes_to_the_requested_total(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "vlmsweep", *SWEEP, "sweep.trials=3", *NO_EVAL, *TINY_RUN]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    # the second trial's folder exists once the first trial was told to the study
    while time.time() < deadline and len(list(tmp_path.glob("outputs/sweeps/max_pixels/*/run_info.json"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # during the second trial
    proc.wait()
    assert states(tmp_path).count("COMPLETE") == 1
    # the killed worker's RUNNING trial is not a result: its process is gone, so it does not count
    assert study_progress(f"sqlite:///{tmp_path}/outputs/sweeps/max_pixels/optuna.db", "max_pixels") == Progress(1, 0, 1)
    vlmsweep(*SWEEP, "sweep.trials=3", *NO_EVAL, *TINY_RUN, cwd=tmp_path)  # the same command again
    assert states(tmp_path) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]  # trial 1 declared interrupted
    study = optuna.load_study(study_name="max_pixels", storage=f"sqlite:///{tmp_path}/outputs/sweeps/max_pixels/optuna.db")
    assert "exited" in study.trials[1].system_attrs[INTERRUPTED]
    results = read_json_yaml(tmp_path / "outputs/sweeps/max_pixels/optimization_results.yaml")
    assert "max_pixels" in results["best_params"]


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    # 512 visual tokens + the answer exceed 700 tokens (an error, never a cut answer); 256 fit.
    vlmsweep(*SWEEP, "sweep.trials=3", "train.max_seq_len=700", *NO_EVAL, *TINY_RUN, cwd=tmp_path)
    study_states = states(tmp_path)
    assert len(study_states) == 3 and "FAIL" in study_states and "COMPLETE" in study_states
    infos = [read_json(p) for p in tmp_path.glob("outputs/sweeps/max_pixels/*/run_info.json")]
    failed = [i for i in infos if i["status"] == "failed"]
    assert failed and all("exceed train.max_seq_len=700" in i["error"] for i in failed)
    assert all(i["choices"]["max_pixels"] == "512tok" for i in failed)


def test_which_trials_count_toward_the_total():
    """Finished trials count, failed runs too; a RUNNING trial counts while its worker beats (and, on this
    machine, while its process exists); a trial whose worker died is interrupted and does not count."""
    study = optuna.create_study()
    now = 1_000_000.0
    done = study.ask()
    study.tell(done, 1.0)
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    mine = study.ask()  # this live process, beating
    mine.set_system_attr(WORKER, {"host": host_key(), "pid": os.getpid()})
    mine.set_system_attr(HEARTBEAT, now - 10)
    dead = study.ask()  # a pid of this machine that has exited
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead.set_system_attr(WORKER, {"host": host_key(), "pid": child.pid})
    dead.set_system_attr(HEARTBEAT, now)
    remote_fresh, remote_silent, unknown = study.ask(), study.ask(), study.ask()
    for trial, beat in ((remote_fresh, now - 59), (remote_silent, now - 61)):
        trial.set_system_attr(WORKER, {"host": "node7", "pid": 123})
        trial.set_system_attr(HEARTBEAT, beat)
    interrupted = study.ask()
    interrupted.set_system_attr(INTERRUPTED, "its worker process 9 on this machine has exited")
    study.tell(interrupted, state=optuna.trial.TrialState.FAIL)
    by_number = {t.number: t for t in study.trials}
    reasons = {t.number: stale_reason(by_number[t.number], now, grace_period=60)
               for t in (mine, dead, remote_fresh, remote_silent, unknown)}
    assert reasons[mine.number] is None and reasons[remote_fresh.number] is None
    assert f"process {child.pid}" in reasons[dead.number] and "exited" in reasons[dead.number]
    assert "no heartbeat for more than 60 s" in reasons[remote_silent.number]
    assert "no vlmsweep worker recorded" in reasons[unknown.number]
    # finished: done, failed; running: mine, remote_fresh; interrupted: dead, remote_silent, unknown, interrupted
    assert progress(study.trials, grace_period=60, now=now) == Progress(2, 2, 4)


def read_json_yaml(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_a_tie_is_reported_as_a_tie():
    from vlmsweep.sweeps import best_or_tie

    assert best_or_tie([(0, 0.0, "max_pixels=256tok"), (1, 0.0, "max_pixels=512tok")], True) == "all 2 trials score 0: no best"
    assert best_or_tie([(0, 0.5, "a=1"), (1, 0.7, "a=2"), (2, 0.7, "a=3")], True).startswith("a=2, a=3 tie at 0.7")
    assert best_or_tie([(0, 0.5, "a=1"), (1, 0.7, "a=2")], False) == "best: a=1 (trial 0) with 0.5"
    # the same setting twice is one setting, not a tie
    assert best_or_tie([(0, 0.7, "a=2"), (1, 0.5, "a=1"), (2, 0.7, "a=2")], True) == "best: a=2 (trials 0, 2) with 0.7"


def test_a_sweep_through_the_command_line_then_its_report_and_a_resumed_invocation(tmp_path):
    """The user's two commands: an Optuna sweep over named budgets, then the report on its folder; a second
    invocation with a larger total adds its trial to the same study and the same report."""
    sweep = ["-m", "+sweep=max_pixels", 'hydra.sweeper.params.max_pixels="choice(256tok,512tok)"', *TINY_RUN,
             "eval.max_new_tokens=4"]
    proc = vlmsweep(*sweep, "sweep.trials=2", cwd=tmp_path, timeout=900)
    assert "2 trials in total, 0 finished, 2 to run" in proc.stdout
    assert "2 of 2 trials finished" in proc.stdout or "1 of 2 trials finished" in proc.stdout
    assert "is_gradient_checkpointing" not in proc.stderr  # a library FutureWarning the user cannot act on
    folder = tmp_path / "outputs" / "sweeps" / "max_pixels"
    results = read_json_yaml(folder / "optimization_results.yaml")
    # the random tiny model scores 0 everywhere: a tie, not a best picked by trial order
    values = [read_json(p)["content.e2e_field_em"] for p in folder.glob("*/metrics.json")]
    if len(set(values)) == 1:
        assert results["summary"] == f"all 2 trials score {values[0]:.4g}: no best" and results["best_params"] is None
    report = vlmsweep(str(folder), module="vlmsweep.report", cwd=tmp_path)
    page = (folder / "report" / "report.html").read_text()
    assert (folder / "report" / "plots" / "visual_budget.png").stat().st_size > 1000
    assert "trial 0: max_pixels=" in page and "max_pixels=256tok" in page and "max_pixels=512tok" in page
    assert "visual-token budget" in page and "Optuna study max_pixels: 2 trials" in page
    assert "report.html" in report.stdout

    vlmsweep(*sweep, "sweep.trials=3", cwd=tmp_path, timeout=900)  # resumed: one more trial, its own timestamped folder
    assert len([p for p in folder.iterdir() if (p / "run_info.json").exists()]) == 3
    vlmsweep(str(folder), module="vlmsweep.report", cwd=tmp_path)
    md = (folder / "report" / "summary.md").read_text()
    assert "Optuna study max_pixels: 3 trials" in md and "| trial 2 |" in md and "3 COMPLETE" in md
    assert "sweep.trials" not in md  # 2 vs 3 trials asked for is not an axis
