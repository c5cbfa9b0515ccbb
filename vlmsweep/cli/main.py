"""`python -m vlmsweep`: Hydra composes the config; it becomes typed dataclasses; run() does the work."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from vlmsweep.config import CONF_DIR, register_configs, to_config
from vlmsweep.config.keys import unknown_key_message, unknown_keys_in
from vlmsweep.metrics import direction_of
from vlmsweep.cli.checks import check_command_line
from vlmsweep.cli.quiet import quiet_third_party
from vlmsweep.pipeline.run_folder import LOCK_FILE, ResumeMismatch, RunFolderBusy, hold, release
from vlmsweep.config.resolvers import register_resolvers

quiet_third_party()

register_configs()
# conf/sweep/*.yaml: hydra.sweeper.direction: ${vlmsweep.directions:${sweep.objective},${sweep.trade_off}} - an unknown
# metric fails when the sweeper is built, before any training.
register_resolvers()

log = logging.getLogger("vlmsweep")

# Runs of this multirun (counted from the command line before Hydra starts); the first one's time gives
# the estimate for the rest. None: a single run, an Optuna sweep (its sweeper counts), or not countable.
MULTIRUN_TOTAL: int | None = None
HYDRA_FILES = {".hydra", "vlmsweep.log", LOCK_FILE}


def typed_config(cfg: DictConfig, choices: dict[str, str]):
    """to_config, with a key the schema lacks (from a user's config file, say) named with its nearest keys."""
    try:
        return to_config(cfg, choices)
    except Exception as err:
        unknown = unknown_keys_in(OmegaConf.to_container(cfg, resolve=False))  # type: ignore[arg-type]
        if unknown:
            raise ValueError(unknown_key_message(unknown[0], "config")) from err
        raise


def input_errors() -> tuple[type[BaseException], ...]:
    """The errors that are a mistake in what the user gave, each with a message naming it and the fix."""
    from vlmsweep.data.leakage import LeakageError
    from vlmsweep.data.manifest import ManifestError
    from vlmsweep.files import WriteError
    from vlmsweep.model.adapter import AdapterNotFound
    from vlmsweep.model.load import CheckpointNotFound
    from vlmsweep.ocr.engine import OcrUnavailable
    from vlmsweep.ocr.hint import NoRoomForHint
    from vlmsweep.train.template import TemplateMismatch

    # WriteError is no mistake of the user's, but its one line (the path, a full disk) says all there is to say
    return (ManifestError, LeakageError, CheckpointNotFound, AdapterNotFound, TemplateMismatch, RunFolderBusy,
            WriteError, OcrUnavailable, NoRoomForHint)


class BadConfig(ValueError):
    """The composed config is not a valid run (a key the schema lacks, a value out of range, an unknown objective)."""


@contextmanager
def exit_policy(single_run: bool, out_dir: Path):
    """How a failure ends the command, in one place. In a multirun job every error re-raises: Hydra's basic sweeper
    finishes the batch and reports it; the Optuna sweeper (max_failure_rate: 1.0 in conf/sweep/*.yaml) marks the trial
    FAIL and goes on. In a single run, a mistake in what the user gave is one line and an exit code, not a traceback:
    a bad config (2), a folder held by another run or holding another config (1), an input run() recorded in
    run_info.json (1). Anything else is a crash and keeps its traceback."""
    try:
        yield
    except BadConfig as err:
        if not single_run:
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except (RunFolderBusy, ResumeMismatch) as err:  # the folder is left as it was: its files are another run's
        if not single_run:
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except input_errors() as err:
        if not single_run:
            raise
        print(f"error: {err}\n(recorded in {out_dir / 'run_info.json'})", file=sys.stderr)
        raise SystemExit(1) from None


def checked_config(cfg: DictConfig, hc, out_dir: Path):
    """The typed config of this job, or BadConfig. Hydra made the run folder already: one holding only Hydra's own
    files would be an empty run folder without run_info.json, so it goes."""
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/") and v is not None}
    try:
        config = typed_config(cfg, choices)
        for name in (config.sweep.objective, *config.sweep.trade_off):
            direction_of(name)  # unknown objective: an error at start-up
        return config
    except (ValueError, KeyError, TypeError) as err:
        if out_dir.is_dir() and {p.name for p in out_dir.iterdir()} <= HYDRA_FILES:
            shutil.rmtree(out_dir, ignore_errors=True)
            if hc.mode == RunMode.RUN:  # outputs/DATE/ and outputs/ when made for this run alone
                for parent in out_dir.parents[:2]:
                    if not parent.is_dir() or any(parent.iterdir()) or parent.resolve() == Path.cwd().resolve():
                        break
                    parent.rmdir()
        raise BadConfig(err.args[0] if err.args else str(err)) from err


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    from vlmsweep.run import objective, run

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    with exit_policy(hc.mode == RunMode.RUN, out_dir):
        config = checked_config(cfg, hc, out_dir)
        started = time.monotonic()
        if int(os.environ.get("RANK", "0")) == 0:  # torchrun / accelerate: the ranks share rank 0's folder
            hold(out_dir)  # a single run holds it already (run_folder.HoldRunFolder); a multirun job takes its own now
        try:
            metrics = run(config, overrides=list(hc.overrides.task))  # a failure is in run_info.json before it lands here
        finally:
            release(out_dir)  # the next job of a multirun in this process, or anyone once this run is over
    if MULTIRUN_TOTAL and MULTIRUN_TOTAL > 1 and hc.job.num == 0:
        seconds = time.monotonic() - started
        print(f"vlmsweep: run 1 of {MULTIRUN_TOTAL} took {seconds:.0f} s: about "
              f"{(MULTIRUN_TOTAL - 1) * seconds / 60:.1f} min for the other {MULTIRUN_TOTAL - 1} at this pace", flush=True)
    if "optuna" not in str(hc.sweeper.get("_target_", "")):
        return float(metrics.get(config.sweep.objective, float("nan")))  # nobody optimises it
    return objective(config, metrics)  # a missing or non-finite objective fails the trial, with the reason


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt(f"terminated by {signal.Signals(signum).name}")


def cli() -> None:
    """Command-line mistakes Hydra would report late (a number for max_pixels, an unknown key) stop here
    with one line; a multirun says how many runs it will do before the first starts."""
    global MULTIRUN_TOTAL
    signal.signal(signal.SIGTERM, _terminated)  # SLURM's time limit, `kill`: the run records it, as for Ctrl-C
    problem, runs = check_command_line(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    if runs is not None:
        MULTIRUN_TOTAL = runs
        print(f"vlmsweep: this multirun does {runs} run{'s' if runs != 1 else ''} "
              "(the time per run is printed after the first)", flush=True)
    main()


if __name__ == "__main__":
    cli()
