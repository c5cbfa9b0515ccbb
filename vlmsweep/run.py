"""run(cfg) -> metrics: the entry every caller uses (Hydra, sweeps, tests); it picks one pass or the loop.

The order of the steps lives in vlmsweep.stages (run_pass), shared by a single run and a loop cycle.
"""

from __future__ import annotations

import math
import time
import traceback
from pathlib import Path

from omegaconf import OmegaConf
from transformers import set_seed

from vlmsweep import data as data_mod
from vlmsweep import loop, tracking
from vlmsweep.config import Config
from vlmsweep.evaluate.slices import load_slices
from vlmsweep.stages import Pass, RunInfo, config_dict, datasets, free_memory, rank, run_pass, world_size


def run(cfg: Config, overrides: list[str] | None = None) -> dict[str, float]:
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    main_process = rank() == 0
    if main_process:
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(config_dict(cfg)), encoding="utf-8")
    info = RunInfo(cfg, out_dir, overrides)
    tracker = (
        tracking.start(cfg, out_dir, name=out_dir.name, group=out_dir.parent.name, config_dict=config_dict(cfg))
        if main_process
        else tracking.Tracker()
    )
    try:
        if cfg.eval.enabled:  # a missing @FILE in eval.leakage_keywords fails now, not after training
            from vlmsweep.evaluate.tags import resolve_leakage_keywords

            resolve_leakage_keywords(tuple(cfg.eval.leakage_keywords))
        if cfg.train.enabled:  # train.loss_impl=liger/cce without its package or a GPU fails now, not after loading
            from vlmsweep.train.loss import check_loss_impl

            check_loss_impl(cfg.train.loss_impl)
        if cfg.loop.cycles > 0:
            if world_size() > 1:  # a documented limit, recorded in run_info.json like any failure
                raise ValueError(
                    f"loop.cycles={cfg.loop.cycles} cannot run under torchrun/accelerate launch: the loop writes its "
                    "manifests and state from one process. Run the loop in a single process, or use loop.cycles=0"
                )
            metrics = loop.run_loop(cfg, out_dir, tracker, info)
        elif cfg.adapters.per_domain:
            from vlmsweep.per_domain import run_per_domain

            metrics = run_per_domain(cfg, out_dir, tracker, info)
        else:
            metrics = run_once(cfg, out_dir, tracker, info)
    except BaseException as err:
        info.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        tracker.finish(exit_code=1)
        free_memory()
        raise
    info.update(status="ok", finished=time.strftime("%Y-%m-%dT%H:%M:%S"), world_size=world_size())
    tracker.summary(metrics)
    tracker.finish()
    free_memory()
    if main_process:
        what = "report.md, metrics.json, cycle_N/" if cfg.loop.cycles > 0 else "metrics.json, samples.jsonl, report.md" + (
            ("" if not cfg.train.enabled else ", adapters/<group>/" if cfg.adapters.per_domain else ", adapter/"))
        print(f"vlmsweep: outputs in {out_dir.resolve()}  ({what})")
    return metrics


def run_once(cfg: Config, out_dir: Path, tracker, info: RunInfo) -> dict[str, float]:
    """One pass: the run's own splits (data), then vlmsweep.stages.run_pass."""
    set_seed(cfg.seed)
    splits = datasets(cfg)  # a bad manifest fails here, before the model is loaded
    info.update(data=splits.sources)
    slices = load_slices(cfg) if cfg.eval.enabled else {}  # eval.slices: read and validated before the model loads
    if cfg.train.enabled and cfg.eval.enabled:
        data_mod.check_no_leak(splits["train"], {"test": splits["test"]}, where="this run",
                               near_duplicate_bits=cfg.data.near_duplicate_bits)
        if slices:  # a slice is held out like the test set: no training page may be one of its pages
            data_mod.check_no_leak(splits["train"], {f"slice {n}": r for n, r in slices.items()}, where="this run",
                                   near_duplicate_bits=cfg.data.near_duplicate_bits)
    result = run_pass(cfg, Pass(
        out_dir=out_dir,
        train=splits["train"] if cfg.train.enabled else [],
        evals={"test": (splits["test"], out_dir)} if cfg.eval.enabled else {},
        tracker=tracker,
        adapter=cfg.model.adapter,
        estimate=cfg.train.enabled,  # the estimate is of a training step: an evaluation-only run has none
        slices=slices,
    ), info)
    if rank() == 0:
        info.update(cost={k: v for k, v in result.metrics.items() if k.startswith(("cost.", "memory."))})
    return result.metrics


def objective(cfg: Config, metrics: dict[str, float]) -> float | list[float]:
    """The value a sweeper optimises: sweep.objective, or it and each sweep.trade_off metric (a multi-objective
    study). Missing or non-finite is an error (the trial fails with this reason) rather than a NaN that
    would pass for a result."""
    values = []
    for name in [cfg.sweep.objective, *cfg.sweep.trade_off]:
        value = metrics.get(name)
        if value is None:
            raise KeyError(f"sweep objective {name}: the run produced no such metric")
        if not math.isfinite(value):
            raise ValueError(f"sweep objective {name} is {value} for this run")
        values.append(float(value))
    return values[0] if len(values) == 1 else values
