"""Loading run folders (multirun, Optuna sweep, loop cycles) into RunResult records and finding their axes."""

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
    "content.anls",
    "content.cer",
    "rate.leakage",
)
SEED_AXIS = "seed"  # a replicate axis: resampled in the bootstrap, never a factor
VISUAL_TOKENS_AXES = ("max_pixels.visual_tokens", "max_pixels")
RECEIPT_RATIO_AXES = ("data_mix.receipt_ratio", "receipt_ratio")
_CYCLE = re.compile(r"^cycle_(\d+)$")


@dataclass
class RunResult:
    name: str  # subfolder name: "0", "1", ... or "cycle_2"
    path: Path
    status: str  # ok | failed | missing (no metrics.json)
    error: str | None = None
    axes: dict[str, str] = field(default_factory=dict)  # choices, then key=value overrides (overrides win)
    seed: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # sample id -> {metric: value}
    problems: list[str] = field(default_factory=list)  # shown in the report, never swallowed
    info: dict[str, Any] = field(default_factory=dict)  # run_info.json as read

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
    return key.lstrip("+"), value


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
    axes: dict[str, str] = {k: _fmt_value(v) for k, v in (info.get("choices") or {}).items()}
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
    if status not in ("ok", "missing"):
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
        metrics=metrics, scores=scores, problems=problems, info=info,
    )  # fmt: skip


def _numbered(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _cycles(run_dir: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _CYCLE.match(p.name))]
    return [p for _, p in sorted(found)]


def load_runs(sweep_dir: Path | str) -> list[RunResult]:
    """Runs of a Hydra multirun / Optuna sweep folder (0/, 1/, ... in numeric order), of a loop run
    (cycle_0/, cycle_1/, ... in cycle order) or a single run folder."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: not a folder (give a multirun folder such as outputs/multirun/DATE/TIME)")
    numbered = _numbered(sweep_dir)
    if numbered:
        runs = []
        for path in numbered:
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
        f"{sweep_dir}: no run folders found (expected numbered subfolders 0/, 1/, ... from a multirun, "
        "cycle_N/ subfolders from a loop run, or a run folder with metrics.json)"
    )


def varying_axes(runs: list[RunResult]) -> list[str]:
    """Axes whose value differs between runs, in first-seen order (a key absent from a run counts as a value)."""
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
