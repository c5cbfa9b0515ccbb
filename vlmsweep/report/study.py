"""The Optuna study behind a sweep folder: each trial's number, state, values and run folder, and its best or tie
(one objective) or its Pareto front (several)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmsweep.sweep.summaries import best_or_tie, pareto_summary, params_text

log = logging.getLogger(__name__)


@dataclass
class TrialRecord:
    number: int
    state: str  # COMPLETE | FAIL | PRUNED | RUNNING | WAITING
    value: float | None  # the first objective's
    params: dict[str, Any]
    run_dir: str | None  # the trial's folder as the sweeper recorded it (absolute, on the worker's machine)
    error: str | None  # the run's error, or why its worker was declared gone
    values: list[float] | None = None  # every objective's, in the study's order
    on_front: bool = False  # several objectives: no other COMPLETE trial is at least as good in all, better in one


@dataclass
class StudyRecord:
    name: str
    storage: str  # password hidden
    direction: str  # maximize | minimize | multi
    trials: list[TrialRecord] = field(default_factory=list)
    directions: list[str] = field(default_factory=list)  # one per objective
    metric_names: list[str] = field(default_factory=list)  # one per objective (the sweep's sweep.objective, sweep.trade_off)

    def by_folder(self) -> dict[str, TrialRecord]:
        """Folder name -> trial: the sweep folder may have been moved or copied since, names stay."""
        return {Path(t.run_dir).name: t for t in self.trials if t.run_dir}

    def param_names(self) -> list[str]:
        return list(dict.fromkeys(k for t in self.trials for k in t.params))

    def front(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.on_front]

    def best(self) -> str:
        if len(self.directions) > 1:
            completed = sum(t.state == "COMPLETE" for t in self.trials)
            return pareto_summary([(t.number, t.values, params_text(t.params)) for t in self.front()],
                                  self.metric_names, self.directions, completed)
        complete = [(t.number, t.value, params_text(t.params)) for t in self.trials
                    if t.state == "COMPLETE" and t.value is not None]
        return best_or_tie(complete, self.direction == "maximize")


def _safe(storage: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(storage).render_as_string(hide_password=True)


def read_study(storage: str, study_name: str | None) -> StudyRecord | None:
    """Trials of one study (read-only); None when the storage holds no such study. study_name None: the
    storage's only study."""
    import optuna

    from vlmsweep.sweep.sweeper import INTERRUPTED, stale_reason

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if study_name is None:
        names = optuna.get_all_study_names(storage)
        if len(names) != 1:
            return None
        study_name = names[0]
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return None
    trials = []
    now = time.time()
    directions = [d.name.lower() for d in study.directions]
    # Optuna's own non-dominated set (study.best_trials), not a second implementation of it
    front = {t.number for t in study.best_trials} if len(directions) > 1 else set()
    for t in study.get_trials(deepcopy=False):
        error = t.user_attrs.get("error")
        if t.system_attrs.get(INTERRUPTED):
            error = f"interrupted: {t.system_attrs[INTERRUPTED]} (run again in its place)"
        elif t.state.name == "RUNNING" and (gone := stale_reason(t, now, grace_period=60)):
            error = f"left RUNNING, {gone}: the next invocation of the sweep runs it again"
        values = list(t.values) if t.values is not None else None
        trials.append(TrialRecord(t.number, t.state.name, values[0] if values else None, dict(t.params),
                                  t.user_attrs.get("run_dir"), error, values, t.number in front))
    direction = directions[0] if len(directions) == 1 else "multi"
    names = study.metric_names or [f"objective {k}" for k in range(len(directions))]
    return StudyRecord(study_name, _safe(storage), direction, trials, directions, names)


def find_study(sweep_dir: Path, run_configs: list[dict[str, Any]], storage: str | None = None) -> StudyRecord | None:
    """The study of a sweep folder: `storage` if given, else the folder's optuna.db, else the storage the
    trials' config.yaml name (sweep.storage; e.g. a PostgreSQL shared by workers). Never fatal: a study
    that cannot be read leaves the report to the run folders alone."""
    names = {c.get("sweep", {}).get("name") for c in run_configs} - {None}
    study_name = names.pop() if len(names) == 1 else None
    candidates = [storage] if storage else []
    if (sweep_dir / "optuna.db").exists():
        candidates.append(f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}")
    for url in sorted({c.get("sweep", {}).get("storage") for c in run_configs} - {None}):
        # a relative SQLite path means the worker's folder, and opening a missing file would create it
        if not url.startswith("sqlite:") or Path(url.split("///", 1)[-1]).exists():
            candidates.append(url)
    for url in candidates:
        try:
            found = read_study(url, study_name)
        except Exception as err:  # noqa: BLE001 - an unreachable database must not stop the report
            log.warning("could not read the Optuna study from %s: %s", _safe(url), err)
            continue
        if found is not None:
            return found
    return None
