"""The retrain loop's policy: each cycle trains and evaluates through vlmsweep.pipeline.stages, then mines failures,
synthesises targeted data and oversamples it into the next cycle's training set; its state makes it resumable.

Its report is vlmsweep.loop.report; which tag is fixed by data and which by a config change, vlmsweep.evaluate.remedies.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from scipy import stats
from transformers import set_seed

from vlmsweep import data as data_mod
from vlmsweep.pipeline import stages
from vlmsweep.config import Config, config_dict
from vlmsweep.data import Record
from vlmsweep.data.leakage import REPEAT_MARK, LeakageError, check_no_leak
from vlmsweep.evaluate.grounding import chance_summary
from vlmsweep.evaluate.metrics import TAGS
from vlmsweep.files import write_json, write_text
from vlmsweep.metrics import higher_is_better, numeric
from vlmsweep.evaluate.remedies import DOMAINS_OF_FOCUS, FOCUS_OF_TAG, PRESCRIPTION_DOMAINS, UNFIXABLE_TAGS, config_fixes, misreading_share
from vlmsweep.loop.report import plot_tags, render_loop_report
from vlmsweep.report.runs import HEADLINE_METRICS
from vlmsweep.pipeline.run_folder import ResumeMismatch, RunInfo, config_changes, free_memory, resume_config
from vlmsweep.pipeline.stages import Pass
from vlmsweep.pipeline.tracking import Tracker

log = logging.getLogger(__name__)

STATE_FILE = "loop_state.json"
STATE_VERSION = 1


# ----------------------------------------------------------------------------- mining and synthesis


def severity_key(sample: dict) -> tuple:
    """Worst first: lowest content.field_em (no answer object counts as 0), then highest text.raw_cer, then id."""
    scores = sample.get("scores") or {}
    em = scores.get("content.field_em")
    cer = scores.get("text.raw_cer")
    return (em if em is not None else 0.0, -(cer if cer is not None else 0.0), str(sample["id"]))


def tag_counts(samples: Sequence[dict]) -> dict[str, int]:
    return {tag: sum(tag in s.get("tags", ()) for s in samples) for tag in TAGS}


def mine_failures(samples: Sequence[dict], pool: Sequence[Record], per_tag: int, cycle: int) -> dict[str, list[Record]]:
    """Top `per_tag` mining-pool records per data-fixable tag, worst first (severity_key).

    A record carrying several tags is mined once, under the first of its tags (TAGS order) that picks
    it; its origin becomes mined:<cycle>:<tag>. Tags data cannot fix (UNFIXABLE_TAGS) mine nothing:
    they are reported with the config change that addresses them.
    """
    by_id = {r.id: r for r in pool}
    unknown = sorted({str(s["id"]) for s in samples} - set(by_id))
    if unknown:
        raise ValueError(f"mine_failures: sample id(s) {unknown[:5]} are not in the mining pool; "
                         "mine only the mining pool's own samples")
    taken: set[str] = set()
    out: dict[str, list[Record]] = {}
    for tag in FOCUS_OF_TAG:
        ranked = sorted((s for s in samples if tag in s.get("tags", ())), key=severity_key)
        picked = []
        for s in ranked:
            if len(picked) >= per_tag:
                break
            if s["id"] in taken:
                continue
            taken.add(s["id"])
            picked.append(dataclasses.replace(by_id[s["id"]], origin=f"mined:{cycle}:{tag}"))
        if picked:
            out[tag] = picked
    return out


def synth_seed(data_seed: int, cycle: int, tag: str) -> int:
    """Names the generator stream of one (cycle, tag): distinct per cycle and tag, readable in the ids."""
    return data_seed * 100_000 + cycle * 100 + TAGS.index(tag)


def synth_domains(tag: str, asked: Sequence[str]) -> tuple[str, ...]:
    """Generator domains for a tag's synthetic samples: the asked domains where it failed, if the focus can draw them."""
    allowed = DOMAINS_OF_FOCUS[FOCUS_OF_TAG[tag]]
    picked = tuple(d for d in allowed if d in set(asked))
    return picked or PRESCRIPTION_DOMAINS


def synthesize(failing: dict[str, Sequence[str]], per_tag: int, cycle: int, data_seed: int, cache_dir: Path,
               noise: str, parents: dict[str, Sequence[str]] | None = None) -> dict[str, list[Record]]:
    """`per_tag` targeted samples for each data-fixable tag in `failing` (tag -> asked domains of its
    failures), rendered through data.generate_targeted; origin synth:<cycle>:<tag>, and as parents the ids
    of the records mined for that tag (`parents`: tag -> ids), so each one traces back to the failures it targets."""
    parents = parents or {}
    out: dict[str, list[Record]] = {}
    if per_tag <= 0:
        return out
    for tag, asked in failing.items():
        if tag not in FOCUS_OF_TAG:
            raise ValueError(f"synthesize: tag {tag!r} is not data-fixable; fixable tags: {list(FOCUS_OF_TAG)}")
        records = data_mod.generate_targeted(FOCUS_OF_TAG[tag], per_tag, synth_seed(data_seed, cycle, tag), cache_dir,
                                             noise=noise, domains=synth_domains(tag, asked))
        out[tag] = [dataclasses.replace(r, origin=f"synth:{cycle}:{tag}", parents=tuple(parents.get(tag, ())))
                    for r in records]
    return out


@dataclass
class HardSet:
    records: list[Record]  # mined, then synthesised; unique ids
    counts: dict[str, int]  # tag -> samples of the mining pool carrying it
    mined: dict[str, int]  # tag -> mined records
    synthesised: dict[str, int]  # tag -> synthetic records
    unfixable: dict[str, int] = field(default_factory=dict)  # tag -> count, for tags data cannot fix

    def summary(self) -> dict[str, Any]:
        return {"size": len(self.records), "counts": self.counts, "mined": self.mined,
                "synthesised": self.synthesised, "unfixable": self.unfixable}


def build_hard_set(samples: Sequence[dict], pool: Sequence[Record], cycle: int, mine_per_tag: int, synth_per_tag: int,
                   data_seed: int, cache_dir: Path, noise: str) -> HardSet:
    """The next cycle's hard set from one cycle's mining-pool evaluation: mined failures plus targeted synthesis."""
    counts = tag_counts(samples)
    mined = mine_failures(samples, pool, mine_per_tag, cycle)
    failing = {tag: sorted({s["domain"] for s in samples if tag in s.get("tags", ())})
               for tag in FOCUS_OF_TAG if counts[tag] > 0}
    # A synthetic record's parents: the mined records whose samples carry its tag (mined under that tag or an earlier one).
    mined_ids = {r.id for records in mined.values() for r in records}
    parents = {tag: [str(s["id"]) for s in samples if tag in s.get("tags", ()) and s["id"] in mined_ids] for tag in failing}
    synth = synthesize(failing, synth_per_tag, cycle, data_seed, cache_dir, noise, parents=parents)
    records = [r for tag in FOCUS_OF_TAG for r in mined.get(tag, [])] + [r for tag in FOCUS_OF_TAG for r in synth.get(tag, [])]
    return HardSet(
        records=records,
        counts=counts,
        mined={t: len(v) for t, v in mined.items()},
        synthesised={t: len(v) for t, v in synth.items()},
        unfixable={t: counts[t] for t in UNFIXABLE_TAGS if counts[t] > 0},
    )


# ----------------------------------------------------------------------------- training sets and the guard


def training_set(base: Sequence[Record], hard: Sequence[Record], oversample: int) -> list[Record]:
    """The base training records plus `oversample` copies of the hard set (copies 2.. get an id suffix)."""
    if oversample < 1:
        raise ValueError(f"loop.oversample={oversample}: expected 1 or more copies of the hard set")
    out = list(base)
    for k in range(oversample):
        out += [r if k == 0 else dataclasses.replace(r, id=f"{r.id}{REPEAT_MARK}{k}") for r in hard]
    return out


def origin_counts(records: Sequence[Record]) -> dict[str, int]:
    """base / mined / synth counts (the lineage kind before the first ':')."""
    c = Counter(r.origin.split(":", 1)[0] for r in records)
    return dict(sorted(c.items()))


# ----------------------------------------------------------------------------- regression guard


def headline_metrics(cfg: Config) -> list[str]:
    """What the regression guard watches: the sweep objective, the comparison report's headline metrics, coverage."""
    return list(dict.fromkeys([cfg.sweep.objective, *HEADLINE_METRICS, "content.coverage"]))


def regression_drops(history: Sequence[dict[str, float]], margin: float, names: Sequence[str]) -> list[str]:
    """Warnings for the last cycle's regression metrics that dropped by more than `margin` (absolute, in the
    metric's own direction) against the previous cycle or against cycle 0. Metrics absent on either side
    (content metrics without any answer object) are not compared: content.coverage stands for them."""
    if len(history) < 2:
        return []
    cycle, now = len(history) - 1, history[-1]
    refs = [(cycle - 1, history[-2])] + ([(0, history[0])] if cycle - 1 != 0 else [])
    out = []
    for name in names:
        if name not in now:
            continue
        sign = 1.0 if higher_is_better(name) else -1.0
        for ref_cycle, ref in refs:
            if name not in ref:
                continue
            drop = sign * (ref[name] - now[name])
            if drop > margin + 1e-12:
                out.append(f"cycle {cycle}: regression {name} {now[name]:.3f} vs {ref[name]:.3f} at cycle {ref_cycle} "
                           f"(worse by {drop:.3f} > loop.regression_margin={margin})")
    return out


# ----------------------------------------------------------------------------- state and files


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


def _cycle_dir(out_dir: Path, cycle: int) -> Path:
    return out_dir / f"cycle_{cycle}"


def is_finished(out_dir: Path, state: dict, cycle: int) -> bool:
    d = _cycle_dir(out_dir, cycle)
    return (cycle in state["finished"] and (d / "metrics.json").is_file()
            and (d / "adapter" / "adapter_config.json").is_file() and (d / "cycle.json").is_file())


def read_records(path: Path) -> list[Record]:
    """A manifest written by write_manifest; an empty file is an empty list (an empty hard set)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the loop folder is incomplete (start it over in a new hydra.run.dir)")
    if not path.read_text(encoding="utf-8").strip():
        return []
    return list(data_mod.read_manifest(path))


def _read_metrics(path: Path) -> dict[str, float]:
    return json.loads(path.read_text(encoding="utf-8"))


def load_cycle(out_dir: Path, cycle: int) -> CycleResult:
    d = _cycle_dir(out_dir, cycle)
    return CycleResult(cycle, _read_metrics(d / "metrics.json"), _read_metrics(d / "regression" / "metrics.json"),
                       _read_metrics(d / "mining" / "metrics.json"), json.loads((d / "cycle.json").read_text(encoding="utf-8")))


def fixed_splits(cfg: Config, out_dir: Path, info: RunInfo) -> dict[str, list[Record]]:
    """train / test / mining / regression, fixed at cycle 0 in out_dir/splits/ and read back on resume.

    Each comes from the user's manifest (data.<split>_manifest) or the synthetic mix. The mining pool is
    checked against the held-out sets here too: whatever is mined from it is trained on next."""
    folder = out_dir / "splits"
    names = ("train", "test", "mining", "regression")
    if all((folder / f"{n}.jsonl").is_file() for n in names):
        return {n: read_records(folder / f"{n}.jsonl") for n in names}
    splits = stages.prepare_run(cfg, info).splits  # seed, splits, run_info's data, the mining pool's leakage check
    for n in names:
        data_mod.write_manifest(splits[n], folder / f"{n}.jsonl")
    return {n: splits[n] for n in names}


class _CycleTracker:
    """The tracker for one cycle: training steps continue after the previous cycles' (W&B wants them increasing);
    everything else (tables, summaries, images) goes to the run's tracker as it is."""

    def __init__(self, tracker, offset: int):
        self.tracker, self.offset = tracker, offset

    def log(self, values: dict[str, float], step: int | None = None) -> None:
        self.tracker.log(values, step=None if step is None else self.offset + step)

    def __getattr__(self, name: str):
        return getattr(self.tracker, name)


# ----------------------------------------------------------------------------- one cycle


def run_cycle(cfg: Config, out_dir: Path, cycle: int, splits: dict[str, list[Record]], hard: list[Record],
              state: dict, tracker, info: RunInfo) -> CycleResult:
    """One cycle: its training set (data), the stages (vlmsweep.pipeline.stages.run_pass), then the next hard set."""
    d = _cycle_dir(out_dir, cycle)
    d.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)  # same numbers whether the cycle runs straight through or after a resume
    train = training_set(splits["train"], hard, cfg.loop.oversample) if cycle > 0 else list(splits["train"])
    check_no_leak(train, {"test": splits["test"], "regression": splits["regression"]}, f"cycle {cycle}",
                  cfg.data.near_duplicate_bits)
    data_mod.write_manifest(train, d / "train.jsonl")

    trained_before = None
    if cycle in state["trained"] and (d / "adapter" / "adapter_config.json").is_file() and (d / "train_metrics.json").is_file():
        log.info("loop: cycle %d was trained before the interruption; evaluating its adapter", cycle)
        trained_before = _read_metrics(d / "train_metrics.json")
        adapter = str(d / "adapter")
    else:
        previous = _cycle_dir(out_dir, cycle - 1) / "adapter"
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
    ), info)
    free_memory()
    mining_metrics, mining_samples = result.sets["mining"]
    regression_metrics, _ = result.sets["regression"]

    hard_next = build_hard_set(mining_samples, splits["mining"], cycle, cfg.loop.mine_per_tag, cfg.loop.synth_per_tag,
                               cfg.data.seed, Path(cfg.cache_dir).expanduser() / "data", cfg.data.noise)
    check_no_leak(hard_next.records, {"test": splits["test"], "regression": splits["regression"]}, f"cycle {cycle}",
                  cfg.data.near_duplicate_bits)
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
    }
    return CycleResult(cycle, result.metrics, numeric(regression_metrics), numeric(mining_metrics), summary)


# ----------------------------------------------------------------------------- the seed-noise band

NOISE_DIR = "noise"


def noise_seeds(cfg: Config) -> list[int]:
    """The training seeds of cycle 0's replicas: the run's seed + 1 .. + loop.noise_seeds."""
    if cfg.loop.noise_seeds < 0:
        raise ValueError(f"loop.noise_seeds={cfg.loop.noise_seeds}: expected 0 (no seed-noise band) or more seeds")
    return [cfg.seed + k for k in range(1, cfg.loop.noise_seeds + 1)]


def noise_dir(out_dir: Path, seed: int) -> Path:
    return _cycle_dir(out_dir, 0) / NOISE_DIR / f"seed_{seed}"


def run_noise_seeds(cfg: Config, out_dir: Path, splits: dict[str, list[Record]], info: RunInfo) -> dict[int, dict[str, float]]:
    """Cycle 0 again under other training seeds (same training set, same starting adapter), scored on the
    regression set: what a cycle's tag counts do when nothing but the seed changes. Each seed keeps its folder
    (cycle_0/noise/seed_S/); a resumed loop reuses the finished ones. Returns seed -> regression metrics."""
    out: dict[int, dict[str, float]] = {}
    for seed in noise_seeds(cfg):
        d = noise_dir(out_dir, seed)
        finished = d / "regression" / "metrics.json"
        if finished.is_file():
            out[seed] = _read_metrics(finished)
            continue
        log.info("loop: cycle 0 again with seed %d, for the seed-noise band (loop.noise_seeds=%d)", seed, cfg.loop.noise_seeds)
        set_seed(seed)
        result = stages.run_pass(dataclasses.replace(cfg, seed=seed), Pass(
            out_dir=d,
            train=list(splits["train"]),
            evals={"regression": (splits["regression"], d / "regression")},
            tracker=Tracker(),  # the replicas' steps would interleave with the cycles' in the run's dashboard
            main_set="regression",
            adapter=cfg.model.adapter,
            estimate=False,
            samples_table=None,
        ), info)
        free_memory()
        out[seed] = numeric(result.sets["regression"][0])
    return out


def seed_band(values: Sequence[float], level: float = 0.95) -> float | None:
    """Half-width of the change that two runs differing only in their training seed show at `level`: a prediction
    interval for the difference of two new runs, t(n-1) x s x sqrt(2) over the n seeds' values (s: their standard
    deviation). None below two seeds, and where the seeds agreed exactly (s = 0 measures no noise, it does not prove
    there is none)."""
    if len(values) < 2:
        return None
    s = statistics.stdev(values)
    if s == 0:
        return None
    return float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * s * math.sqrt(2))


@dataclass(frozen=True)
class TargetedChange:
    cycle: int  # the cycle whose training set held the hard set that targeted the tag
    tag: str
    before: float  # regression-set count at cycle - 1
    after: float  # at cycle
    seeds: tuple[float, ...]  # cycle 0's count under each training seed (the run's seed first)
    band: float | None

    @property
    def change(self) -> float:
        return self.after - self.before

    @property
    def verdict(self) -> str:
        if self.band is None:
            n = len(self.seeds)
            return ("no verdict (one seed: set loop.noise_seeds)" if n < 2
                    else f"no verdict (the {n} seeds agreed exactly: the band is unmeasured; raise loop.noise_seeds)")
        if abs(self.change) <= self.band:
            return "within seed noise"
        return "reduced beyond seed noise" if self.change < 0 else "increased beyond seed noise"


def targeted_changes(history: Sequence["CycleResult"], noise: dict[int, dict[str, float]]) -> list[TargetedChange]:
    """For each cycle after the first, each failure tag its hard set targeted (mined or synthesised for it by the
    cycle before): the change of its regression-set count against the cycle before, with cycle 0's seed band."""
    out = []
    for prev, cur in zip(history, history[1:]):
        hard = prev.summary["hard_set_next"]
        for tag in FOCUS_OF_TAG:
            if not (hard["mined"].get(tag) or hard["synthesised"].get(tag)):
                continue
            name = f"tags.{tag}"
            seeds = (history[0].regression.get(name, 0.0), *(m.get(name, 0.0) for _, m in sorted(noise.items())))
            out.append(TargetedChange(cur.cycle, tag, prev.regression.get(name, 0.0), cur.regression.get(name, 0.0),
                                      seeds, seed_band(seeds)))
    return out


# ----------------------------------------------------------------------------- the loop


def run_loop(cfg: Config, out_dir: Path, tracker, info: RunInfo) -> dict[str, float]:
    """Cycle 0 trains on the configured mix; each of the loop.cycles cycles after it retrains on the base set
    plus the previous cycle's hard set (oversampled). Finished cycles of an interrupted loop are not redone."""
    if not cfg.train.enabled or not cfg.eval.enabled:
        raise ValueError("loop.cycles > 0 needs train.enabled=true and eval.enabled=true (each cycle trains and evaluates)")
    if cfg.loop.mine_per_tag < 0 or cfg.loop.synth_per_tag < 0:
        raise ValueError("loop.mine_per_tag and loop.synth_per_tag must be 0 or more")
    training_set([], [], cfg.loop.oversample)  # a bad loop.oversample fails now, not after cycle 0
    noise_seeds(cfg)  # and a bad loop.noise_seeds
    out_dir = Path(out_dir)
    state = load_state(out_dir, cfg)
    splits = fixed_splits(cfg, out_dir, info)
    history: list[CycleResult] = []
    stopped = None  # decided afresh on every start: a resume with loop.on_empty_mine=train goes on
    state["stopped"] = None
    for cycle in range(cfg.loop.cycles + 1):
        if is_finished(out_dir, state, cycle):
            log.info("loop: cycle %d finished before; reusing %s", cycle, _cycle_dir(out_dir, cycle))
            history.append(load_cycle(out_dir, cycle))
            continue
        hard: list[Record] = []
        if cycle > 0:
            hard = read_records(_cycle_dir(out_dir, cycle - 1) / "hard_set.jsonl")
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
        write_json(_cycle_dir(out_dir, cycle) / "cycle.json", result.summary)
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


__all__ = [
    "FOCUS_OF_TAG", "UNFIXABLE_TAGS", "CycleResult", "HardSet", "LeakageError", "build_hard_set", "check_no_leak",
    "config_fixes", "mine_failures", "regression_drops", "run_loop", "synthesize", "training_set",
]
