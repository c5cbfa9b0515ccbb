"""The seed-noise band: cycle 0 retrained under other seeds, and each targeted tag's change read against the band."""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from scipy import stats
from transformers import set_seed

from vlmsweep.config import Config
from vlmsweep.data import Record
from vlmsweep.evaluate.remedies import FOCUS_OF_TAG
from vlmsweep.loop.state import CycleResult, cycle_dir, read_metrics
from vlmsweep.metrics import numeric
from vlmsweep.pipeline import stages
from vlmsweep.pipeline.run_folder import RunInfo, free_memory
from vlmsweep.pipeline.stages import Pass
from vlmsweep.pipeline.tracking import Tracker

log = logging.getLogger(__name__)

NOISE_DIR = "noise"


def noise_seeds(cfg: Config) -> list[int]:
    """The training seeds of cycle 0's replicas: the run's seed + 1 .. + loop.noise_seeds (0 or more: config.check)."""
    return [cfg.seed + k for k in range(1, cfg.loop.noise_seeds + 1)]


def noise_dir(out_dir: Path, seed: int) -> Path:
    return cycle_dir(out_dir, 0) / NOISE_DIR / f"seed_{seed}"


def run_noise_seeds(cfg: Config, out_dir: Path, splits: dict[str, list[Record]], info: RunInfo) -> dict[int, dict[str, float]]:
    """Cycle 0 again under other training seeds (same training set, same starting adapter), scored on the
    regression set: what a cycle's tag counts do when nothing but the seed changes. Each seed keeps its folder
    (cycle_0/noise/seed_S/); a resumed loop reuses the finished ones. Returns seed -> regression metrics."""
    out: dict[int, dict[str, float]] = {}
    for seed in noise_seeds(cfg):
        d = noise_dir(out_dir, seed)
        finished = d / "regression" / "metrics.json"
        if finished.is_file():
            out[seed] = read_metrics(finished)
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


def targeted_changes(history: Sequence[CycleResult], noise: dict[int, dict[str, float]]) -> list[TargetedChange]:
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
