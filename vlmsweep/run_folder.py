"""Who owns a run folder and what it holds: one process at a time (a lock), default names that never collide, and a
rerun that resumes only what its own config would have produced.

Light on purpose (no torch): Hydra calls it before the run folder is written (conf/config.yaml, hydra.callbacks).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

LOCK_FILE = ".vlmsweep.lock"  # holds the holder's pid, host and start; the lock dies with the process (kill -9 too)

# Config keys that may change between a run and its resume: where things go, how they are logged, how many
# cycles and what an empty mine does next. Any other change would make what the folder holds another config's.
RESUME_FREE_KEYS = ("output_dir", "cache_dir", "tracker", "choices.tracker", "loop.cycles", "loop.on_empty_mine",
                    "loop.noise_seeds")  # each noise seed keeps its own folder: more or fewer seeds change no cycle

_held: dict[str, int] = {}  # resolved folder -> the open lock file this process holds it by
_claimed: dict[tuple[str, str], str] = {}  # (parent, default name) -> the folder this process claimed for it


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
    from vlmsweep.files import write_json

    info = run_info(folder)
    if info is None or info.get("status") != "running" or held_by_another(folder) \
            or str(Path(folder).resolve()) in _held:
        return False
    info.update(status="interrupted", error="the process running it ended without a word (killed?); rerun it")
    write_json(Path(folder) / "run_info.json", info)
    return True


def claim(parent: str, name: str) -> str:
    """`parent/name`, or `parent/name-2`, `-3`, ... when that exists: made here, so two runs started in the same
    second get two folders (mkdir is atomic). The same answer every time this process asks."""
    if (parent, name) not in _claimed:
        for n in itertools.count(1):
            candidate = name if n == 1 else f"{name}-{n}"
            try:
                Path(parent, candidate).mkdir(parents=True)
            except FileExistsError:
                continue
            _claimed[parent, name] = f"{parent}/{candidate}"
            break
    return _claimed[parent, name]


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
