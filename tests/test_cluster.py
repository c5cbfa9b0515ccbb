"""Beyond one process: two workers share one Optuna study (SQLite, PostgreSQL); submitit launches each job apart."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import optuna
import pytest

from helpers import REPO, TINY_RUN, read_json, vlmsweep
from vlmsweep.sweep.sweeper import WORKER

POSTGRES_URL = os.environ.get("VLMSWEEP_TEST_POSTGRES_URL", "postgresql://vlmsweep:vlmsweep@127.0.0.1:5432/vlmsweep")
# No evaluation: the objective is the training loss, so a trial is model load + one step (seconds).
NO_EVAL = ["eval.enabled=false", "sweep.objective=train.loss"]


def postgres_or_skip() -> str:
    import sqlalchemy

    driver = sqlalchemy.engine.make_url(POSTGRES_URL).get_dialect().driver  # SQLAlchemy 2.1: psycopg; 2.0: psycopg2
    try:
        __import__(driver)
    except ImportError:
        pytest.skip(f"{driver}, SQLAlchemy's driver for {POSTGRES_URL.split(':')[0]}://, is not installed "
                    "(pip install -e '.[postgres]')")
    try:
        with sqlalchemy.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3}).connect():
            pass
    except sqlalchemy.exc.OperationalError as err:
        pytest.skip(f"no PostgreSQL at VLMSWEEP_TEST_POSTGRES_URL={POSTGRES_URL} (sudo scripts/postgres.sh starts "
                    f"one): {str(err).splitlines()[0]}")
    return POSTGRES_URL


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_together_run_exactly_the_total(tmp_path, backend):
    name = f"lora_rank_{uuid.uuid4().hex[:8]}"  # a fresh study, also in a shared PostgreSQL database
    storage = postgres_or_skip() if backend == "postgresql" else f"sqlite:///{tmp_path}/outputs/sweeps/{name}/optuna.db"
    args = ["-m", "+sweep=lora_rank", f"sweep.name={name}", "sweep.trials=4", *NO_EVAL, *TINY_RUN,
            "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=30"]
    if backend == "postgresql":
        args.append(f"sweep.storage={storage}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "1"}
    cmd = [sys.executable, "-m", "vlmsweep", *args]
    workers = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]  # started at once: the same command on two "machines"
    outputs = [w.communicate(timeout=400)[0] for w in workers]
    for w, out in zip(workers, outputs):
        assert w.returncode == 0, out[-5000:]
    try:
        trials = optuna.load_study(study_name=name, storage=storage).trials
        assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # none lost, none run twice
        assert [t.state.name for t in trials] == ["COMPLETE"] * 4
        assert len({t.system_attrs[WORKER]["pid"] for t in trials}) == 2  # both workers took trials
        run_dirs = {t.user_attrs["run_dir"] for t in trials}
        assert len(run_dirs) == 4
        assert {str(p.parent) for p in tmp_path.glob(f"outputs/sweeps/{name}/*/run_info.json")} == run_dirs
        assert all(read_json(f"{d}/run_info.json")["status"] == "ok" for d in run_dirs)
        # each worker's last word is the whole study's: it waited for the other's running trial
        assert all("4 of 4 trials finished" in out for out in outputs)
    finally:
        if backend == "postgresql":
            optuna.delete_study(study_name=name, storage=storage)


@pytest.mark.slow
def test_submitit_local_runs_each_job_in_its_own_process(tmp_path):
    vlmsweep("-m", "quant=bf16,fp32", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
             "eval.enabled=false", *TINY_RUN, cwd=tmp_path)
    (sweep_dir,) = tmp_path.glob("outputs/multirun/*/*")
    metrics = [read_json(sweep_dir / str(i) / "metrics.json") for i in (0, 1)]
    assert all(m["train.steps"] == 1.0 for m in metrics)
    infos = [read_json(sweep_dir / str(i) / "run_info.json") for i in (0, 1)]
    assert [i["choices"]["quant"] for i in infos] == ["bf16", "fp32"]
    jobs = [p for p in (sweep_dir / ".submitit").iterdir() if p.is_dir() and (p / f"{p.name}_0_log.out").exists()]
    assert len(jobs) == 2  # one submitit job (one process, its own log) per run


def test_slurm_preset_composes_to_the_submitit_slurm_launcher():
    from hydra import compose, initialize_config_dir

    from vlmsweep.config import register_configs
    from vlmsweep.config.resolvers import register_resolvers

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 1, 1)
    assert (launcher.timeout_min, launcher.array_parallelism) == (240, 8)
