"""`hydra/sweeper=optuna` on the current Optuna API, over a shared study: `n_trials` is a total that many
workers and restarts reach together; a multi-objective study ends with its Pareto front.

The Hydra plugin (hydra_plugins/vlmsweep_optuna) says why hydra-optuna-sweeper itself is not used. The
search-space parsing and the trial configuration are adapted from its `_impl.py` (facebookresearch/hydra,
plugins/hydra_optuna_sweeper, MIT License, Copyright (c) Facebook, Inc. and its affiliates)."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from vlmsweep.pipeline.run_folder import TRIAL_ENV
from vlmsweep.sweep.summaries import best_or_tie, pareto_summary, params_text

log = logging.getLogger(__name__)

# Trial system attributes written by this sweeper.
WORKER = "vlmsweep:worker"            # {"host": host_key(), "pid": int}: who runs the trial
HEARTBEAT = "vlmsweep:heartbeat"      # unix time of the worker's last "still running" mark
INTERRUPTED = "vlmsweep:interrupted"  # why a RUNNING trial was declared dead (then FAIL, not counted)


# ----------------------------------------------------------------------------- counting


@dataclass(frozen=True)
class Progress:
    finished: int     # COMPLETE, PRUNED, and FAIL that is a result (the run failed): count toward the total
    running: int      # RUNNING in a live worker: count toward the total (reserved)
    interrupted: int  # the worker died (killed, node lost): not a result, the trial is run again

    def taken(self) -> int:
        return self.finished + self.running


def host_key() -> str:
    """Which process table a pid belongs to: host name + boot + pid namespace (containers may share a name)."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(path) if path.endswith("/pid") else Path(path).read_text().strip())
        except OSError:
            pass
    return ":".join(parts)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


def stale_reason(trial: FrozenTrial, now: float, grace_period: float) -> str | None:
    """Why a RUNNING trial's worker is gone, or None while it looks alive.

    Optuna's own heartbeat (RDBStorage(heartbeat_interval, grace_period) + fail_stale_trials, still so in
    Optuna 5) is not used: it never fails a RUNNING trial that has no heartbeat row (trials left by a killed
    earlier sweeper would block the total forever), it beats only inside study.optimize (this sweeper asks
    and tells), it waits the whole grace period even when the worker's process on this machine is known to
    be gone, and its FAIL cannot be told apart from a run that failed. Hand-written instead: heartbeat and
    worker in trial system attributes; workers' clocks must agree to well within grace_period (NTP)."""
    worker = trial.system_attrs.get(WORKER)
    if not worker:
        return "no vlmsweep worker recorded (left RUNNING by an earlier sweeper)"
    if worker.get("host") == host_key() and not _pid_alive(int(worker["pid"])):
        return f"its worker process {worker['pid']} on this machine has exited"
    beat = trial.system_attrs.get(HEARTBEAT)
    if beat is None or now - float(beat) > grace_period:
        return f"no heartbeat for more than {grace_period:g} s (worker {worker.get('pid')} on {worker.get('host')})"
    return None


def progress(trials: list[FrozenTrial], grace_period: float, now: float | None = None) -> Progress:
    now = time.time() if now is None else now
    finished = running = interrupted = 0
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            finished += 1
        elif t.state == TrialState.FAIL:
            if INTERRUPTED in t.system_attrs:
                interrupted += 1
            else:
                finished += 1
        elif t.state == TrialState.RUNNING:
            if stale_reason(t, now, grace_period) is None:
                running += 1
            else:
                interrupted += 1
    return Progress(finished, running, interrupted)


def study_progress(storage: str, study_name: str, grace_period: float = 60) -> Progress:
    """Read-only: how far a stored study is toward its total (a study not created yet: all zero)."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return Progress(0, 0, 0)
    return progress(study.get_trials(deepcopy=False), grace_period)


# ----------------------------------------------------------------------------- lock


def _lock_key(study_name: str) -> int:
    """pg_advisory_lock takes one signed 64-bit key: a stable hash of the study name."""
    digest = hashlib.blake2b(f"vlmsweep:{study_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class StudyLock(AbstractContextManager):
    """One holder at a time across processes and machines: check-then-ask must be atomic, or two
    workers that both see "3 of 4 taken" both start trial 4.
    PostgreSQL: a session advisory lock (released by the server if the worker dies).
    SQLite: an OS file lock beside the database (one machine; SQLite is not for NFS anyway).
    No storage: in-memory, one process."""

    def __init__(self, storage: str | None, study_name: str):
        self.storage, self.study_name = storage, study_name
        self._engine = self._conn = self._file = None
        self._local = threading.Lock()
        if storage is None:
            return
        from sqlalchemy.engine import make_url

        url = make_url(storage)
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:":
                import filelock

                self._file = filelock.FileLock(url.database + ".lock")
        elif url.get_backend_name() == "postgresql":
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            self._engine = create_engine(storage, poolclass=NullPool)
        else:
            raise ValueError(
                f"sweep.storage={url.render_as_string(hide_password=True)}: a shared study needs a lock this "
                "sweeper supports: sqlite:///PATH (one machine) or postgresql://USER:PASS@HOST/DB (many)"
            )

    def __enter__(self):
        self._local.acquire()
        try:
            if self._file is not None:
                self._file.acquire()
            elif self._engine is not None:
                from sqlalchemy import text

                self._conn = self._engine.connect()
                self._conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _lock_key(self.study_name)})
        except BaseException:
            self._local.release()
            raise
        return self

    def __exit__(self, *exc):
        try:
            if self._file is not None:
                self._file.release()
            elif self._conn is not None:
                from sqlalchemy import text

                try:
                    self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _lock_key(self.study_name)})
                finally:
                    self._conn.close()  # closing the session would release the lock anyway
                    self._conn = None
        finally:
            self._local.release()
        return False


def set_system_attr(study: optuna.Study, trial: Trial | FrozenTrial, key: str, value: Any) -> None:
    """Trial.set_system_attr was removed in Optuna 5; the storage's set_trial_system_attr is what Optuna's
    own samplers and heartbeat still write with."""
    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def seed_stream(sampler: Any, seed: int, trial_number: int) -> None:
    """The sampler's random generators seeded for one trial, from numpy's SeedSequence of (seed, trial number): every
    trial of a study draws from its own stream, so a second worker or a restart never replays another's suggestions
    (a sampler seeded with `seed` alone, in every worker, does: issue 37). Reproducible: trial N of seed S always
    draws the same. Optuna has no public "seed this generator"; a sampler whose generators this cannot find is
    reseeded from fresh entropy (reseed_rng), which at least replays nothing."""
    import numpy as np

    states: list[np.random.RandomState] = []
    for owner in (sampler, *(v for v in vars(sampler).values() if isinstance(v, optuna.samplers.BaseSampler))):
        for value in vars(owner).values():
            if isinstance(value, np.random.RandomState):
                states.append(value)
            elif type(value).__name__ == "LazyRandomState":
                states.append(value.rng)
    if not states:
        sampler.reseed_rng()
    for k, state in enumerate(states):
        state.seed(int(np.random.SeedSequence([int(seed), int(trial_number), k]).generate_state(1)[0]))


def rdb_storage(storage: str) -> optuna.storages.RDBStorage:
    from sqlalchemy.engine import make_url

    if make_url(storage).get_backend_name() == "sqlite":
        # several workers write to one file: wait for SQLite's write lock instead of failing after 5 s
        return optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 120}})
    # trials last hours: a pooled connection the server dropped meanwhile is replaced, not an error
    return optuna.storages.RDBStorage(storage, engine_kwargs={"pool_pre_ping": True})


# ----------------------------------------------------------------------------- heartbeat


class Heartbeat(AbstractContextManager):
    """Marks this worker's trials as alive while the launcher runs them (in this process or on a cluster)."""

    def __init__(self, study: optuna.Study, trials: list[Trial], interval: float):
        self.study, self.trials, self.interval = study, trials, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vlmsweep-heartbeat", daemon=True)

    def _run(self) -> None:
        warned = False
        while not self._stop.wait(self.interval):
            for trial in self.trials:
                try:
                    set_system_attr(self.study, trial, HEARTBEAT, time.time())
                except Exception as err:  # noqa: BLE001 - a lost beat must not kill the running trial
                    if not warned:
                        log.warning("heartbeat for trial %d failed: %s", trial.number, err)
                        warned = True

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


# ----------------------------------------------------------------------------- search space


def distribution_from_override(override: Override) -> BaseDistribution | str:
    """One `hydra.sweeper.params` entry as upstream reads it: choice(...) -> categorical, range(a, b[, step])
    -> int or float with a step, interval(a, b) -> int or float, tag(log, interval(a, b)) -> log scale; a
    plain value stays fixed (returned as text)."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep) and value.start is not None and value.stop is not None
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            return FloatDistribution(float(value.start), float(value.stop), step=float(value.step) if value.step else None)
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep) and value.start is not None and value.end is not None
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"hydra.sweeper.params: {override} is no search space the Optuna sweeper takes; use choice(...), "
                     "range(a, b[, step=s]), interval(a, b) or tag(log, interval(a, b))")


def params_from_overrides(arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str], list[str]]:
    """(search space, fixed values, deletions `~key`) of `hydra.sweeper.params` + the command line."""
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    deletions: list[str] = []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_delete():
            deletions.append(str(override.input_line))
            continue
        value = distribution_from_override(override)
        if isinstance(value, BaseDistribution):
            distributions[override.get_key_element()] = value
        else:
            fixed[override.get_key_element()] = value
    return distributions, fixed, deletions


def suggest(trial: Trial, name: str, distribution: BaseDistribution) -> Any:
    """Through the public suggest_* API (upstream calls the private Trial._suggest)."""
    match distribution:
        case CategoricalDistribution():
            return trial.suggest_categorical(name, distribution.choices)
        case IntDistribution():
            return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
        case FloatDistribution():
            return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    raise TypeError(f"{name}: no suggest call for {distribution!r}")


def grid_choices(name: str, distribution: BaseDistribution) -> list[Any]:
    """GridSampler needs every value: a choice, or a range with a step (upstream drops the range's end; so here)."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, (IntDistribution, FloatDistribution)) and distribution.step is not None:
        n = int((distribution.high - distribution.low) // distribution.step)
        return [distribution.low + i * distribution.step for i in range(n)]
    raise ValueError(f"hydra/sweeper/sampler=grid: {name} must be a choice(...) or a range(...) with a step")


# ----------------------------------------------------------------------------- sweeper


class SharedStudySweeperImpl(Sweeper):
    """Upstream's loop (ask a batch, launch it, tell the results) with one change: before each `study.ask()`,
    under a lock held across workers, it counts finished + running trials and asks only while that is below
    n_trials."""

    def __init__(self, sampler: Any, direction: Any, storage: str | None, study_name: str | None, n_trials: int,
                 n_jobs: int, max_failure_rate: float, params: DictConfig | None = None,
                 custom_search_space: str | None = None, metric_names: list[str] | None = None,
                 heartbeat_interval: float = 10, grace_period: float = 60, wait_for_running: bool = True) -> None:
        if not 0.0 <= max_failure_rate <= 1.0:
            raise ValueError(f"hydra.sweeper.max_failure_rate={max_failure_rate} must be within [0, 1]")
        if not heartbeat_interval > 0 or not grace_period > heartbeat_interval:
            raise ValueError(
                f"hydra.sweeper: heartbeat_interval={heartbeat_interval} and grace_period={grace_period} must "
                "satisfy 0 < heartbeat_interval < grace_period (a few beats may be late)"
            )
        self.sampler, self.direction, self.storage, self.study_name = sampler, direction, storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = int(n_trials), int(n_jobs), float(max_failure_rate)
        self.params = params
        self.extend_search_space = get_method(custom_search_space) if custom_search_space else None
        self.metric_names = list(metric_names) if metric_names else None
        self.heartbeat_interval = float(heartbeat_interval)
        self.grace_period = float(grace_period)
        self.wait_for_running = bool(wait_for_running)
        self.config: DictConfig | None = None
        self.launcher = None
        self.job_idx = 0
        self.seed = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.seed = int(OmegaConf.select(config, "seed", default=0) or 0)  # the run's seed: each trial's stream from it
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def directions(self) -> list[str]:
        """`direction: maximize` or `direction: [maximize, minimize]` (names or upstream's Direction enum)."""
        items = list(self.direction) if isinstance(self.direction, (list, tuple)) or OmegaConf.is_list(self.direction) \
            else [self.direction]
        out = [getattr(d, "name", str(d)).lower() for d in items]
        if self.metric_names and len(self.metric_names) != len(out):
            raise ValueError(f"hydra.sweeper.metric_names={self.metric_names} names {len(self.metric_names)} "
                             f"objectives for {len(out)} directions {out}")
        return out

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        params_conf = [f"{k!s}={v}" for k, v in (self.params or {}).items()] + list(arguments)
        distributions, fixed_params, deletions = params_from_overrides(params_conf)
        if self._is_grid_sampler():
            grid = {name: grid_choices(name, d) for name, d in distributions.items()}
            self.sampler = self.sampler(grid)
            size = 1
            for choices in grid.values():
                size *= len(choices)
            self.n_trials = min(self.n_trials, size)
        directions = self.directions()

        lock = StudyLock(self.storage, str(self.study_name))
        with lock:  # two workers creating the tables of a fresh database at once collide
            storage = rdb_storage(self.storage) if self.storage else None
            study = optuna.create_study(study_name=self.study_name, storage=storage, sampler=self.sampler,
                                        directions=directions, load_if_exists=True)
            stored = [d.name.lower() for d in study.directions]
            if stored != directions:  # create_study(load_if_exists=True) would silently keep the stored ones
                raise ValueError(f"study {study.study_name} in {_safe_url(self.storage)} optimises {stored}, this "
                                 f"sweep asks for {directions}: give it another sweep.name")
            if self.metric_names and study.metric_names != self.metric_names:
                with warnings.catch_warnings():  # "experimental since 3.2": the API optuna-dashboard reads
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names(self.metric_names)  # the dashboard labels its axes with them
        log.info("Study %s (%s), sampler %s, directions %s: %d trials in total, shared by every worker",
                 study.study_name, _safe_url(self.storage), type(self.sampler).__name__, directions, self.n_trials)

        self._mark_interrupted_folders()
        before = progress(study.get_trials(deepcopy=False), self.grace_period)
        # printed, not only logged: the count is what a user wants to see before an hour of trials
        print(f"vlmsweep: study {study.study_name}: {self.n_trials} trials in total, {before.finished} finished, "
              f"{max(0, self.n_trials - before.taken())} to run (the time per trial is printed after the first)",
              flush=True)
        ran = 0
        while True:
            with lock:
                trials = self._reserve(study)
            if not trials:
                done = progress(study.get_trials(deepcopy=False), self.grace_period)
                if done.finished >= self.n_trials or not self.wait_for_running:
                    break
                log.info("study %s: %d of %d finished, %d running in other workers: waiting for them",
                         study.study_name, done.finished, self.n_trials, done.running)
                time.sleep(self.heartbeat_interval)
                continue
            overrides = [self._configure(trial, distributions, fixed_params, deletions) for trial in trials]
            started = time.monotonic()
            with Heartbeat(study, trials, self.heartbeat_interval):
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            ran += len(returns)
            failures = [e for trial, ret in zip(trials, returns) if (e := self._tell(study, trial, ret, directions))]
            _print_pace(study, self.n_trials, len(returns), time.monotonic() - started, self.grace_period)  # told: counted
            if len(failures) / len(returns) > self.max_failure_rate:
                log.error("Failed %s times out of %d with max_failure_rate=%s.", failures, len(returns),
                          self.max_failure_rate)
                for ret in returns:
                    ret.return_value  # raises the job's own exception, with its traceback
        done = progress(study.get_trials(deepcopy=False), self.grace_period)
        log.info("study %s: %d of %d trials finished (%d by this worker), %d running elsewhere, %d interrupted",
                 study.study_name, done.finished, self.n_trials, ran, done.running, done.interrupted)
        self._save_results(study, directions)

    def _mark_interrupted_folders(self) -> None:
        """Trial folders of this sweep left `running` by a killed worker say `interrupted` (run_folder)."""
        from vlmsweep.pipeline.run_folder import mark_interrupted

        marked = [p.parent for p in Path(self.config.hydra.sweep.dir).glob("*/run_info.json") if mark_interrupted(p.parent)]
        if marked:
            log.warning("%d trial folder(s) of a killed worker marked interrupted: %s", len(marked),
                        ", ".join(str(p) for p in marked[:5]))

    def _is_grid_sampler(self) -> bool:
        import functools

        return isinstance(self.sampler, functools.partial) and self.sampler.func == optuna.samplers.GridSampler

    def _configure(self, trial: Trial, distributions: dict[str, BaseDistribution], fixed_params: dict[str, str],
                   deletions: list[str]) -> tuple[str, ...]:
        """A trial's overrides: its suggested parameters, then the fixed ones (kept as user attributes)."""
        for name, distribution in distributions.items():
            if name not in fixed_params:
                suggest(trial, name, distribution)
        for name, value in fixed_params.items():
            trial.set_user_attr(name, value)
        if self.extend_search_space is not None:
            self.extend_search_space(self.config, trial)
        overlap = trial.params.keys() & fixed_params.keys()
        if overlap:
            raise ValueError(f"hydra.sweeper.params: {sorted(overlap)} are both fixed and searched")
        # the trial's number reaches its job through the job's environment (Hydra restores it after the job)
        return (tuple(f"{name}={value}" for name, value in {**trial.params, **fixed_params}.items()) + tuple(deletions)
                + (f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}",))

    def _reserve(self, study: optuna.Study) -> list[Trial]:
        """Under the lock: declare dead workers' trials interrupted, then ask for what is left of the total."""
        now = time.time()
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            reason = stale_reason(frozen, now, self.grace_period)
            if reason is not None:
                self._interrupt(study, frozen, reason)
        left = self.n_trials - progress(study.get_trials(deepcopy=False), self.grace_period, now).taken()
        trials = []
        for _ in range(max(0, min(self.n_jobs, left))):
            # under the lock, the number the next ask() gets: its own seed stream, whichever worker asks
            seed_stream(self.sampler, self.seed, len(study.get_trials(deepcopy=False)))
            trial = study.ask()
            set_system_attr(study, trial, WORKER, {"host": host_key(), "pid": os.getpid()})
            set_system_attr(study, trial, HEARTBEAT, time.time())
            trials.append(trial)
        return trials

    @staticmethod
    def _interrupt(study: optuna.Study, frozen: FrozenTrial, reason: str) -> None:
        # Optuna has no public "fail someone else's trial" call; this is what its fail_stale_trials does.
        storage = study._storage
        try:
            storage.set_trial_system_attr(frozen._trial_id, INTERRUPTED, reason)
            storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)
        except RuntimeError:  # its worker finished it a moment ago (UpdateFinishedTrialError): not interrupted
            return
        log.warning("trial %d declared interrupted (%s): it does not count, another trial takes its place",
                    frozen.number, reason)

    def _tell(self, study: optuna.Study, trial: Trial, ret: JobReturn, directions: list[str]) -> Exception | None:
        """Tells one result; records the trial's run folder, and a failed run's error (optuna-dashboard shows both
        among the trial's user attributes)."""
        run_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
        try:
            if run_dir:
                trial.set_user_attr("run_dir", str(run_dir))
            try:
                returned = ret.return_value
                values = [float(returned)] if len(directions) == 1 else [float(v) for v in returned]
                if len(values) != len(directions):
                    raise ValueError(f"the run returned {len(values)} values for {len(directions)} directions")
            except Exception as err:  # noqa: BLE001 - the job's own error: the trial FAILs, the sweep goes on
                trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:1000])
                study.tell(trial, state=TrialState.FAIL)
                log.warning("Failed experiment: %s", err)
                return err
            study.tell(trial, values=values, state=TrialState.COMPLETE)
        except RuntimeError as err:  # another worker declared it interrupted (our heartbeats stopped reaching it)
            log.error("trial %d was declared interrupted by another worker while it ran; its result stays in %s "
                      "but not in the study: %s", trial.number, run_dir, err)
        return None

    def _save_results(self, study: optuna.Study, directions: list[str]) -> None:
        """optimization_results.yaml in the sweep folder (the whole study's best, or its Pareto front)."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise RuntimeError(
                f"study {study.study_name}: no trial completed; each trial's run_info.json under "
                f"{self.config.hydra.sweep.dir} says why it failed"
            )
        if len(directions) < 2:
            maximize = directions[0] == "maximize"
            sentence = best_or_tie([(t.number, t.value, params_text(t.params)) for t in complete], maximize)
            top = max(t.value for t in complete) if maximize else min(t.value for t in complete)
            best = [t for t in complete if t.value == top]
            unique = len({params_text(t.params) for t in best}) == 1
            results = {"name": "optuna", "summary": sentence, "best_value": top,
                       "best_params": best[0].params if unique else None,
                       "best_trial": best[0].number if unique else None,
                       "best_run_dir": best[0].user_attrs.get("run_dir") if unique else None,
                       "tied_trials": [] if unique else [t.number for t in best]}
            log.info("study %s: %s", study.study_name, sentence)
        else:
            front = sorted(study.best_trials, key=lambda t: t.number)  # Optuna's non-dominated COMPLETE trials
            names = study.metric_names or [f"objective {k}" for k in range(len(directions))]
            sentence = pareto_summary([(t.number, t.values, params_text(t.params)) for t in front], names,
                                      directions, len(complete))
            results = {"name": "optuna", "summary": sentence, "metric_names": names, "directions": directions,
                       # upstream's key, then the trials: which run folder holds each point of the front
                       "solutions": [{"params": t.params, "values": t.values} for t in front],
                       "pareto_front": [{"trial": t.number, "params": t.params, "values": t.values,
                                         "run_dir": t.user_attrs.get("run_dir")} for t in front]}
            print(f"vlmsweep: study {study.study_name}: {sentence}", flush=True)
        Path(self.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), f"{self.config.hydra.sweep.dir}/optimization_results.yaml")


def _print_pace(study: optuna.Study, n_trials: int, launched: int, seconds: float, grace_period: float) -> None:
    """Measured on this sweep's own trials: the machine, model and budget are the user's, not a table's."""
    done = progress(study.get_trials(deepcopy=False), grace_period)
    left = max(0, n_trials - done.finished)
    batches = -(-left // max(1, launched))  # this worker launches `launched` trials at a time
    eta = f"; at this pace about {batches * seconds / 60:.1f} min for the {left} left" if left else ""
    print(f"vlmsweep: study {study.study_name}: {done.finished} of {n_trials} trials finished, the last "
          f"{launched} in {seconds:.0f} s{eta}", flush=True)


def _safe_url(storage: str | None) -> str:
    if not storage:
        return "in memory"
    from sqlalchemy.engine import make_url

    return make_url(storage).render_as_string(hide_password=True)
