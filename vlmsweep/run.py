"""run(cfg) -> metrics: the entry every caller uses (Hydra, sweeps, tests); it picks one pass or the loop.

The order of the steps lives in vlmsweep.pipeline.stages (run_pass), shared by a single run and a loop cycle.
"""

from __future__ import annotations

import math
import time
import traceback
from pathlib import Path

from omegaconf import OmegaConf
from vlmsweep import loop
from vlmsweep.pipeline import tracking
from vlmsweep.config import Config
from vlmsweep.files import write_text
from vlmsweep.config import config_dict
from vlmsweep.pipeline.run_folder import (ResumeMismatch, RunInfo, config_changes, free_memory, rank, resume_config,
                                           run_info, world_size)
from vlmsweep.pipeline.stages import Pass, one_process_only, prepare_run, run_pass


def run(cfg: Config, overrides: list[str] | None = None) -> dict[str, float]:
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    main_process = rank() == 0
    if main_process:
        check_same_config(cfg, out_dir)  # before config.yaml is overwritten: it is what the folder's training was
        write_text(out_dir / "config.yaml", OmegaConf.to_yaml(config_dict(cfg)))
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
        refusal = one_process_only(cfg)
        if refusal and world_size() > 1:  # a documented limit, recorded in run_info.json like any failure
            raise ValueError(refusal)
        if cfg.loop.cycles > 0:
            metrics = loop.run_loop(cfg, out_dir, tracker, info)
        elif cfg.adapters.per_domain:
            from vlmsweep.pipeline.per_domain import run_per_domain

            metrics = run_per_domain(cfg, out_dir, tracker, info)
        else:
            metrics = run_once(cfg, out_dir, tracker, info)
    except BaseException as err:
        # Ctrl-C, or SIGTERM (a scheduler's time limit; vlmsweep.__main__ turns it into KeyboardInterrupt): interrupted
        stopped = isinstance(err, (KeyboardInterrupt, SystemExit))
        info.update(status="interrupted" if stopped else "failed", error=f"{type(err).__name__}: {err}",
                    traceback=traceback.format_exc())
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


def check_same_config(cfg: Config, out_dir: Path) -> None:
    """A rerun of a folder that holds checkpoints resumes them: it must be the config that wrote them (seed included),
    or the folder would hold one config's training under another's config.yaml. A folder that holds a finished run
    (run_info.json says ok) is refused to another config too, checkpoints or not (the default saves none): the rerun
    would replace its adapter, metrics and samples without a word, unless train.resume=false asks to start it over.
    The loop checks its own state too."""
    saved = out_dir / "config.yaml"
    if not saved.is_file():
        return
    resumes = cfg.train.enabled and cfg.train.resume and any(
        any(out_dir.glob(f"{'*/' * depth}checkpoints/checkpoint-*")) for depth in range(3))
    finished = cfg.train.resume and (run_info(out_dir) or {}).get("status") == "ok"  # train.resume=false: the user starts the folder over
    if not (resumes or finished):
        return
    before = OmegaConf.to_container(OmegaConf.load(saved), resolve=False)
    diff = config_changes(resume_config(before), resume_config(config_dict(cfg)))  # type: ignore[arg-type]
    if diff and resumes:
        raise ResumeMismatch(f"{out_dir}: this run folder holds checkpoints of a different config ({diff}); resume it "
                             "with the same overrides (only tracker and paths may change), or use a new hydra.run.dir")
    if diff:
        raise ResumeMismatch(f"{out_dir}: this run folder holds a finished run of a different config ({diff}); a rerun "
                             "would replace its adapter and metrics: use a new hydra.run.dir, or train.resume=false "
                             "to start this folder over")


def run_once(cfg: Config, out_dir: Path, tracker, info: RunInfo) -> dict[str, float]:
    """One pass: the run's preamble and its own splits (vlmsweep.pipeline.stages.prepare_run), then run_pass."""
    data = prepare_run(cfg, info)
    splits = data.splits
    result = run_pass(cfg, Pass(
        out_dir=out_dir,
        train=splits["train"] if cfg.train.enabled else [],
        evals={"test": (splits["test"], out_dir)} if cfg.eval.enabled else {},
        tracker=tracker,
        adapter=cfg.model.adapter,
        estimate=cfg.train.enabled,  # the estimate is of a training step: an evaluation-only run has none
        slices=data.slices,
        data_sources=splits.sources,
        validation=splits["validation"],
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
