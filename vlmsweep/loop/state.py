"""What a loop's folder holds and reads back on resume: loop_state.json, the splits fixed at cycle 0, each finished
cycle's results (CycleResult)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmsweep import data as data_mod
from vlmsweep.config import Config, config_dict
from vlmsweep.data import Record
from vlmsweep.pipeline import stages
from vlmsweep.pipeline.run_folder import ResumeMismatch, RunInfo, config_changes, resume_config

STATE_FILE = "loop_state.json"
STATE_VERSION = 1


@dataclass
class CycleResult:
    cycle: int
    test: dict[str, float]  # cycle_N/metrics.json: training + test-set metrics
    regression: dict[str, float]
    mining: dict[str, float]
    summary: dict[str, Any]  # cycle_N/cycle.json: training set, hard set, warnings


def load_state(out_dir: Path, cfg: Config) -> dict[str, Any]:
    """loop_state.json of an interrupted or finished loop in out_dir, checked against this config; a fresh state if none."""
    path = out_dir / STATE_FILE
    current = resume_config(config_dict(cfg))
    if not path.exists():
        return {"version": STATE_VERSION, "config": current, "trained": [], "finished": [], "stopped": None}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg}, line {err.lineno}); delete it to start the loop over") from None
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: state version {state.get('version')!r}, expected {STATE_VERSION}; use a new run folder")
    diff = config_changes(state.get("config", {}), current)
    if diff:
        raise ResumeMismatch(
            f"{out_dir}: this loop was started with a different config ({diff}); resume it with the same "
            "overrides (only loop.cycles, loop.on_empty_mine, tracker and paths may change) or use a new hydra.run.dir"
        )
    return state


def cycle_dir(out_dir: Path, cycle: int) -> Path:
    return out_dir / f"cycle_{cycle}"


def is_finished(out_dir: Path, state: dict, cycle: int) -> bool:
    d = cycle_dir(out_dir, cycle)
    return (cycle in state["finished"] and (d / "metrics.json").is_file()
            and (d / "adapter" / "adapter_config.json").is_file() and (d / "cycle.json").is_file())


def read_records(path: Path) -> list[Record]:
    """A manifest written by write_manifest; an empty file is an empty list (an empty hard set)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the loop folder is incomplete (start it over in a new hydra.run.dir)")
    if not path.read_text(encoding="utf-8").strip():
        return []
    return list(data_mod.read_manifest(path))


def read_metrics(path: Path) -> dict[str, float]:
    return json.loads(path.read_text(encoding="utf-8"))


def load_cycle(out_dir: Path, cycle: int) -> CycleResult:
    d = cycle_dir(out_dir, cycle)
    return CycleResult(cycle, read_metrics(d / "metrics.json"), read_metrics(d / "regression" / "metrics.json"),
                       read_metrics(d / "mining" / "metrics.json"), json.loads((d / "cycle.json").read_text(encoding="utf-8")))


def fixed_splits(cfg: Config, out_dir: Path, info: RunInfo) -> dict[str, list[Record]]:
    """train / test / mining / regression (and validation with train.eval_every), fixed at cycle 0 in out_dir/splits/
    and read back on resume.

    Each comes from the user's manifest (data.<split>_manifest) or the synthetic mix. The mining pool is
    checked against the held-out sets here too: whatever is mined from it is trained on next."""
    folder = out_dir / "splits"
    names = ("train", "test", "mining", "regression") + (("validation",) if cfg.train.eval_every > 0 else ())
    if all((folder / f"{n}.jsonl").is_file() for n in names):
        return {n: read_records(folder / f"{n}.jsonl") for n in names}
    splits = stages.prepare_run(cfg, info).splits  # seed, splits, run_info's data, the mining pool's leakage check
    for n in names:
        data_mod.write_manifest(splits[n], folder / f"{n}.jsonl")
    return {n: splits[n] for n in names}
