"""Optuna sweeps: resume from SQLite to the requested total; a failing trial is recorded and the sweep goes on."""

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
from vlmsweep.sweeps import trials_left

SWEEP = ["-m", "+sweep=max_pixels", "sweep.objective=contract.key_set_rate", 'hydra.sweeper.params.max_pixels="choice(256tok,512tok)"']


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
    cmd = [sys.executable, "-m", "vlmsweep", *SWEEP, "sweep.trials=3", *TINY_RUN]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    # the second trial's folder exists once the first trial was told to the study
    while time.time() < deadline and len(list(tmp_path.glob("outputs/sweeps/max_pixels/*/run_info.json"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # during the second trial
    proc.wait()
    assert states(tmp_path).count("COMPLETE") == 1
    assert trials_left(f"sqlite:///{tmp_path}/outputs/sweeps/max_pixels/optuna.db", "max_pixels", 3) == 2
    vlmsweep(*SWEEP, "sweep.trials=3", *TINY_RUN, cwd=tmp_path)  # the same command again
    assert states(tmp_path).count("COMPLETE") == 3  # the killed trial stays RUNNING and is not counted
    results = read_json_yaml(tmp_path / "outputs/sweeps/max_pixels/optimization_results.yaml")
    assert "max_pixels" in results["best_params"]


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    # 512 visual tokens + the answer exceed 700 tokens (an error, never a cut answer); 256 fit.
    vlmsweep(*SWEEP, "sweep.trials=3", "train.max_seq_len=700", *TINY_RUN, cwd=tmp_path)
    study_states = states(tmp_path)
    assert len(study_states) == 3 and "FAIL" in study_states and "COMPLETE" in study_states
    infos = [read_json(p) for p in tmp_path.glob("outputs/sweeps/max_pixels/*/run_info.json")]
    failed = [i for i in infos if i["status"] == "failed"]
    assert failed and all("exceed train.max_seq_len=700" in i["error"] for i in failed)
    assert all(i["choices"]["max_pixels"] == "512tok" for i in failed)


def read_json_yaml(path):
    import yaml

    return yaml.safe_load(path.read_text())
