"""Optuna sweeps (hydra/sweeper=optuna, vlmsweep.sweep.sweeper): resume from SQLite to the requested total after kill -9;
a failing trial is recorded with its reason and the sweep goes on; which RUNNING trials count toward the total;
upstream's config surface (params syntax, every sampler); a two-objective sweep's Pareto front, its report and
optuna-dashboard on its storage."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from helpers import REPO, TINY_RUN, read_json, vlmsweep
from vlmsweep.config import CONF_DIR
from vlmsweep.metrics import direction_of
from vlmsweep.sweep.sweeper import (HEARTBEAT, INTERRUPTED, WORKER, Progress, host_key, progress, set_system_attr,
                              stale_reason, study_progress)

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


@pytest.mark.slow
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
    (first,) = [t for t in optuna.load_study(study_name="max_pixels", storage=f"sqlite:///{tmp_path}/outputs/sweeps/"
                                                "max_pixels/optuna.db").trials if t.state.name == "COMPLETE"]
    vlmsweep(*SWEEP, "sweep.trials=3", *NO_EVAL, *TINY_RUN, cwd=tmp_path)  # the same command again
    assert states(tmp_path) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]  # trial 1 declared interrupted
    study = optuna.load_study(study_name="max_pixels", storage=f"sqlite:///{tmp_path}/outputs/sweeps/max_pixels/optuna.db")
    assert "exited" in study.trials[1].system_attrs[INTERRUPTED]
    # nothing lost: the trial told before the kill is kept as it was (value, folder), the total is exactly 3
    assert study.trials[0].value == first.value and study.trials[0].user_attrs["run_dir"] == first.user_attrs["run_dir"]
    assert study_progress(f"sqlite:///{tmp_path}/outputs/sweeps/max_pixels/optuna.db", "max_pixels") == Progress(3, 0, 1)
    assert all((tmp_path / "outputs/sweeps/max_pixels" / d).is_dir() for d in
               [Path(t.user_attrs["run_dir"]).name for t in study.trials if t.state.name == "COMPLETE"])
    results = read_json_yaml(tmp_path / "outputs/sweeps/max_pixels/optimization_results.yaml")
    assert "max_pixels" in results["best_params"]
    # the killed trial's own folder says so: never left `running`
    complete = {Path(t.user_attrs["run_dir"]).name for t in study.trials if t.state.name == "COMPLETE"}
    killed = [read_json(p) for p in (tmp_path / "outputs/sweeps/max_pixels").glob("*/run_info.json")
              if p.parent.name not in complete]
    assert [i["status"] for i in killed] == ["interrupted"]


@pytest.mark.slow
def test_two_workers_on_one_study_draw_from_their_own_seed_streams_and_count_after_telling(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "vlmsweep", *SWEEP, "sweep.trials=2", *NO_EVAL, *TINY_RUN]
    workers = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="max_pixels", storage=f"sqlite:///{tmp_path}/outputs/sweeps/max_pixels/optuna.db")
    # a sampler seeded with `seed` alone in each worker suggests the same first value twice
    assert sorted(t.params["max_pixels"] for t in study.trials) == ["256tok", "512tok"]
    paces = [x for out in outputs for x in out.splitlines() if "trials finished, the last" in x]
    assert paces and not any(": 0 of 2 trials finished" in x for x in paces)  # printed once its trial was told


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    # 512 visual tokens + the answer exceed 700 tokens (an error, never a cut answer); 256 fit.
    vlmsweep(*SWEEP, "sweep.trials=3", "train.max_seq_len=700", *NO_EVAL, *TINY_RUN, cwd=tmp_path)
    study_states = states(tmp_path)
    assert len(study_states) == 3 and "FAIL" in study_states and "COMPLETE" in study_states
    infos = [read_json(p) for p in tmp_path.glob("outputs/sweeps/max_pixels/*/run_info.json")]
    failed = [i for i in infos if i["status"] == "failed"]
    assert failed and all("exceed train.max_seq_len=700" in i["error"] for i in failed)
    assert all(i["choices"]["max_pixels"] == "512tok" for i in failed)
    # the study records the reason too (optuna-dashboard shows it among the trial's user attributes)
    study = optuna.load_study(study_name="max_pixels", storage=f"sqlite:///{tmp_path}/outputs/sweeps/max_pixels/optuna.db")
    failed_trials = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed_trials and all("exceed train.max_seq_len=700" in t.user_attrs["error"] for t in failed_trials)
    assert all(t.params == {"max_pixels": "512tok"} for t in failed_trials)


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
    set_system_attr(study, mine, WORKER, {"host": host_key(), "pid": os.getpid()})
    set_system_attr(study, mine, HEARTBEAT, now - 10)
    dead = study.ask()  # a pid of this machine that has exited
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    set_system_attr(study, dead, WORKER, {"host": host_key(), "pid": child.pid})
    set_system_attr(study, dead, HEARTBEAT, now)
    remote_fresh, remote_silent, unknown = study.ask(), study.ask(), study.ask()
    for trial, beat in ((remote_fresh, now - 59), (remote_silent, now - 61)):
        set_system_attr(study, trial, WORKER, {"host": "node7", "pid": 123})
        set_system_attr(study, trial, HEARTBEAT, beat)
    interrupted = study.ask()
    set_system_attr(study, interrupted, INTERRUPTED, "its worker process 9 on this machine has exited")
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
    from vlmsweep.sweep.summaries import best_or_tie

    assert best_or_tie([(0, 0.0, "max_pixels=256tok"), (1, 0.0, "max_pixels=512tok")], True) == "all 2 trials score 0: no best"
    assert best_or_tie([(0, 0.5, "a=1"), (1, 0.7, "a=2"), (2, 0.7, "a=3")], True).startswith("a=2, a=3 tie at 0.7")
    assert best_or_tie([(0, 0.5, "a=1"), (1, 0.7, "a=2")], False) == "best: a=1 (trial 0) with 0.5"
    # the same setting twice is one setting, not a tie
    assert best_or_tie([(0, 0.7, "a=2"), (1, 0.5, "a=1"), (2, 0.7, "a=2")], True) == "best: a=2 (trials 0, 2) with 0.7"


@pytest.mark.slow
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
    # each trial's folder names its trial by the study's number (passed in the job's environment, not the job number)
    assert sorted(read_json(p)["trial"] for p in folder.glob("*/run_info.json")) == [0, 1]
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
    # the resumed invocation's one job is Hydra's job 0 of its own multirun, and the study's trial 2
    assert sorted(read_json(p)["trial"] for p in folder.glob("*/run_info.json")) == [0, 1, 2]
    vlmsweep(str(folder), module="vlmsweep.report", cwd=tmp_path)
    md = (folder / "report" / "summary.md").read_text()
    assert "Optuna study max_pixels: 3 trials" in md and "| trial 2 |" in md and "3 COMPLETE" in md
    assert "sweep.trials" not in md  # 2 vs 3 trials asked for is not an axis


def test_params_are_read_as_hydra_optuna_sweeper_documents_them():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from vlmsweep.sweep.sweeper import grid_choices, params_from_overrides

    space, fixed, deletions = params_from_overrides([
        "max_pixels=choice(256tok, 512tok)", "lora.r=range(4, 20, step=4)", "train.lr=tag(log, interval(1e-5, 5e-3))",
        "data_mix.receipt_ratio=interval(0.0, 0.5)", "train.max_steps=range(1.0, 2.0, step=0.5)", "seed=3", "~eval.slices"])
    assert space == {
        "max_pixels": CategoricalDistribution(["256tok", "512tok"]),
        "lora.r": IntDistribution(4, 20, step=4),
        "train.lr": FloatDistribution(1e-5, 5e-3, log=True),
        "data_mix.receipt_ratio": FloatDistribution(0.0, 0.5),
        "train.max_steps": FloatDistribution(1.0, 2.0, step=0.5),
    }
    assert fixed == {"seed": "3"} and deletions == ["~eval.slices"]
    assert grid_choices("lora.r", space["lora.r"]) == [4, 8, 12, 16]  # upstream's grid: the range's end left out
    with pytest.raises(ValueError, match="choice"):
        grid_choices("train.lr", space["train.lr"])


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_every_sampler_option_composes_and_builds():
    """hydra/sweeper/sampler=NAME as upstream names them, on this Optuna; motpe (gone in Optuna 4) says what to use."""
    from hydra import compose, initialize_config_dir
    from hydra.core.plugins import Plugins
    from hydra.utils import instantiate

    from vlmsweep.config import register_configs
    from vlmsweep.config.resolvers import register_resolvers

    register_configs()
    register_resolvers()
    Plugins.instance()  # imports hydra_plugins.vlmsweep_optuna.config: its nodes enter the ConfigStore
    expected = {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler", "nsgaii": "NSGAIISampler",
                "gp": "GPSampler", "qmc": "QMCSampler"}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name, cls in expected.items():
            cfg = compose("config", overrides=["hydra/sweeper=optuna", f"hydra/sweeper/sampler={name}",
                                               "hydra.sweeper.direction=[maximize,minimize]"], return_hydra_config=True)
            sweeper = instantiate(cfg.hydra.sweeper, _recursive_=False).sweeper
            assert type(sweeper.sampler).__name__ == cls
            assert sweeper.directions() == ["maximize", "minimize"]
        for name, cls in expected.items():  # with a preset, whose sampler keys (seed, n_startup_trials) are TPE's
            cfg = compose("config", overrides=["+sweep=max_pixels", f"hydra/sweeper/sampler={name}"], return_hydra_config=True)
            assert type(instantiate(cfg.hydra.sweeper, _recursive_=False).sweeper.sampler).__name__ == cls
        cfg = compose("config", overrides=["+sweep=max_pixels", "hydra/sweeper/sampler=grid"], return_hydra_config=True)
        grid = instantiate(cfg.hydra.sweeper.sampler)(search_space={"max_pixels": ["256tok", "512tok"]})
        assert type(grid).__name__ == "GridSampler" and len(grid._all_grids) == 2
        cfg = compose("config", overrides=["+sweep=lr"], return_hydra_config=True)
        assert instantiate(cfg.hydra.sweeper, _recursive_=False).sweeper.directions() == ["maximize"]  # e2e field EM
        cfg = compose("config", overrides=["+sweep=max_pixels_pareto"], return_hydra_config=True)
        sweeper = instantiate(cfg.hydra.sweeper, _recursive_=False).sweeper
        assert sweeper.directions() == ["maximize", "minimize"]
        assert sweeper.metric_names == ["content.e2e_field_em", "cost.visual_tokens_per_image"]
        cfg = compose("config", overrides=["hydra/sweeper=optuna", "hydra/sweeper/sampler=motpe"], return_hydra_config=True)
        with pytest.raises(Exception, match="tpe"):
            instantiate(cfg.hydra.sweeper, _recursive_=False)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_pareto_front_is_the_non_dominated_set(tmp_path):
    """Two objectives (field EM up, visual tokens down) on hand-written values: the front the report reads is
    exactly the set no other trial dominates, ties in both objectives both on it; FAIL trials play no part."""
    from vlmsweep.report.study import read_study

    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="pareto", storage=storage, directions=["maximize", "minimize"])
    study.set_metric_names(["content.e2e_field_em", "cost.visual_tokens_per_image"])
    points = [(0.10, 256), (0.20, 512), (0.15, 768), (0.20, 1024), (0.05, 256), (0.30, 1280), (0.20, 512)]
    for em, tokens in points:
        study.tell(study.ask(), [em, tokens])
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)  # trial 7: no values
    # by hand: 0 (cheapest at 0.10; 4 is as cheap and worse), 1 and 6 (0.20 at 512: equal, neither dominates),
    # 5 (the best EM); 2 is dominated by 1, 3 by 1, 4 by 0
    hand = {0, 1, 5, 6}
    record = read_study(storage, "pareto")
    assert {t.number for t in record.front()} == hand
    assert record.directions == ["maximize", "minimize"]
    assert record.metric_names == ["content.e2e_field_em", "cost.visual_tokens_per_image"]
    sentence = record.best()
    assert sentence.startswith("Pareto front of content.e2e_field_em ↑ vs cost.visual_tokens_per_image ↓: 4 of 7 "
                               "completed trials: trial 0 (")
    from vlmsweep.report.plots import pareto_plot

    assert pareto_plot(record, tmp_path / "pareto.png").stat().st_size > 1000


@pytest.mark.slow
def test_a_two_objective_sweep_prints_and_plots_its_pareto_front_and_the_dashboard_reads_it(tmp_path):
    """README: `python -m vlmsweep -m +sweep=max_pixels_pareto`, then the report, then `optuna-dashboard` on the
    sweep's storage (the README's command, as written there, on a free port)."""
    import json
    import re
    import socket
    import urllib.request

    sweep = ["-m", "+sweep=max_pixels_pareto", 'hydra.sweeper.params.max_pixels="choice(256tok,512tok)"', "sweep.trials=3",
             *TINY_RUN, "eval.max_new_tokens=4"]
    proc = vlmsweep(*sweep, cwd=tmp_path, timeout=900)
    folder = tmp_path / "outputs" / "sweeps" / "max_pixels_pareto"
    results = read_json_yaml(folder / "optimization_results.yaml")
    # the front by hand, from each trial's own metrics.json
    study = optuna.load_study(study_name="max_pixels_pareto", storage=f"sqlite:///{folder}/optuna.db")
    points = {t.number: (read_json(f"{t.user_attrs['run_dir']}/metrics.json")["content.e2e_field_em"],
                         read_json(f"{t.user_attrs['run_dir']}/metrics.json")["cost.visual_tokens_per_image"])
              for t in study.trials if t.state.name == "COMPLETE"}
    assert len(points) == 3
    assert {n: list(v) for n, v in points.items()} == {t.number: t.values for t in study.trials}
    hand = {n for n, (em, tok) in points.items()
            if not any(em2 >= em and tok2 <= tok and (em2 > em or tok2 < tok) for m, (em2, tok2) in points.items() if m != n)}
    assert {p["trial"] for p in results["pareto_front"]} == hand
    assert results["metric_names"] == ["content.e2e_field_em", "cost.visual_tokens_per_image"]
    assert "Pareto front of content.e2e_field_em ↑ vs cost.visual_tokens_per_image ↓" in proc.stdout
    assert f"{len(hand)} of 3 completed trials" in proc.stdout
    vlmsweep(str(folder), module="vlmsweep.report", cwd=tmp_path)
    assert (folder / "report" / "plots" / "pareto_front.png").stat().st_size > 1000
    md = (folder / "report" / "summary.md").read_text()
    assert "Pareto front of content.e2e_field_em" in md and "objectives content.e2e_field_em (maximize)" in md

    manual = (REPO / "docs" / "sweeps.md").read_text(encoding="utf-8")  # the command as the manual shows it
    (command,) = re.findall(r"^\s*(optuna-dashboard sqlite:///outputs/sweeps/max_pixels_pareto/optuna\.db)\s*$", manual, re.M)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the console script installed beside this interpreter (found as a user of that environment finds it on PATH)
    program, *args = command.split()
    program = shutil.which(program, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert program, f"{command.split()[0]} is not installed beside {sys.executable}: pip install -e '.[test]'"
    dashboard = subprocess.Popen([program, *args, "--port", str(port)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        deadline, studies = time.time() + 60, None
        while time.time() < deadline and studies is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.load(r)["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert [s["study_name"] for s in studies] == ["max_pixels_pareto"]
        assert [d for d in studies[0]["directions"]] == ["maximize", "minimize"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", timeout=30) as r:
            detail = json.load(r)
        assert len(detail["trials"]) == 3 and detail["objective_names"] == results["metric_names"]
        assert {t["number"] for t in detail["best_trials"]} == hand
        assert all(any(a["key"] == "run_dir" for a in t["user_attrs"]) for t in detail["trials"])
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)


def test_a_search_space_the_sampler_cannot_take_is_named_in_a_clear_error():
    """A sweep override of a kind none of upstream's distributions maps (glob(...), say) is one ValueError that names
    the kinds the sweeper takes, not a NotImplementedError from deep inside the sweep."""
    from types import SimpleNamespace

    from vlmsweep.sweep.sweeper import distribution_from_override

    glob_like = SimpleNamespace(is_sweep_override=lambda: True, value=lambda: None, is_choice_sweep=lambda: False,
                                is_range_sweep=lambda: False, is_interval_sweep=lambda: False,
                                __str__=lambda self=None: "model=glob(tiny*)")
    with pytest.raises(ValueError, match=r"hydra.sweeper.params: .* use choice\(\.\.\.\), range"):
        distribution_from_override(glob_like)
