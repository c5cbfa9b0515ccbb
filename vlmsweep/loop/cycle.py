"""The loop's policy: cycle 0, then each retrain cycle, through vlmsweep.pipeline.stages.run_pass; between cycles
the next hard set (vlmsweep.loop.mining), the regression guard (guard), the state (state); at the end the seed-noise
band (noise) and the report (report)."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import set_seed

from vlmsweep import data as data_mod
from vlmsweep.config import Config
from vlmsweep.data import Record
from vlmsweep.data.leakage import check_no_leak
from vlmsweep.evaluate.grounding import chance_summary
from vlmsweep.evaluate.remedies import misreading_share
from vlmsweep.files import write_json, write_text
from vlmsweep.loop.guard import headline_metrics, regression_drops
from vlmsweep.loop.mining import build_hard_set, origin_counts, training_set
from vlmsweep.loop.noise import run_noise_seeds, targeted_changes
from vlmsweep.loop.report import plot_tags, render_loop_report
from vlmsweep.loop.state import (STATE_FILE, CycleResult, cycle_dir, fixed_splits, is_finished, load_cycle, load_state,
                                 read_metrics, read_records)
from vlmsweep.metrics import numeric
from vlmsweep.pipeline import stages
from vlmsweep.pipeline.run_folder import RunInfo, free_memory
from vlmsweep.pipeline.stages import Pass

log = logging.getLogger(__name__)


class _CycleTracker:
    """The tracker for one cycle: training steps continue after the previous cycles' (W&B wants them increasing);
    everything else (tables, summaries, images) goes to the run's tracker as it is."""

    def __init__(self, tracker, offset: int):
        self.tracker, self.offset = tracker, offset

    def log(self, values: dict[str, float], step: int | None = None) -> None:
        self.tracker.log(values, step=None if step is None else self.offset + step)

    def __getattr__(self, name: str):
        return getattr(self.tracker, name)


def run_cycle(cfg: Config, out_dir: Path, cycle: int, splits: dict[str, list[Record]], hard: list[Record],
              state: dict, tracker, info: RunInfo) -> CycleResult:
    """One cycle: its training set (data), the stages (vlmsweep.pipeline.stages.run_pass), then the next hard set."""
    d = cycle_dir(out_dir, cycle)
    d.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)  # same numbers whether the cycle runs straight through or after a resume
    train = training_set(splits["train"], hard, cfg.loop.oversample) if cycle > 0 else list(splits["train"])
    check_no_leak(train, held_out(splits), f"cycle {cycle}", cfg.data.near_duplicate_bits)
    data_mod.write_manifest(train, d / "train.jsonl")

    trained_before = None
    if cycle in state["trained"] and (d / "adapter" / "adapter_config.json").is_file() and (d / "train_metrics.json").is_file():
        log.info("loop: cycle %d was trained before the interruption; evaluating its adapter", cycle)
        trained_before = read_metrics(d / "train_metrics.json")
        adapter = str(d / "adapter")
    else:
        previous = cycle_dir(out_dir, cycle - 1) / "adapter"
        adapter = str(previous) if cycle > 0 and cfg.loop.continue_adapter else cfg.model.adapter

    def trained(metrics: dict[str, float]) -> None:  # a crash after this point does not train the cycle again
        write_json(d / "train_metrics.json", metrics)
        state["trained"] = sorted(set(state["trained"]) | {cycle})
        write_json(out_dir / STATE_FILE, state)

    result = stages.run_pass(cfg, Pass(
        out_dir=d,
        train=train,
        evals={"mining": (splits["mining"], d / "mining"), "regression": (splits["regression"], d / "regression"),
               "test": (splits["test"], d)},
        tracker=_CycleTracker(tracker, cycle * cfg.train.max_steps),
        adapter=adapter,
        trained_metrics=trained_before,
        estimate=cycle == 0,
        samples_table=f"cycle_{cycle}/samples",
        on_trained=trained,
        validation=splits.get("validation", []),  # train.eval_every: each cycle's points in cycle_N/metrics_history.jsonl
    ), info)
    free_memory()
    mining_metrics, mining_samples = result.sets["mining"]
    regression_metrics, _ = result.sets["regression"]

    hard_next = build_hard_set(mining_samples, splits["mining"], cycle, cfg.loop.mine_per_tag, cfg.loop.synth_per_tag,
                               cfg.data.seed, Path(cfg.cache_dir).expanduser() / "data", cfg.data.noise)
    check_no_leak(hard_next.records, held_out(splits), f"cycle {cycle}", cfg.data.near_duplicate_bits)
    data_mod.write_manifest(hard_next.records, d / "hard_set.jsonl")
    if not hard_next.records:
        if cycle == cfg.loop.cycles:  # the last cycle: there is no next one to announce
            log.warning("loop: cycle %d (the last) mined nothing from the mining pool (no data-fixable failure tag)", cycle)
        else:
            log.warning("loop: cycle %d mined nothing from the mining pool (no data-fixable failure tag); next cycle: %s",
                        cycle, "trains on the base set only" if cfg.loop.on_empty_mine == "train"
                        else "none (loop.on_empty_mine=stop)")
    summary = {
        "cycle": cycle,
        "train_size": len(train),
        "train_origins": origin_counts(train),
        "hard_set_trained": len(hard),  # unique hard-set records in this cycle's training set
        "adapter_from": (str(Path("..") / f"cycle_{cycle - 1}" / "adapter") if cycle > 0 and cfg.loop.continue_adapter
                         else (cfg.model.adapter or "base model")),
        "hard_set_next": hard_next.summary(),
        # whether this cycle's test answers depend on their page: whether its tags can be misreadings at all
        "chance_test": chance_summary(result.sets["test"][1]),
        # train.select: the step whose adapter this cycle kept, tested and handed on (None: the last step, no selection)
        "selected_step": int(result.metrics["train.selected_step"]) if "train.selected_step" in result.metrics else None,
        "steps": int(result.metrics.get("train.steps", 0)),
    }
    return CycleResult(cycle, result.metrics, numeric(regression_metrics), numeric(mining_metrics), summary)


def held_out(splits: dict[str, list[Record]]) -> dict[str, list[Record]]:
    """The sets no cycle trains on: test, regression, and the validation set that selects each cycle's step."""
    return {n: splits[n] for n in ("test", "regression", "validation") if splits.get(n)}


def run_loop(cfg: Config, out_dir: Path, tracker, info: RunInfo) -> dict[str, float]:
    """Cycle 0 trains on the configured mix; each of the loop.cycles cycles after it retrains on the base set
    plus the previous cycle's hard set (oversampled). Finished cycles of an interrupted loop are not redone.
    Its options were checked with the config (vlmsweep.config.check), so a bad one failed before cycle 0."""
    out_dir = Path(out_dir)
    state = load_state(out_dir, cfg)
    splits = fixed_splits(cfg, out_dir, info)
    history: list[CycleResult] = []
    stopped = None  # decided afresh on every start: a resume with loop.on_empty_mine=train goes on
    state["stopped"] = None
    for cycle in range(cfg.loop.cycles + 1):
        if is_finished(out_dir, state, cycle):
            log.info("loop: cycle %d finished before; reusing %s", cycle, cycle_dir(out_dir, cycle))
            history.append(load_cycle(out_dir, cycle))
            continue
        hard: list[Record] = []
        if cycle > 0:
            hard = read_records(cycle_dir(out_dir, cycle - 1) / "hard_set.jsonl")
            if not hard and cfg.loop.on_empty_mine == "stop":
                stopped = {"cycle": cycle, "reason": f"cycle {cycle - 1} mined nothing and loop.on_empty_mine=stop"}
                state["stopped"] = stopped
                write_json(out_dir / STATE_FILE, state)
                log.warning("loop: stopping before cycle %d: %s", cycle, stopped["reason"])
                break
        log.info("loop: cycle %d of %d (hard set: %d records, x%d)", cycle, cfg.loop.cycles, len(hard), cfg.loop.oversample)
        info.update(loop={"cycle": cycle, "cycles": cfg.loop.cycles, "finished": list(state["finished"])})
        result = run_cycle(cfg, out_dir, cycle, splits, hard, state, tracker, info)
        result.summary["regression_warnings"] = regression_drops([h.regression for h in history] + [result.regression],
                                                                 cfg.loop.regression_margin, headline_metrics(cfg))
        for w in result.summary["regression_warnings"]:
            log.warning("loop: %s", w)
        write_json(cycle_dir(out_dir, cycle) / "cycle.json", result.summary)
        state["finished"] = sorted(set(state["finished"]) | {cycle})
        write_json(out_dir / STATE_FILE, state)
        history.append(result)
        tracker.log(cycle_log(result), step=(cycle + 1) * cfg.train.max_steps)
    if not history:
        raise RuntimeError(f"{out_dir}: the loop finished no cycle")  # cannot happen: cycle 0 always runs

    # The band needs a change to read: only a loop that finished a cycle after cycle 0 trains the replicas.
    noise = run_noise_seeds(cfg, out_dir, splits, info) if len(history) > 1 else {}
    changes = targeted_changes(history, noise)
    plot = plot_tags(history, out_dir / "tags_over_cycles.png")
    if plot is not None:
        tracker.image("loop/tags_over_cycles", plot)
    report = render_loop_report(history, cfg, stopped, plot.name if plot else None, changes=changes)
    write_text(out_dir / "report.md", report)
    last = history[-1]
    metrics = dict(last.test)
    metrics |= {
        "loop.cycles_done": float(len(history)),
        "loop.last_cycle": float(last.cycle),
        "loop.hard_set_size": float(last.summary["hard_set_trained"]),
        "loop.train_size": float(last.summary["train_size"]),
        "loop.regression_warnings": float(sum(len(h.summary.get("regression_warnings", [])) for h in history)),
        "loop.stopped_early": float(stopped is not None),
        "loop.noise_seeds": float(len(noise)),
    }
    for c in changes:
        if c.cycle == last.cycle:
            metrics[f"loop.targeted.{c.tag}.change"] = c.change
            if c.band is not None:
                metrics[f"loop.targeted.{c.tag}.band"] = c.band
    share = misreading_share([h.summary["hard_set_next"] for h in history])
    if share is not None:
        metrics["loop.mined_misreading_share"] = share
    metrics |= {f"loop.regression.{k}": v for k, v in last.regression.items() if k in headline_metrics(cfg)}
    write_json(out_dir / "metrics.json", metrics)
    info.update(loop={"cycles": cfg.loop.cycles, "finished": list(state["finished"]), "stopped": stopped})
    print(f"vlmsweep loop: {len(history)} cycle(s) in {out_dir.resolve()} (report.md, cycle_N/)")
    return metrics


def cycle_log(result: CycleResult) -> dict[str, float]:
    """One tracker row per cycle: overall metrics of each set (no by_domain copies) and the hard set."""
    row: dict[str, float] = {"loop/cycle": float(result.cycle)}
    for name, metrics in (("test", result.test), ("regression", result.regression), ("mining", result.mining)):
        row |= {f"loop/{name}/{k}": v for k, v in metrics.items() if not k.startswith("by_domain.")}
    row["loop/hard_set_next"] = float(result.summary["hard_set_next"]["size"])
    row["loop/train_size"] = float(result.summary["train_size"])
    return row
