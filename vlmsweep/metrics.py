"""The one registry of metric names: every name a run writes to metrics.json, which way is better, which names are
wall-clock measurements, how a scoped name (by_domain.<d>.<m>, slice/<s>/<m>, ...) maps to the metric it measures,
and which sample is "worst". A sweep's direction, every report's arrow and verdict, scoring's metric table, the
loop's mining and evaluation's worst examples all read it; nothing else defines a direction.

Imports nothing of vlmsweep (and no torch): scoring, the run and the reports sit above it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace
from typing import Any, Literal

Direction = Literal["higher", "lower", "none"]  # "none": a count or a setting, not an outcome: no better side


class NoDirection(KeyError):
    """A registered name with no better side (a count such as train.steps): no arrow, no objective, no verdict."""


@dataclass(frozen=True)
class MetricInfo:
    name: str
    direction: Direction
    description: str
    wall_clock: bool = False  # one batch-average wall time per run: machine load moves it, so no interval or verdict

    @property
    def higher_is_better(self) -> bool:
        if self.direction == "none":
            raise NoDirection(f"metric {self.name!r} is a count, not an outcome: it has no better direction")
        return self.direction == "higher"


def _m(name: str, direction: Direction, description: str, wall_clock: bool = False) -> tuple[str, MetricInfo]:
    return name, MetricInfo(name, direction, description, wall_clock)


# What evaluation scores per sample and averages over a set (vlmsweep.evaluate.metrics.aggregate), in the order every
# table shows them. `tags.*` stands for one count per failure tag (vlmsweep.evaluate.tags.TAGS, expanded there).
EVALUATION: dict[str, MetricInfo] = dict([
    _m("contract.strict_parse_rate", "higher", "whole trimmed output is one JSON object"),
    _m("contract.key_set_rate", "higher", "strict object whose key sets (nested, list items) equal the schema's"),
    _m("contract.schema_valid_rate", "higher", "strict object valid against the domain's JSON Schema (jsonschema)"),
    _m("contract.salvage_rate", "higher", "first balanced {...} in the text parses to an object (debugging)"),
    _m("content.coverage", "higher", "share of samples with an answer object, on which content metrics are scored"),
    _m("content.field_em", "higher", "exact match per field slot after normalisation (ids: no casefold, same type)"),
    _m("content.e2e_field_em", "higher", "field exact match over every sample, 0 without an answer object "
       "(contract x content)"),
    _m("content.anls", "higher", "ANLS as the official DocVQA code (similarity >= tau=0.5 kept), over fields with a "
       "non-null target"),
    _m("content.cer", "lower", "jiwer CER of normalised values over fields with a non-null target"),
    _m("content.wer", "lower", "jiwer WER of normalised values over fields with a non-null target"),
    _m("content.raw_cer", "lower", "CER of the values as they are (no normalisation, no strip), same fields"),
    _m("content.field_f1", "higher", "F1 of non-null field values (aligned lists)"),
    _m("content.ted_acc", "higher", "Donut tree-edit-distance accuracy"),
    _m("content.digit_acc", "higher", "digit-level accuracy of ids, dates, strengths, doses, amounts"),
    _m("content.unit_acc", "higher", "unit accuracy of strengths and doses"),
    _m("content.field_em_margin", "higher", "field EM against the page's own target minus its mean against other "
       "pages' targets of the same domain (vlmsweep/evaluate/grounding.py): 0 when the answer does not depend on "
       "the page"),
    _m("content.digit_acc_margin", "higher", "digit accuracy against the page's own target minus its mean against "
       "other pages' targets of the same domain"),
    _m("text.raw_cer", "lower", "jiwer CER of the whole output (stripped, nothing else) against the canonical "
       "target text"),
    _m("rate.run_on", "lower", "share of samples tagged run_on"),
    _m("rate.repetition_loop", "lower", "share of samples tagged repetition_loop"),
    _m("rate.instruction_echo", "lower", "share of samples tagged instruction_echo"),
    _m("rate.leakage", "lower", "share of prescription samples tagged domain_leakage"),
    _m("tags.*", "lower", "number of samples tagged {}"),
    _m("cost.eval_seconds_per_sample", "lower", "generation wall time per sample (batch time / batch size)",
       wall_clock=True),
    _m("cost.visual_tokens_per_image", "lower", "visual tokens per image after the 2x2 merge"),
    _m("cost.output_tokens_per_sample", "lower", "generated tokens per sample up to the stop"),
])

# What a run writes beside the evaluation's own: training (train/trainer.py, pipeline/stages.py), the memory estimate,
# the manifests' notes, per-domain routing and the loop. A `*` is one name per part, field or tag.
RUN: dict[str, MetricInfo] = dict([
    _m("train.loss", "lower", "mean training loss over every step"),
    _m("train.steps", "none", "optimizer steps done"),
    _m("train.resumed_at_step", "none", "the checkpoint step training resumed from (0: from the start)"),
    _m("train.seconds", "lower", "wall time of this call's training steps", wall_clock=True),
    _m("train.samples_per_second", "higher", "training samples per second", wall_clock=True),
    _m("train.supervised_fraction", "none", "share of the batches' tokens the loss is taken on"),
    _m("train.trainable_params.*", "none", "trainable parameters of one part (llm, vision, merger)"),
    _m("train.skipped_too_long", "lower", "training samples left out: longer than train.max_seq_len"),
    _m("train.template_identity_checked", "none", "1 when the chat template was checked against the processor's"),
    _m("cost.train_seconds_per_sample", "lower", "training wall time per sample", wall_clock=True),
    _m("cost.train_peak_memory_mb", "lower", "peak accelerator memory in training (CPU: peak heap growth, anonymous RSS)"),
    _m("memory.estimate.*", "lower", "estimated peak accelerator memory of the config: one component (bytes, params)"),
    _m("data.skipped_lines", "lower", "manifest lines skipped as bad (data.skip_bad_lines=true)"),
    _m("data.nfc_normalized", "none", "manifest targets normalised to Unicode NFC"),
    _m("routing.accuracy", "higher", "adapters=per_domain: share of test pages the router sends to their own group"),
    _m("routing.samples", "none", "pages the router judged (a count, not an outcome)"),
    _m("cost.routing_seconds_per_sample", "lower", "routing wall time per test page", wall_clock=True),
    _m("slice.samples", "none", "pages of an evaluation slice (written as slice/<name>/samples)"),
    _m("train.eval_points", "none", "validation evaluations made during training (train.eval_every)"),
    _m("train.selected_step", "none", "train.select: the step of the kept adapter (its best validation point)"),
    _m("train.selected_value", "none", "train.select: the selected metric on the validation set at that step (its "
       "direction is that metric's)"),
    _m("train.stopped_early", "none", "1 when train.early_stop ended training before train.max_steps"),
    _m("cost.eval_during_train_seconds", "lower", "wall time of the validation evaluations during training (not in "
       "train.seconds)", wall_clock=True),
    _m("ocr_hint.pages", "none", "ocr_hint: pages whose prompt held their OCR text"),
    _m("ocr_hint.failed_pages", "lower", "ocr_hint: pages the engine could not read (prompted without a hint)"),
    _m("ocr_hint.cut_pages", "lower", "ocr_hint: hints cut at a line boundary to their token budget"),
    _m("cost.ocr_seconds_per_image", "lower", "ocr_hint: the engine's seconds per page (a cached page: what its OCR "
       "took)", wall_clock=True),
    _m("loop.cycles_done", "none", "cycles the loop finished"),
    _m("loop.last_cycle", "none", "the last finished cycle"),
    _m("loop.hard_set_size", "none", "hard-set records the last cycle trained on"),
    _m("loop.train_size", "none", "the last cycle's training set size"),
    _m("loop.regression_warnings", "lower", "regression-guard warnings over every cycle"),
    _m("loop.stopped_early", "none", "1 when the loop stopped before loop.cycles"),
    _m("loop.noise_seeds", "none", "extra training seeds of cycle 0 (the seed-noise band)"),
    _m("loop.targeted.*.change", "lower", "the last cycle's change of a targeted tag's regression-set count"),
    _m("loop.targeted.*.band", "none", "the seed-noise band of that change (95%)"),
    _m("loop.mined_misreading_share", "none", "share of mined records tagged as misreadings"),
])

# The families of evaluation metrics a validation point during training records (metrics_history.jsonl, the tracker's
# val/ curves), and so the metrics train.select may name: the contract, the content (chance margins included), the
# whole-text CER and the failure rates; not per-domain, tag counts or costs.
VALIDATION_PREFIXES = ("contract.", "content.", "text.", "rate.")

# Scoped names: a prefix before the metric it measures (tried in this order, and again on what is left, so
# slice/<s>/by_domain.<d>.<m> is <m>). `slice/<s>/samples` is slice.samples.
SCOPES = ("slice/<name>/", "by_domain.<domain>.", "by_group.<group>.", "loop.regression.")

# The per-sample score that ranks samples worst first, for the loop's mining and evaluation's worst examples per tag:
# the lowest field EM (no answer object counts as 0), ties broken by the highest raw-text CER, then by id.
WORST_SCORE, WORST_TIE = "content.field_em", "text.raw_cer"


def worst_first(sample: dict) -> tuple:
    """Sort key of a scored sample (its "scores"), worst first: WORST_SCORE ascending, WORST_TIE descending, id."""
    scores = sample.get("scores") or {}
    score, tie = scores.get(WORST_SCORE), scores.get(WORST_TIE)
    return (score if score is not None else 0.0, -(tie if tie is not None else 0.0), str(sample["id"]))


def base_metric(name: str) -> str:
    """The metric a scoped name measures: slice/<s>/<m>, by_domain.<d>.<m>, by_group.<g>.<m>, loop.regression.<m>
    -> <m>, nested scopes too; slice/<s>/samples -> slice.samples. Any other name is its own base."""
    while True:
        if name.startswith("slice/") and name.count("/") >= 2:
            name = name.split("/", 2)[2]
            if name == "samples":
                return "slice.samples"
        elif name.startswith(("by_domain.", "by_group.")) and name.count(".") >= 2:
            name = name.split(".", 2)[2]
        elif name.startswith("loop.regression.") and name.count(".") >= 2:
            name = name.removeprefix("loop.regression.")
        else:
            return name


_EXACT = {n: i for n, i in (EVALUATION | RUN).items() if "*" not in n}
_PATTERNS = {n: i for n, i in (EVALUATION | RUN).items() if "*" in n}


def known_names() -> list[str]:
    """Every registered name; `*` marks a family (tags.*: one per failure tag)."""
    return [*EVALUATION, *RUN]


def metric(name: str) -> MetricInfo:
    """The registry's entry for a metrics.json name, scoped names included (by_domain.<d>.<m> answers <m>'s entry,
    the very object); a family member gets its family's entry under its own name. KeyError naming it if unknown."""
    base = base_metric(name)
    if base in _EXACT:
        return _EXACT[base]
    for pattern, info in _PATTERNS.items():
        if fnmatch.fnmatchcase(base, pattern):
            part = base.split(".")[pattern.split(".").index("*")]
            return replace(info, name=base, description=info.description.replace("{}", part))
    raise KeyError(f"unknown metric {name!r}: not in the registry (vlmsweep/metrics.py): expected one of "
                   f"{known_names()}, or one scoped as {', '.join(s + '<metric>' for s in SCOPES)}")


def is_known(name: str) -> bool:
    try:
        metric(name)
    except KeyError:
        return False
    return True


def is_wall_clock(name: str) -> bool:
    """A wall-clock average measured once per run (scoped names take their metric's): no interval, no verdict."""
    return metric(name).wall_clock


def higher_is_better(name: str) -> bool:
    """Direction of a metric (scoped names take their metric's); KeyError if unknown, NoDirection (a KeyError) for
    a count with no better side."""
    return metric(name).higher_is_better


def arrow(name: str) -> str:
    """What a table's `better` column shows: ↑, ↓, or nothing for a count; KeyError if unknown."""
    return {"higher": "↑", "lower": "↓", "none": ""}[metric(name).direction]


def direction_of(name: str) -> str:
    """'maximize' or 'minimize', for hydra.sweeper.direction; a clear error for a name that is no objective."""
    try:
        return "maximize" if higher_is_better(name) else "minimize"
    except NoDirection as err:
        raise NoDirection(f"{err.args[0]}: sweep.objective must be a metric with a better side") from None
    except KeyError as err:
        raise KeyError(f"{err.args[0]} (sweep.objective)") from None


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics dict as floats (booleans and strings are not metrics)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
