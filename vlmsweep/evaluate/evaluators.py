"""Evaluators: every evaluation a pass makes is one, with one interface, run in the order of one list.

    evaluator.run(predict, before) -> Evaluation

`predict(records) -> (metrics, samples)` is the system under evaluation: the model's generation and scoring
(vlmsweep.evaluate.evaluate) or the OCR baseline's (vlmsweep.ocr.baseline.evaluate_ocr). An evaluator chooses what
it answers and what the answers mean; `before` holds the evaluations made earlier in the list, by name, so a control
reads the set it controls. An evaluator writes nothing: its Evaluation names the folder of its files, and the pass's
write stage (vlmsweep.pipeline.stages.write_evaluations) writes each folder once.

- EvalSet: one set (a run's test set, a loop's mining and regression sets, a per-domain group's routed pages).
- Slices: eval.slices, each evaluated apart into slices/<name>/, their metrics slice/<name>/<metric> in the main
  set's metrics.json and the slices side by side in its report.
- PerturbControl: eval.perturb, the positive control: run_info.json's `perturb` records the change injected into the
  main set's scores (the perturbation itself is scoring's: vlmsweep/evaluate/perturb.py).
- Validation during training (train.eval_every): an EvalSet over the validation split, built by
  vlmsweep.pipeline.stages.train_stage and run by a trainer callback (vlmsweep.train.validation) every so many steps
  with the model of the moment as `predict`; the same interface, outside the pass's final list: its points are
  metrics_history.jsonl and the tracker's val/ curves, not a folder of files.

Adding an evaluation is a class here and one line in `for_pass`, not a branch in the pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from vlmsweep.evaluate.perturb import summary
from vlmsweep.evaluate.slices import PREFIX, slice_metric, slice_table

log = logging.getLogger(__name__)

Predict = Callable[[Sequence[Any]], tuple[dict[str, float], list[dict]]]  # records -> (metrics, samples)


@dataclass
class Evaluation:
    """What one evaluator found, and where it goes."""

    name: str
    metrics: dict[str, float] = field(default_factory=dict)  # the set's own scores (its folder's metrics.json)
    samples: list[dict] = field(default_factory=list)
    folder: Path | None = None  # its metrics.json, samples.jsonl and report.md; None: no files of its own
    parts: list[Evaluation] = field(default_factory=list)  # sets evaluated within this one, each in its own folder
    main_metrics: dict[str, float] = field(default_factory=dict)  # added to the main set's metrics.json
    main_section: str = ""  # a section of the main set's report.md
    info: dict[str, Any] = field(default_factory=dict)  # run_info.json entries


class Evaluator(Protocol):
    name: str

    def run(self, predict: Predict, before: dict[str, Evaluation]) -> Evaluation: ...


@dataclass
class EvalSet:
    """One set of records, answered by `predict`; its files go to `folder`."""

    name: str
    records: Sequence[Any]
    folder: Path

    def run(self, predict: Predict, before: dict[str, Evaluation]) -> Evaluation:
        metrics, samples = predict(self.records)
        return Evaluation(self.name, metrics, samples, self.folder)


@dataclass
class Slices:
    """eval.slices beside the main set: each slice evaluated apart into <out_dir>/slices/<name>/. The `synthetic` slice
    of a run whose test set is the synthetic split (`reuse_synthetic`) is that test set: scored once. The slices were
    checked against the training set before any model loaded (vlmsweep.pipeline.stages.prepare_run)."""

    slices: dict[str, list]
    out_dir: Path
    main_set: str = "test"
    reuse_synthetic: bool = True  # no data.test_manifest: the test set is the synthetic slice
    name: str = "slices"

    def run(self, predict: Predict, before: dict[str, Evaluation]) -> Evaluation:
        out = Evaluation(self.name)
        for name, records in self.slices.items():
            if name == "synthetic" and self.reuse_synthetic:
                metrics = before[self.main_set].metrics
            else:
                log.info("evaluating slice %s (%d samples)", name, len(records))
                part = EvalSet(name, records, Path(self.out_dir) / "slices" / name).run(predict, before)
                out.parts.append(part)
                metrics = part.metrics
            out.main_metrics |= {slice_metric(name, k): v for k, v in metrics.items() if not k.startswith(PREFIX)}
            out.main_metrics[slice_metric(name, "samples")] = float(len(records))
        out.main_section = slice_table(out.main_metrics, list(self.slices))
        return out


@dataclass
class PerturbControl:
    """eval.perturb: run_info.json's `perturb`, the main set's perturbed minus clean scoring (vlmsweep.evaluate.perturb)."""

    digit_flip: float
    blank: float
    seed: int
    main_set: str = "test"
    name: str = "perturb"

    def run(self, predict: Predict, before: dict[str, Evaluation]) -> Evaluation:
        return Evaluation(self.name, info={
            "perturb": summary(before[self.main_set].samples, self.digit_flip, self.blank, self.seed)})


def for_pass(cfg, sets: dict[str, tuple[Sequence[Any], Path]], main_set: str, slices: dict[str, list],
             out_dir: Path) -> list[Evaluator]:
    """A pass's evaluators, in order: its sets (name -> (records, folder)), then what the config adds beside the
    main set (eval.slices, eval.perturb)."""
    out: list[Evaluator] = [EvalSet(name, records, Path(folder)) for name, (records, folder) in sets.items()]
    if main_set not in sets:
        return out
    if slices:
        out.append(Slices(slices, out_dir, main_set, reuse_synthetic=not cfg.data.test_manifest))
    if cfg.eval.perturb.digit_flip > 0 or cfg.eval.perturb.blank > 0:
        out.append(PerturbControl(cfg.eval.perturb.digit_flip, cfg.eval.perturb.blank, cfg.seed, main_set))
    # Validation during training is an EvalSet too, run by the trainer (stages.train_stage): see the module's docstring.
    return out
