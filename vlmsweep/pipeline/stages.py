"""The stages of one train -> evaluate pass and the one function that orders them; a run and a loop cycle both call it.

Order (run_pass): data (the caller's records: a run's splits, a cycle's training set) -> load -> estimate ->
prepare -> train -> evaluate -> write. The data come first so a bad manifest fails before a model loads.
Every file a pass writes has one writer here: metrics.json, samples.jsonl and report.md per evaluated set
(write_stage), adapter/ (train_stage); run_info.json is RunInfo's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vlmsweep import data as data_mod
from vlmsweep import prompts
from vlmsweep.config import Config, pixel_budget
from vlmsweep.data import Record
from vlmsweep.files import write_json
from vlmsweep.metrics import numeric
from vlmsweep.model import adapter as model_adapter
from vlmsweep.model import load as model_load
from vlmsweep.model import memory
from vlmsweep.model.scope import trainable_by_part
from vlmsweep.pipeline.run_folder import RunInfo, rank
from vlmsweep.train.collator import make_collator
from vlmsweep.train.peak import measure
from vlmsweep.train.trainer import check_lengths, train

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- data


def datasets(cfg: Config) -> data_mod.Splits:
    """The splits this run reads (train / test, and mining / regression for a loop): the user's manifests
    or synthetic samples from the mix. Manifests are validated here, before any model is loaded."""
    names = data_mod.needed_splits(cfg.train.enabled, cfg.eval.enabled, cfg.loop.cycles > 0)
    splits = data_mod.load_splits(cfg.data, cfg.data_mix, Path(cfg.cache_dir).expanduser() / "data", names)
    if cfg.train.enabled and not splits["train"]:
        raise ValueError("the training set is empty: set data.train_size > 0 or data.train_manifest")
    if cfg.eval.enabled and not splits["test"]:
        raise ValueError("the test set is empty: set data.test_size > 0 or data.test_manifest")
    return splits


def data_notes(sources: dict[str, dict[str, Any]]) -> tuple[dict[str, float], str]:
    """What the run's manifests lost or changed (data.Splits.sources), for metrics.json (data.skipped_lines,
    data.nfc_normalized; present when a manifest was read) and report.md (a Data section; empty when nothing was)."""
    read = {split: s for split, s in sources.items() if s.get("manifest")}
    if not read:
        return {}, ""
    metrics = {"data.skipped_lines": float(sum(len(s["skipped"]) for s in read.values())),
               "data.nfc_normalized": float(sum(len(s.get("nfc_normalized", [])) for s in read.values()))}
    lines = []
    for split, s in read.items():
        if s["skipped"]:
            shown = "; ".join(f"line {n}: {reason}" for n, reason in s["skipped"][:5])
            lines.append(f"- {split}: {len(s['skipped'])} bad line(s) of `{s['manifest']}` skipped "
                         f"(data.skip_bad_lines=true): {shown}{' ...' if len(s['skipped']) > 5 else ''}")
        if s.get("nfc_normalized"):
            shown = ", ".join(map(str, s["nfc_normalized"][:10]))
            lines.append(f"- {split}: the target of {len(s['nfc_normalized'])} line(s) of `{s['manifest']}` was not in "
                         f"Unicode NFC (decomposed Hangul, say) and was normalised to NFC for training and scoring: "
                         f"line(s) {shown}{' ...' if len(s['nfc_normalized']) > 10 else ''}")
    return metrics, ("## Data\n\n" + "\n".join(lines) + "\n") if lines else ""


# ----------------------------------------------------------------------------- the stages


def load_stage(cfg: Config, check_schemas: bool):
    """Base model and processor; with decoding=json_schema the schemas compile now, before any training."""
    base, processor, _ = model_load.load(cfg)
    if check_schemas and cfg.decoding.constrained:
        from vlmsweep.evaluate import check_schemas_compile

        check_schemas_compile(processor.tokenizer, base.config.text_config.vocab_size)
    return base, processor


def estimate_stage(cfg: Config, base, processor, records: list[Record]) -> dict[str, float]:
    """Estimated peak accelerator memory for this config, before training (logged, not enforced). A failed
    estimate is a warning that says why: it must never stop a run."""
    try:
        tok = processor.tokenizer
        sample = records[: min(16, len(records))]
        answers = [len(tok(prompts.serialize(r.target))["input_ids"]) + 1 for r in sample]
        prompt = len(tok(prompts.instruction(sample[0].domain, cfg.domain_tag.in_prompt))["input_ids"]) + 20
        est = memory.estimate_from_config(
            cfg, base.config, text_tokens=prompt + max(answers), supervised_tokens=max(answers)
        )
        log.info("estimated peak accelerator memory:\n%s", est.table())
        return {f"memory.estimate.{k}": float(v) for k, v in est.as_dict().items() if isinstance(v, (int, float))}
    except Exception as err:  # noqa: BLE001 - an estimate must never stop a run
        log.warning("memory estimate failed (the run goes on without one): %s: %s", type(err).__name__, err)
        return {}


def prepare_model(cfg: Config, base, adapter: str | None, trainable: bool):
    """LoRA on the scope's modules, or an existing adapter (to continue training or to evaluate)."""
    if adapter:
        return model_adapter.load_adapter(base, adapter, trainable=trainable, cfg=cfg)
    if trainable:
        return model_load.attach_lora(base, cfg.scope, cfg.lora, cfg.seed)
    return base


def train_stage(cfg: Config, model, processor, records: list[Record], out_dir: Path, tracker, info: RunInfo):
    """Trains on `records` and writes out_dir/adapter/ (with the run's processor, budget, prompt and schema)."""
    collator = make_collator(cfg, processor)
    lengths = check_lengths(records, collator, cfg.train.on_truncation)
    parts = trainable_by_part(model)
    log.info("trainable parameters by part: %s", parts)
    with measure() as peak:
        trainer, metrics = train(model, collator, lengths.kept, cfg, out_dir, sink=tracker.log,
                                 memory_probe=lambda: peak.peak_bytes)
    metrics.update({f"train.trainable_params.{k}": float(v) for k, v in parts.items()})
    metrics["train.skipped_too_long"] = float(len(lengths.skipped))
    # CUDA: peak allocated; CPU: peak RSS growth during training (vlmsweep.train.peak.measure)
    metrics["cost.train_peak_memory_mb"] = peak.peak_bytes / 2**20
    info.update(skipped=[{"id": i, "reason": r} for i, r in lengths.skipped], chat_template=collator.template_check.as_dict())
    metrics["train.template_identity_checked"] = float(collator.template_check.checked)
    if trainer.is_world_process_zero():
        model_adapter.save_adapter(model, processor, cfg, out_dir / "adapter", *pixel_budget(cfg))
    return metrics


def eval_stage(cfg: Config, model, processor, records: list[Record]) -> tuple[dict[str, float], list[dict]]:
    """Generates and scores one set; writes nothing (write_stage does)."""
    from vlmsweep.evaluate import evaluate

    min_pixels, max_pixels = pixel_budget(cfg)
    model.eval()
    return evaluate(
        model,
        processor,
        records,
        cfg.eval,
        cfg.decoding,
        domain_tag=cfg.domain_tag.in_prompt,
        max_pixels=max_pixels,
        min_pixels=min_pixels,
        out_dir=None,
        seed=cfg.seed,
    )


def write_stage(cfg: Config, folder: Path, metrics: dict[str, float], samples: list[dict],
                pass_metrics: dict[str, float] | None = None, appendix: str = "") -> dict[str, float]:
    """folder/metrics.json (the pass's training, estimate and slice metrics beside the set's), samples.jsonl and
    report.md (ending with `appendix`), each written once. Returns what metrics.json holds."""
    from vlmsweep.evaluate.outputs import write_outputs

    everything = numeric({**(pass_metrics or {}), **metrics})
    write_outputs(folder, metrics, samples, worst_per_tag=int(cfg.eval.worst_per_tag), file_metrics=everything,
                  appendix=appendix)
    return everything


# ----------------------------------------------------------------------------- the one order


@dataclass
class Pass:
    """What one pass of the stages works on: a run, or one loop cycle."""

    out_dir: Path  # adapter/ goes here
    train: list[Record]  # the training set; empty: no training
    evals: dict[str, tuple[list[Record], Path]]  # set name -> (records, folder of its files), evaluated in order
    tracker: Any  # train-step logs and the sample tables go here
    main_set: str = "test"  # the set whose metrics.json carries the training and estimate metrics too
    adapter: str | None = None  # start from this adapter (continue training it, or evaluate it)
    trained_metrics: dict[str, float] | None = None  # the adapter was trained before (a resumed cycle): its metrics
    estimate: bool = True  # log the memory estimate (a loop does it once, at cycle 0)
    samples_table: str | None = "samples"  # tracker table of the main set's samples (cfg.tracker.log_samples)
    on_trained: Callable[[dict[str, float]], None] | None = None  # after training, before evaluation (loop state)
    slices: dict[str, list[Record]] = field(default_factory=dict)  # eval.slices: scored apart, beside the main set
    data_sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # data.Splits.sources: notes on manifests


@dataclass
class PassResult:
    metrics: dict[str, float]  # what the main set's metrics.json holds (training metrics included)
    sets: dict[str, tuple[dict[str, float], list[dict]]] = field(default_factory=dict)  # name -> (metrics, samples)


def run_pass(cfg: Config, p: Pass, info: RunInfo) -> PassResult:
    """load -> estimate -> prepare -> train -> evaluate -> write, for the records the caller chose (data)."""
    if cfg.model.source == "ocr":  # the OCR baseline: nothing to load or train; the same scoring and files
        from vlmsweep.ocr.baseline import evaluate_ocr

        return evaluate_and_write(cfg, p, lambda records: evaluate_ocr(records, cfg.eval, None, seed=cfg.seed), {}, info)
    base, processor = load_stage(cfg, check_schemas=bool(p.evals))
    metrics: dict[str, float] = {}
    if p.estimate:
        metrics |= estimate_stage(cfg, base, processor, p.train or next(iter(p.evals.values()))[0])
    trains = bool(p.train) and p.trained_metrics is None
    model = prepare_model(cfg, base, p.adapter, trainable=trains)
    if trains:
        trained = numeric(train_stage(cfg, model, processor, p.train, p.out_dir, p.tracker, info))
    else:
        trained = dict(p.trained_metrics or {})
    metrics |= trained
    if p.on_trained is not None and trains:
        p.on_trained(trained)
    if rank() != 0:
        # Data-parallel training is over; evaluation, metrics and reports belong to rank 0 alone.
        return PassResult({})
    return evaluate_and_write(cfg, p, lambda records: eval_stage(cfg, model, processor, records), metrics, info)


def evaluate_and_write(cfg: Config, p: Pass, evaluate_fn: Callable[[list[Record]], tuple[dict[str, float], list[dict]]],
                       metrics: dict[str, float], info: RunInfo) -> PassResult:
    """Every set of the pass, then its slices, scored by `evaluate_fn` (the model's generation or the OCR
    baseline); each folder's files are written once, the main set's last with the slices' metrics and table.
    With eval.perturb, run_info.json records the main set's injected change (perturbed minus clean scoring)."""
    from vlmsweep.evaluate.slices import evaluate_slices, slice_table

    noted, data_section = data_notes(p.data_sources)
    metrics = noted | metrics
    sets = {name: evaluate_fn(records) for name, (records, _) in p.evals.items()}
    slice_metrics: dict[str, float] = {}
    if p.slices and p.main_set in sets:
        slice_metrics = evaluate_slices(
            cfg, p.slices, lambda records, folder: write_stage(cfg, folder, *evaluate_fn(records)), sets[p.main_set][0],
            p.out_dir)
    result = PassResult(numeric(metrics), sets)
    for name, (_, folder) in p.evals.items():
        set_metrics, samples = sets[name]
        if name != p.main_set:
            write_stage(cfg, folder, set_metrics, samples)
            continue
        slice_section = slice_table(slice_metrics, list(p.slices)) if p.slices else ""
        appendix = "\n".join(x for x in (slice_section, data_section) if x)
        result.metrics = write_stage(cfg, folder, set_metrics, samples, metrics | slice_metrics, appendix=appendix)
        if cfg.eval.perturb.digit_flip > 0 or cfg.eval.perturb.blank > 0:
            from vlmsweep.evaluate.perturb import summary

            info.update(perturb=summary(samples, cfg.eval.perturb.digit_flip, cfg.eval.perturb.blank, cfg.seed))
        if p.samples_table and cfg.tracker.log_samples:
            p.tracker.table(p.samples_table, samples)
    if p.main_set not in p.evals:  # training only: metrics.json holds the training and estimate metrics
        write_json(p.out_dir / "metrics.json", result.metrics)
    return result
