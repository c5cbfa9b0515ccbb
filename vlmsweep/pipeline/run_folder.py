"""Who owns a run folder and what it holds: one process at a time (a lock), default names that never collide, and a
rerun that resumes only what its own config would have produced.

Light on purpose (no torch): Hydra calls it before the run folder is written (conf/config.yaml, hydra.callbacks).
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vlmsweep.files import write_json

if TYPE_CHECKING:
    from vlmsweep.config import Config

# An Optuna trial's number, set in its job's environment by the sweeper (hydra.job.env_set): run_info.json and the
# tracker name the trial by the study's own number, which the Hydra job number is not once workers share a study.
TRIAL_ENV = "VLMSWEEP_TRIAL"
LOCK_FILE = ".vlmsweep.lock"  # holds the holder's pid, host and start; the lock dies with the process (kill -9 too)

# Config keys that may change between a run and its resume: where things go, how they are logged, how many
# cycles and what an empty mine does next. Any other change would make what the folder holds another config's.
RESUME_FREE_KEYS = ("output_dir", "cache_dir", "tracker", "choices.tracker", "loop.cycles", "loop.on_empty_mine",
                    "loop.noise_seeds")  # each noise seed keeps its own folder: more or fewer seeds change no cycle

_held: dict[str, int] = {}  # resolved folder -> the open lock file this process holds it by


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder; the message names the folder and the holder."""


class ResumeMismatch(ValueError):
    """The run folder holds training of another config; the message names the keys that differ."""


def hold(folder: Path | str) -> None:
    """Takes the run folder for this process until release() or exit; RunFolderBusy if another holds it. Again for a
    folder this process holds: nothing (HoldRunFolder takes it before Hydra writes, vlmsweep.__main__ once more)."""
    folder = Path(folder).resolve()
    if str(folder) in _held:
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 512).decode("utf-8", errors="replace").strip() or "another process"
        os.close(fd)
        raise RunFolderBusy(f"{folder} is in use by {holder}: wait for that run to end, or give this one another "
                            "hydra.run.dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}".encode())
    _held[str(folder)] = fd


def release(folder: Path | str) -> None:
    fd = _held.pop(str(Path(folder).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the file drops the lock


def held_by_another(folder: Path | str) -> bool:
    """Whether a live process holds the folder (a run whose run_info.json says `running` and that nobody holds
    was killed)."""
    path = Path(folder) / LOCK_FILE
    if str(Path(folder).resolve()) in _held or not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def run_info(folder: Path | str) -> dict | None:
    """The folder's run_info.json, or None where there is none (or it cannot be read)."""
    try:
        return json.loads((Path(folder) / "run_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def mark_interrupted(folder: Path) -> bool:
    """A run folder whose run_info.json says `running` while no process holds it was killed (kill -9, a lost node):
    its status becomes `interrupted`, so it never reads as still running. True when it was."""
    info = run_info(folder)
    if info is None or info.get("status") != "running" or held_by_another(folder) \
            or str(Path(folder).resolve()) in _held:
        return False
    info.update(status="interrupted", error="the process running it ended without a word (killed?); rerun it")
    write_json(Path(folder) / "run_info.json", info)
    return True


class HoldRunFolder(Callback):
    """A single run takes its folder before Hydra writes .hydra/ and the log into it: a second run on a held folder
    refuses in one line and changes nothing there. Each job of a multirun takes its own in vlmsweep.__main__."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if int(os.environ.get("RANK", "0")) != 0:  # torchrun / accelerate: the ranks share rank 0's folder
            return
        try:
            hold(config.hydra.run.dir)
        except RunFolderBusy as err:
            print(f"error: {err}", flush=True, file=sys.stderr)
            raise SystemExit(1) from None  # Hydra turns a callback's Exception into a warning


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _flat(v, key + ".")
        else:
            out[key] = v
    return out


def resume_config(config: dict) -> dict[str, Any]:
    """A resolved config as flat keys, less those a resume may change (RESUME_FREE_KEYS)."""
    return {k: v for k, v in sorted(_flat(config).items())
            if not any(k == f or k.startswith(f + ".") for f in RESUME_FREE_KEYS)}


def config_changes(before: dict, current: dict) -> str:
    """`key: old -> new, ...` for every key two resume configs disagree on (at most 8 shown); empty when none."""
    changed = sorted(k for k in set(before) | set(current) if before.get(k) != current.get(k))
    shown = ", ".join(f"{k}: {before.get(k)!r} -> {current.get(k)!r}" for k in changed[:8])
    return shown + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")


# ----------------------------------------------------------------------------- what a run folder records


def rank() -> int:
    """This process's rank under torchrun / accelerate launch (0 when alone)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


PACKAGES = ("vlmsweep", "torch", "torchvision", "transformers", "tokenizers", "peft", "accelerate",
            "bitsandbytes", "xgrammar", "hydra-core", "optuna", "sqlalchemy", "wandb", "pillow")


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision() -> str:
    try:
        here = Path(__file__).resolve().parent
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if rev.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def optuna_trial() -> int | None:
    """This job's Optuna trial number (vlmsweep.sweep.sweeper sets it), None outside an Optuna sweep."""
    value = os.environ.get(TRIAL_ENV)
    return int(value) if value else None


class RunInfo:
    """run_info.json: status, error, choices, versions, revision and cost; rewritten as the run goes."""

    def __init__(self, cfg: Config, out_dir: Path, overrides: list[str] | None = None):
        from vlmsweep.model.quant import torch_dtype  # torch: imported when a run starts, not by Hydra's callback

        self.path = out_dir / "run_info.json"
        self.data: dict[str, Any] = {
            "status": "running",
            "error": None,
            "choices": dict(cfg.choices),
            "overrides": list(overrides or []),
            "seed": cfg.seed,
            "receipt_ratio": cfg.data_mix.receipt_ratio,
            "visual_tokens": cfg.max_pixels.visual_tokens,
            "compute_dtype": str(torch_dtype(cfg.quant)).removeprefix("torch."),  # float32 on a CPU without bf16
            "versions": versions(),
            "git": git_revision(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "trial": optuna_trial(),
            "cost": {},
        }
        self.save()

    def update(self, **values: Any) -> None:
        self.data.update(values)
        self.save()

    def save(self) -> None:
        if rank() != 0:  # every rank shares the run folder; only rank 0 writes to it
            return
        try:
            write_json(self.path, self.data)
        except OSError:
            if self.data["status"] == "running":
                raise
            # A full disk has no room for a second copy: the end of the run, kept small, over the old file in place
            # (opening it for writing frees its blocks first). Never a run that failed but says it is running.
            small = {k: self.data.get(k) for k in ("status", "error", "started", "finished", "choices", "overrides")}
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(json.dumps(small, ensure_ascii=False))


def free_memory() -> None:
    """Between in-process trials (Hydra's basic launcher, Optuna): free the accelerator, reset peaks."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
