"""A run folder through the command line: one process at a time, names that never collide, resumes of its own
config only, checkpoints and adapters that appear whole, and a failure recorded even on a full disk (issue 37)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import datetime, timedelta

import pytest

from userdata import FAST_CLI, start, vlmsweep

pytestmark = pytest.mark.slow

SMALL = [*FAST_CLI, "data.train_size=4", "data.test_size=2"]


def test_a_second_run_on_a_held_folder_refuses_naming_it_and_the_holder_and_changes_nothing(tmp_path, offline_env):
    first = start([*SMALL, "eval.enabled=false", "seed=0", "hydra.run.dir=runs/d"], tmp_path)
    lock = tmp_path / "runs" / "d" / ".vlmsweep.lock"
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text()) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the first run holds the folder before Hydra writes into it
    second = vlmsweep([*SMALL, "eval.enabled=false", "seed=1", "hydra.run.dir=runs/d"], tmp_path, check=False,
                      timeout=120)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, out[-2000:] + err[-3000:]
    assert second.returncode == 1 and "Traceback" not in second.stderr
    refusal = [x for x in second.stderr.splitlines() if x.startswith("error: ")]
    assert len(refusal) == 1 and str(tmp_path / "runs" / "d") in refusal[0] and f"pid {first.pid} " in refusal[0]
    folder = tmp_path / "runs" / "d"
    assert "seed: 0" in (folder / "config.yaml").read_text().splitlines()
    assert "seed=1" not in (folder / ".hydra" / "overrides.yaml").read_text()
    assert "seed=1" not in (folder / "vlmsweep.log").read_text()
    assert json.loads((folder / "run_info.json").read_text())["seed"] == 0


def test_a_default_folder_taken_in_the_same_second_gives_the_next_name(tmp_path, offline_env):
    # Another run holds outputs/DATE/TIME for every second this run may start in: it must not write there.
    now = datetime.now()
    taken = []
    for s in range(180):
        t = now + timedelta(seconds=s)
        folder = tmp_path / "outputs" / t.strftime("%Y-%m-%d") / t.strftime("%H-%M-%S")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "theirs.txt").write_text("another run's file")
        taken.append(folder)
    proc = vlmsweep(["train.enabled=false", "data.test_manifest=missing.jsonl", *SMALL], tmp_path, check=False)
    assert proc.returncode == 1 and "missing.jsonl" in proc.stderr  # fails at once, its folder kept with run_info.json
    recorded = proc.stderr.split("(recorded in ", 1)[1].split(")", 1)[0]
    mine = os.path.dirname(recorded)
    assert any(mine == f"{f}-2" for f in taken), mine  # outputs/DATE/TIME-2: the README's shape, one suffix
    assert json.loads(open(recorded).read())["status"] == "failed"
    assert all(sorted(p.name for p in f.iterdir()) == ["theirs.txt"] for f in taken)


def test_a_rerun_resumes_only_its_own_config_and_skips_incomplete_checkpoints(tmp_path, offline_env):
    args = [*SMALL, "train.save_steps=1", "hydra.run.dir=runs/r"]
    vlmsweep(args, tmp_path)
    folder = tmp_path / "runs" / "r"
    checkpoints = folder / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-1", "checkpoint-2"]  # nothing staged left
    adapter = (folder / "adapter" / "adapter_model.safetensors").read_bytes()
    trained = json.loads((folder / "metrics.json").read_text())

    # another seed and learning rate on a folder of checkpoints: refused in one line naming the keys, nothing changed
    other = vlmsweep([*args, "seed=1", "train.lr=1e-3"], tmp_path, check=False)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    refusal = [x for x in other.stderr.splitlines() if x.startswith("error: ")]
    assert len(refusal) == 1 and "seed: 0 -> 1" in refusal[0] and "train.lr: 0.002 -> 0.001" in refusal[0]
    assert "seed: 0" in (folder / "config.yaml").read_text().splitlines()
    assert (folder / "adapter" / "adapter_model.safetensors").read_bytes() == adapter

    # a kill during a save: an empty checkpoint and one without trainer_state.json; the rerun skips both, saying so
    (checkpoints / "checkpoint-3").mkdir()
    shutil.copytree(checkpoints / "checkpoint-2", checkpoints / "checkpoint-4")
    (checkpoints / "checkpoint-4" / "trainer_state.json").unlink()
    again = vlmsweep(args, tmp_path)
    log = again.stdout + again.stderr
    assert "skipping incomplete checkpoint" in log and "checkpoint-3 (empty)" in log
    assert "checkpoint-4 (no trainer_state.json)" in log
    assert f"resuming from {checkpoints / 'checkpoint-2'}" in log
    assert json.loads((folder / "run_info.json").read_text())["status"] == "ok"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-1", "checkpoint-2"]
    # resumed at its last step: nothing left to train, and the loss is still the run's, not 0.0 over no step
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["train.resumed_at_step"] == 2 and metrics["train.steps"] == 2
    assert metrics["train.loss"] == pytest.approx(trained["train.loss"], abs=1e-3)

    # starting over (train.resume=false) with another seed and no checkpoints of its own: seed 0's checkpoints go,
    # or a later resume under this run's config.yaml would take them for seed 1's
    over = vlmsweep([*SMALL, "train.resume=false", "seed=1", "eval.enabled=false", "hydra.run.dir=runs/r"], tmp_path)
    assert "removing the 2 checkpoint(s) of an earlier run" in over.stdout + over.stderr
    assert not list(checkpoints.glob("checkpoint-*"))


def _mount_tmpfs(path, megabytes: float) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(megabytes * 1024)}k", "tmpfs", str(path)],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_a_full_disk_leaves_a_failed_run_that_names_the_path_and_no_half_adapter(tmp_path, offline_env):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, 2):  # room for the run's small files, not for the adapter's 11 MB tokenizer
        pytest.skip("a small tmpfs cannot be mounted here (needs root)")
    try:
        proc = vlmsweep([*SMALL, f"hydra.run.dir={disk}/run"], tmp_path, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        error = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
        assert len(error) == 1 and f"{disk}/run/adapter" in error[0] and "No space left on device" in error[0]
        info = json.loads((disk / "run" / "run_info.json").read_text())
        assert info["status"] == "failed" and f"{disk}/run/adapter" in info["error"]
        assert not (disk / "run" / "adapter").exists() and not list((disk / "run").glob(".adapter*"))
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    # a disk that fills at the first checkpoint: the checkpoint is named, and no half of it is left
    small = tmp_path / "small"
    assert _mount_tmpfs(small, 0.3)
    try:
        proc = vlmsweep([*SMALL, "train.save_steps=1", f"hydra.run.dir={small}/run"], tmp_path, check=False)
        error = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
        assert proc.returncode == 1 and len(error) == 1 and f"{small}/run/checkpoints/checkpoint-1" in error[0]
        assert json.loads((small / "run" / "run_info.json").read_text())["status"] == "failed"
        assert not list((small / "run" / "checkpoints").iterdir())
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_run_info_says_failed_on_a_disk_with_no_room_left_for_a_copy(tmp_path):
    from conftest import FAST, compose
    from vlmsweep.pipeline.run_folder import RunInfo

    disk = tmp_path / "full"
    if not _mount_tmpfs(disk, 0.1):
        pytest.skip("a small tmpfs cannot be mounted here (needs root)")
    try:
        info = RunInfo(compose(FAST, output_dir=disk), disk)
        with open(disk / "filler", "wb", buffering=0) as f:  # another writer takes every byte left
            try:
                while True:
                    f.write(b"x" * 1024)
            except OSError:
                pass
        with pytest.raises(OSError, match="run_info.json: could not be written"):
            info.update(cost={"step": 1})  # while running, a lost write is an error that names the file
        info.update(status="failed", error="OSError: [Errno 28] No space left on device")
        saved = json.loads((disk / "run_info.json").read_text())
        assert saved["status"] == "failed" and "No space left" in saved["error"] and saved["started"]
        assert not list(disk.glob(".run_info.json.*"))  # no half copy left beside it
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_finished_folder_without_checkpoints_is_refused_to_another_seed(tmp_path, offline_env):
    """The default saves no checkpoint: a finished run's folder rerun with another seed replaced its adapter, metrics
    and samples and exited 0. Now it is refused in one line naming the key, and nothing there changes."""
    args = [*SMALL, "hydra.run.dir=runs/plain"]
    vlmsweep(args, tmp_path)
    folder = tmp_path / "runs" / "plain"
    assert not list(folder.glob("checkpoints/checkpoint-*"))
    kept = {n: (folder / n).read_bytes() for n in ("metrics.json", "samples.jsonl", "config.yaml", "run_info.json",
                                                   "adapter/adapter_model.safetensors")}
    other = vlmsweep([*args, "seed=1"], tmp_path, check=False)
    refusal = [x for x in other.stderr.splitlines() if x.startswith("error: ")]
    assert other.returncode == 1 and len(refusal) == 1 and "Traceback" not in other.stderr
    assert "holds a finished run of a different config (seed: 0 -> 1)" in refusal[0] and "train.resume=false" in refusal[0]
    assert {n: (folder / n).read_bytes() for n in kept} == kept


def test_a_resume_with_no_step_left_and_no_logged_loss_reports_no_loss_rather_than_zero():
    """Resumed at its last checkpoint with train.logging_steps above the steps it ran: the checkpoint holds no loss,
    and the Trainer's 0.0 over no step is none either (a finished run's rerun reported train.loss 0.0)."""
    import math

    from vlmsweep.train.checkpoints import loss_over_all_steps
    from vlmsweep.train.trainer import TokenCounts

    assert math.isnan(loss_over_all_steps([{"step": 2, "train_runtime": 1.0}], start=2, steps_run=0, loss_run=0.0))
    assert loss_over_all_steps([{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.3}], 2, 0, 0.0) == pytest.approx(0.4)
    assert math.isnan(TokenCounts().supervised_fraction())  # no token seen: no fraction, not 0
