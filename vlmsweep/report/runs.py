"""Loading run folders (multirun, Optuna sweep, loop cycles) into RunResult records, their axes and labels."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADLINE_METRICS = (
    "contract.strict_parse_rate",
    "contract.key_set_rate",
    "contract.schema_valid_rate",
    "content.e2e_field_em",
    "content.field_em",
    "content.field_em_margin",  # over chance: 0 when the answers do not depend on the page (evaluate/grounding.py)
    "content.anls",
    "content.cer",
    "rate.leakage",
    "routing.accuracy",  # adapters=per_domain runs only (vlmsweep/pipeline/per_domain.py)
)
SEED_AXIS = "seed"  # a replicate axis: a source of noise in every interval, never a factor
# Where a run's budget and receipt share are found: an override, then run_info.json's resolved value
# (`visual_tokens`: what a named budget such as max_pixels=512tok resolved to).
VISUAL_TOKENS_AXES = ("max_pixels.visual_tokens", "visual_tokens")
RECEIPT_RATIO_AXES = ("data_mix.receipt_ratio", "receipt_ratio")
_CYCLE = re.compile(r"^cycle_(\d+)$")
# Overrides that do not change what a run computes: never an axis, never in a label (a resumed sweep
# may say sweep.trials=3 where the first invocation said 2). `recipe` is chosen by the model (config.yaml's
# `optional recipe: ${model}`), so it varies exactly when `model` does and would repeat that axis.
NOT_AXES = ("sweep", "hydra", "tracker", "recipe")


@dataclass
class RunResult:
    name: str  # "0", "1", ... (multirun), "trial 3" (Optuna), "cycle_2" (loop), or the folder's name
    path: Path
    status: str  # ok | failed | missing (no metrics.json) | running (no result yet) | pruned
    error: str | None = None
    axes: dict[str, str] = field(default_factory=dict)  # choices, then key=value overrides (overrides win)
    seed: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # sample id -> {metric: value}
    problems: list[str] = field(default_factory=list)  # shown in the report, never swallowed
    info: dict[str, Any] = field(default_factory=dict)  # run_info.json as read
    config: dict[str, Any] = field(default_factory=dict)  # the run's resolved config.yaml (sweep.* is read)
    label: str = ""  # what differs from the other runs ("quant=nf4 scope=llm"): plots and tables
    trial: Any = None  # vlmsweep.report.study.TrialRecord of an Optuna trial, when its study was read

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def axis_float(self, names: tuple[str, ...]) -> float | None:
        for name in names:
            value = self.axes.get(name, self.info.get(name))
            if value is None:
                continue
            try:
                return float(value)
            except (TypeError, ValueError):
                continue
        return None


def _read_json(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        problems.append(f"{path.name}: invalid JSON at line {err.lineno} ({err.msg})")
    except OSError as err:
        problems.append(f"{path.name}: cannot read ({err.strerror})")
    return None


def _parse_override(text: str) -> tuple[str, str] | None:
    """Hydra override 'key=value' (also '+key=value', '++key=value'); '~key' deletions carry no level."""
    if "=" not in text or text.startswith("~"):
        return None
    key, value = text.split("=", 1)
    key = key.lstrip("+")
    if key.split(".", 1)[0].split("/", 1)[0] in NOT_AXES:
        return None
    return key, value


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _fmt_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def load_run(path: Path, name: str | None = None, extra_axes: dict[str, str] | None = None) -> RunResult:
    problems: list[str] = []
    info_path = path / "run_info.json"
    info = _read_json(info_path, problems) if info_path.exists() else None
    info = info if isinstance(info, dict) else {}
    if not info_path.exists():
        problems.append("run_info.json missing: axes unknown")
    axes: dict[str, str] = {k: _fmt_value(v) for k, v in (info.get("choices") or {}).items() if k not in NOT_AXES}
    for item in info.get("overrides") or []:
        parsed = _parse_override(str(item))
        if parsed:
            axes[parsed[0]] = parsed[1]
    if "receipt_ratio" in info and "data_mix.receipt_ratio" not in axes:
        axes["data_mix.receipt_ratio"] = _fmt_value(info["receipt_ratio"])
    axes.update(extra_axes or {})
    seed = axes.get(SEED_AXIS)
    if seed is None and info.get("seed") is not None:
        seed = _fmt_value(info["seed"])

    status = str(info.get("status", "ok"))
    error = info.get("error")
    metrics: dict[str, float] = {}
    metrics_path = path / "metrics.json"
    if metrics_path.exists():
        raw = _read_json(metrics_path, problems)
        if isinstance(raw, dict):
            for key, value in raw.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    metrics[key] = float(value)
                else:
                    problems.append(f"metrics.json: {key}={value!r} is not a finite number (left out)")
        elif raw is not None:
            problems.append("metrics.json: expected an object of metric -> number")
        if raw is None or not isinstance(raw, dict):
            status, error = "failed", error or "metrics.json unreadable"
    elif status == "ok":
        status, error = "missing", "metrics.json missing"
    elif status == "running":
        error = error or "run_info.json says running: still running, or killed before it finished"
    if status not in ("ok", "missing", "running"):
        status = "failed"
        error = error or "run_info.json says failed (no error given)"

    scores: dict[str, dict[str, float]] = {}
    samples_path = path / "samples.jsonl"
    if status == "ok" and samples_path.exists():
        with samples_path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    problems.append(f"samples.jsonl line {lineno}: invalid JSON ({err.msg}); sample left out")
                    continue
                sid = record.get("id") if isinstance(record, dict) else None
                if sid is None or not isinstance(record.get("scores"), dict):
                    problems.append(f"samples.jsonl line {lineno}: no 'id' or 'scores'; sample left out")
                    continue
                scores[str(sid)] = {
                    k: float(v) for k, v in record["scores"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                }
    return RunResult(
        name=name or path.name, path=path, status=status, error=error, axes=axes, seed=seed,
        metrics=metrics, scores=scores, problems=problems, info=info, config=_read_config(path / "config.yaml"),
    )  # fmt: skip


def _run_dirs(sweep_dir: Path) -> list[Path]:
    """Job folders of a multirun or sweep: numbered (0/, 1/, ... Hydra's default) or named by the sweep's
    hydra.sweep.subdir (the Optuna sweeps' timestamps, unique across resumed invocations and workers).
    Numbered ones in numeric order, the others by name (a timestamp sorts by start time)."""
    found = [
        p for p in sweep_dir.iterdir()
        if p.is_dir() and not _CYCLE.match(p.name)
        and (p.name.isdigit() or (p / "run_info.json").exists() or (p / ".hydra").is_dir())
    ]  # fmt: skip
    return sorted(found, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))


def _cycles(run_dir: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _CYCLE.match(p.name))]
    return [p for _, p in sorted(found)]


def load_runs(sweep_dir: Path | str, storage: str | None = None) -> list[RunResult]:
    """Runs of a Hydra multirun or Optuna sweep folder (job folders; trials of an Optuna study in trial
    order, labelled from the study), of a loop run (cycle_0/, cycle_1/, ... in cycle order) or a single
    run folder. Every run gets a label naming what differs between them."""
    runs, _ = load_sweep(sweep_dir, storage)
    return runs


def load_sweep(sweep_dir: Path | str, storage: str | None = None):
    """(runs, the Optuna study or None); see load_runs."""
    sweep_dir = Path(sweep_dir)
    runs = _load_folders(sweep_dir)
    study = None
    if any(r.config.get("sweep", {}).get("name") for r in runs) or (sweep_dir / "optuna.db").exists() or storage:
        from vlmsweep.report.study import find_study

        study = find_study(sweep_dir, [r.config for r in runs], storage)
        if study is not None:
            runs = _attach_trials(runs, study, sweep_dir)
    label_runs(runs, sweep_axes(runs, study))
    return runs, study


def _attach_trials(runs: list[RunResult], study, sweep_dir: Path) -> list[RunResult]:
    """Each folder's trial (number, state, value; its params as axes); a trial without a folder here (a
    worker elsewhere wrote it, or it was interrupted before starting) is listed too. Trial order."""
    by_folder = study.by_folder()
    seen = set()
    for run in runs:
        folder = run.path.parent if _CYCLE.match(run.path.name) else run.path  # a loop trial: its last cycle
        trial = by_folder.get(folder.name)
        if trial is None:
            continue
        seen.add(trial.number)
        run.trial, run.name = trial, f"trial {trial.number}"
        run.axes.update({k: _fmt_value(v) for k, v in trial.params.items()})
        if trial.state == "RUNNING" and run.status == "running":
            run.error = trial.error or "running: its worker is alive (heartbeat within the grace period)"
        elif trial.state == "PRUNED":
            run.status, run.error = "pruned", "pruned by the sweeper"
        elif trial.state == "FAIL" and run.ok:
            run.problems.append(f"the study marks trial {trial.number} FAIL: {trial.error or 'no reason recorded'}")
        elif trial.state == "FAIL" and trial.error and run.status in ("running", "missing"):
            run.status, run.error = "failed", trial.error
    for trial in study.trials:
        if trial.number in seen:
            continue
        status = {"RUNNING": "running", "PRUNED": "pruned", "COMPLETE": "missing"}.get(trial.state, "failed")
        reason = trial.error or f"no run folder under {sweep_dir} (written by another worker?)"
        runs.append(RunResult(name=f"trial {trial.number}", path=Path(trial.run_dir or sweep_dir), status=status,
                              error=reason, axes={k: _fmt_value(v) for k, v in trial.params.items()}, trial=trial))
    return sorted(runs, key=lambda r: (r.trial is None, r.trial.number if r.trial is not None else 0))


def label_runs(runs: list[RunResult], axes: list[str] | None = None) -> None:
    """label = the varying axes' values, one name per axis (max_pixels and max_pixels.visual_tokens
    that always move together count once); the run's name when nothing varies."""
    axes = varying_axes(runs) if axes is None else axes
    shown: list[str] = []
    for axis in axes:
        if axis != SEED_AXIS and any(same_partition(runs, axis, other) for other in shown):
            continue
        shown.append(axis)
    for run in runs:
        parts = [f"{axis}={run.axes[axis]}" for axis in shown if run.axes.get(axis) is not None]
        run.label = " ".join(parts) or run.name


def same_partition(runs: list[RunResult], x: str, y: str) -> bool:
    """x and y split the runs the same way (one axis under two names, e.g. a choice and its value)."""
    pairs = {(r.axes.get(x), r.axes.get(y)) for r in runs}
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


def _load_folders(sweep_dir: Path) -> list[RunResult]:
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: not a folder (give a multirun folder such as outputs/multirun/DATE/TIME)")
    jobs = _run_dirs(sweep_dir)
    if jobs:
        runs = []
        for path in jobs:
            cycles = _cycles(path)
            if not (path / "metrics.json").exists() and cycles:
                # a loop run inside a multirun: its last cycle stands for it
                run = load_run(cycles[-1], name=path.name)
                run.problems.append(f"loop run: reporting {cycles[-1].name}")
                info_run = load_run(path)
                run.axes, run.seed = info_run.axes, info_run.seed
                if not info_run.ok and info_run.status == "failed":
                    run.status, run.error = info_run.status, info_run.error
                runs.append(run)
            else:
                runs.append(load_run(path))
        return runs
    cycles = _cycles(sweep_dir)
    if cycles:
        top = load_run(sweep_dir) if (sweep_dir / "run_info.json").exists() else None
        runs = []
        for path in cycles:
            run = load_run(path, extra_axes={"cycle": path.name.split("_", 1)[1]})
            if top is not None:
                run.axes = {**top.axes, **run.axes}
                run.seed = run.seed or top.seed
                run.problems = [p for p in run.problems if not p.startswith("run_info.json missing")]
            runs.append(run)
        return runs
    if (sweep_dir / "metrics.json").exists() or (sweep_dir / "run_info.json").exists():
        return [load_run(sweep_dir)]
    raise ValueError(
        f"{sweep_dir}: no run folders found (expected job subfolders with run_info.json from a multirun or "
        "sweep, cycle_N/ subfolders from a loop run, or a run folder with metrics.json)"
    )


def sweep_axes(runs: list[RunResult], study=None) -> list[str]:
    """The axes a report shows: an Optuna study's parameters always (even while one trial is done), then
    whatever else varies between the runs."""
    params = study.param_names() if study is not None else []
    return params + [a for a in varying_axes(runs) if a not in params]


def varying_axes(runs: list[RunResult]) -> list[str]:
    """Axes whose value differs between runs, in first-seen order (a key absent from a run counts as a value).
    A trial known only from its study (no folder here) has only its parameters: it does not vote."""
    with_folder = [r for r in runs if r.info]
    runs = with_folder or runs
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.axes if k not in keys]
    out = []
    for key in keys:
        values = {run.axes.get(key) for run in runs}
        if len(values) > 1:
            out.append(key)
    # a choice and an override can name the same axis (max_pixels and max_pixels.visual_tokens): keep both,
    # they are what the user typed
    return out


def read_optuna_results(sweep_dir: Path) -> dict[str, Any] | None:
    path = sweep_dir / "optimization_results.yaml"
    if not path.exists():
        return None
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path))  # type: ignore[return-value]
    except Exception as err:  # a broken file is reported in the page, not fatal
        return {"error": f"{path.name}: {err}"}
