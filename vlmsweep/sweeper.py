"""A shared Optuna study: hydra-optuna-sweeper where `n_trials` is a total that many workers reach together."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, Trial, TrialState

from vlmsweep.sweeps import best_or_tie, params_text

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

    Optuna 2.10's own heartbeat (RDBStorage(heartbeat_interval, grace_period) + fail_stale_trials) is
    not used: it never fails a RUNNING trial that has no heartbeat row (trials left by a killed stock
    sweeper would block the total forever), it measures age with timedelta.seconds (a heartbeat
    committed just after the reader's now() reads as ~86,399 s old: a live trial declared dead), and
    its FAIL cannot be told apart from a run that failed. Hand-written instead: heartbeat and worker
    in trial system attributes; workers' clocks must agree to well within grace_period (NTP)."""
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

    def __init__(self, trials: list[Trial], interval: float):
        self.trials, self.interval = trials, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vlmsweep-heartbeat", daemon=True)

    def _run(self) -> None:
        warned = False
        while not self._stop.wait(self.interval):
            for trial in self.trials:
                try:
                    trial.set_system_attr(HEARTBEAT, time.time())
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


# ----------------------------------------------------------------------------- sweeper


class SharedStudySweeperImpl(OptunaSweeperImpl):
    """OptunaSweeperImpl 1.3.0 with one change to its loop: before each `study.ask()`, under a lock held
    across workers, it counts finished + running trials and asks only while that is below n_trials.
    Search-space parsing, trial configuration and result handling are the parent's."""

    def __init__(self, *args: Any, heartbeat_interval: float = 10, grace_period: float = 60,
                 wait_for_running: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not heartbeat_interval > 0 or not grace_period > heartbeat_interval:
            raise ValueError(
                f"hydra.sweeper: heartbeat_interval={heartbeat_interval} and grace_period={grace_period} must "
                "satisfy 0 < heartbeat_interval < grace_period (a few beats may be late)"
            )
        self.heartbeat_interval = float(heartbeat_interval)
        self.grace_period = float(grace_period)
        self.wait_for_running = bool(wait_for_running)

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        # as OptunaSweeperImpl.sweep: the search space from hydra.sweeper.params + command line
        self._process_searchspace_config()
        params_conf = self._parse_sweeper_params_config() + list(arguments)
        override_distributions, fixed_params = create_params_from_overrides(params_conf)
        distributions = dict(self.search_space_distributions or {})
        distributions.update(override_distributions)
        if self._is_grid_sampler():
            grid = {name: self._to_grid_sampler_choices(d) for name, d in distributions.items()}
            self.sampler = self.sampler(grid)
            size = 1
            for choices in grid.values():
                size *= len(choices)
            self.n_trials = min(self.n_trials, size)
        for name in fixed_params:
            distributions.pop(name, None)
        directions = self._get_directions()

        lock = StudyLock(self.storage, str(self.study_name))
        with lock:  # two workers creating the tables of a fresh database at once collide
            storage = rdb_storage(self.storage) if self.storage else None
            study = optuna.create_study(study_name=self.study_name, storage=storage, sampler=self.sampler,
                                        directions=directions, load_if_exists=True)
        log.info("Study %s (%s), sampler %s, directions %s: %d trials in total, shared by every worker",
                 study.study_name, _safe_url(self.storage), type(self.sampler).__name__, directions, self.n_trials)

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
            overrides = self._configure_trials(trials, distributions, fixed_params)
            started = time.monotonic()
            with Heartbeat(trials, self.heartbeat_interval):
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            ran += len(returns)
            _print_pace(study, self.n_trials, len(returns), time.monotonic() - started, self.grace_period)
            failures = [e for trial, ret in zip(trials, returns) if (e := self._tell(study, trial, ret, directions))]
            if len(failures) / len(returns) > self.max_failure_rate:
                log.error("Failed %s times out of %d with max_failure_rate=%s.", failures, len(returns),
                          self.max_failure_rate)
                for ret in returns:
                    ret.return_value  # raises the job's own exception, with its traceback
        done = progress(study.get_trials(deepcopy=False), self.grace_period)
        log.info("study %s: %d of %d trials finished (%d by this worker), %d running elsewhere, %d interrupted",
                 study.study_name, done.finished, self.n_trials, ran, done.running, done.interrupted)
        self._save_results(study, directions)

    def _is_grid_sampler(self) -> bool:
        import functools

        return isinstance(self.sampler, functools.partial) and self.sampler.func == optuna.samplers.GridSampler

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
            trial = study.ask()
            trial.set_system_attr(WORKER, {"host": host_key(), "pid": os.getpid()})
            trial.set_system_attr(HEARTBEAT, time.time())
            trials.append(trial)
        return trials

    @staticmethod
    def _interrupt(study: optuna.Study, frozen: FrozenTrial, reason: str) -> None:
        # Optuna has no public "fail someone else's trial" call; this is what its fail_stale_trials does.
        storage = study._storage
        try:
            storage.set_trial_system_attr(frozen._trial_id, INTERRUPTED, reason)
            storage.set_trial_state(frozen._trial_id, TrialState.FAIL)
        except RuntimeError:  # its worker finished it a moment ago: not interrupted after all
            return
        log.warning("trial %d declared interrupted (%s): it does not count, another trial takes its place",
                    frozen.number, reason)

    def _tell(self, study: optuna.Study, trial: Trial, ret: JobReturn, directions: list[str]) -> Exception | None:
        """As OptunaSweeperImpl.sweep tells each result; also records the trial's run folder and error."""
        run_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
        try:
            if run_dir:
                trial.set_user_attr("run_dir", str(run_dir))
            try:
                returned = ret.return_value
                values = [float(returned)] if len(directions) == 1 else [float(v) for v in returned]
            except Exception as err:  # noqa: BLE001 - the job's own error: the trial FAILs, the sweep goes on
                trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:1000])
                study.tell(trial, state=TrialState.FAIL)
                log.warning("Failed experiment: %s", err)
                return err
            if len(values) != len(directions):
                err = ValueError(f"the run returned {len(values)} values for {len(directions)} directions")
                study.tell(trial, state=TrialState.FAIL)
                return err
            study.tell(trial, values=values, state=TrialState.COMPLETE)
        except RuntimeError as err:  # another worker declared it interrupted (our heartbeats stopped reaching it)
            log.error("trial %d was declared interrupted by another worker while it ran; its result stays in %s "
                      "but not in the study: %s", trial.number, run_dir, err)
        return None

    def _save_results(self, study: optuna.Study, directions: list[str]) -> None:
        """As OptunaSweeperImpl.sweep: optimization_results.yaml in the sweep folder (the whole study's best)."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise RuntimeError(
                f"study {study.study_name}: no trial completed; each trial's run_info.json under "
                f"{self.config.hydra.sweep.dir} says why it failed"
            )
        if len(directions) < 2:
            maximize = str(directions[0]).lower() == "maximize"
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
            results = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials]}
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
