"""The stages of one train -> evaluate pass and the one function that orders them; a run and a loop cycle both call it.

Before any pass, a run's preamble (prepare_run: seed, splits, slices, leakage checks), once for a single run,
a per-domain run and the loop. Order (run_pass): data (the caller's records: a run's splits, a cycle's training
set, a group's share) -> load -> hints (ocr_hint: each page's OCR text) -> estimate -> prepare -> train ->
evaluate -> write. The data come first so a bad manifest fails before a model loads. Evaluation runs the pass's
evaluators in order (vlmsweep.evaluate.evaluators: its sets, then eval.slices and eval.perturb beside the main set)
with one predict function: the model's, or the OCR baseline's in its place. Every file a pass writes has one writer
here: metrics.json, samples.jsonl and report.md per evaluated set (write_evaluations, through write_stage), adapter/
(train_stage); run_info.json is RunInfo's.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from transformers import set_seed

from vlmsweep import data as data_mod
from vlmsweep import prompts
from vlmsweep.config import Config, pixel_budget
from vlmsweep.config.schema import HINT_PROMPT_TOKENS, hint_token_budget
from vlmsweep.data import Record
from vlmsweep.evaluate import evaluators as evaluators_mod
from vlmsweep.evaluate.evaluators import Evaluation, Evaluator, Predict
from vlmsweep.evaluate.slices import load_slices
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
from vlmsweep.train.validation import CURVE, HISTORY, plot_history, read_history

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- data


def datasets(cfg: Config) -> data_mod.Splits:
    """The splits this run reads (train / test, and mining / regression for a loop): the user's manifests
    or synthetic samples from the mix. Manifests are validated here, before any model is loaded."""
    names = data_mod.needed_splits(cfg.train.enabled, cfg.eval.enabled, cfg.loop.cycles > 0,
                                   validate=cfg.train.enabled and cfg.train.eval_every > 0)
    splits = data_mod.load_splits(cfg.data, cfg.data_mix, Path(cfg.cache_dir).expanduser() / "data", names)
    if cfg.train.enabled and not splits["train"]:
        raise ValueError("the training set is empty: set data.train_size > 0 or data.train_manifest")
    if cfg.eval.enabled and not splits["test"]:
        raise ValueError("the test set is empty: set data.test_size > 0 or data.test_manifest")
    if "validation" in names and not splits["validation"]:
        raise ValueError("the validation set is empty: set data.val_size > 0 or data.val_manifest")
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


def validation_section(cfg: Config, out_dir: Path, metrics: dict[str, float]) -> str:
    """report.md's section on evaluation during training: which adapter the test set scored (the selected step, or
    the last) and the validation curve, metric against step (out_dir/metrics_history.jsonl); empty without one."""
    points = read_history(out_dir / HISTORY) if cfg.train.eval_every > 0 else []
    if not points:
        return ""
    select = cfg.train.select
    shown = list(dict.fromkeys([select] if select else []) | dict.fromkeys(
        m for m in ("contract.strict_parse_rate", "contract.schema_valid_rate", "content.field_em",
                    "content.field_em_margin") if any(m in p for p in points)))
    if select and "train.selected_step" in metrics:
        step = int(metrics["train.selected_step"])
        head = (f"The test set was scored with the adapter of **step {step}**, the best `{select}` on the validation "
                f"set ({_value(metrics.get('train.selected_value'))}; train.select), not the last step "
                f"({int(metrics.get('train.steps', step))})." if step != int(metrics.get("train.steps", step)) else
                f"The test set was scored with the adapter of **step {step}**, the best `{select}` on the validation "
                "set (train.select), which is the last step.")
        if metrics.get("train.stopped_early"):
            head += f" Training stopped early (train.early_stop={cfg.train.early_stop})."
    else:
        step, head = -1, "The test set was scored with the adapter of the last step (no train.select)."
    rows = [f"| {'**' if p['step'] == step else ''}{p['step']}{'**' if p['step'] == step else ''} | "
            + " | ".join(_value(p.get(m)) for m in shown) + f" | {p['seconds']:.1f} |" for p in points]
    drawn = plot_history(points, shown, out_dir / CURVE, step if step >= 0 else None)
    return (f"## Validation during training\n\n{head} "
            f"Validation every {cfg.train.eval_every} steps (`{HISTORY}`):\n\n"
            + (f"![validation curve]({CURVE})\n\n" if drawn else "") +
            f"| step | {' | '.join(f'`{m}`' for m in shown)} | seconds |\n|---|{'---|' * len(shown)}---|\n"
            + "\n".join(rows) + "\n")


def _value(x: float | None) -> str:
    """A validation figure in report.md: 4 decimals, or `n/a` where no page had an answer object to score."""
    return "n/a" if x is None or x != x else f"{x:.4f}"


@dataclass
class RunData:
    splits: data_mod.Splits  # train / test (and mining / regression for a loop), with their sources
    slices: dict[str, list[Record]]  # eval.slices: name -> records


def prepare_run(cfg: Config, info: RunInfo) -> RunData:
    """The preamble of every run (one pass, per-domain, the loop), before any model loads: the seed, the splits
    (manifests validated), run_info.json's `data`, eval.slices, and that no page the run trains on is a page it holds
    out. A single or per-domain run checks its training set against the test set and each slice; a loop checks its
    mining pool against the test and regression sets (what is mined from it is trained on next) and each cycle's
    training set in the cycle. A validation set (train.eval_every) selects checkpoints: it shares no page with the
    test or regression set (selecting on the test set is not allowed), and no training page is one of its pages."""
    set_seed(cfg.seed)
    splits = datasets(cfg)  # a bad manifest fails here, before the model is loaded
    info.update(data=splits.sources)
    slices = load_slices(cfg) if cfg.eval.enabled else {}  # eval.slices: read and validated before the model loads
    near = cfg.data.near_duplicate_bits
    if cfg.loop.cycles > 0:
        for name in ("mining", "regression"):
            if not splits[name]:
                raise ValueError(f"loop.cycles={cfg.loop.cycles}: the loop needs a {name} set; set data.{name}_size > 0 "
                                 f"or data.{name}_manifest")
        held = {n: splits[n] for n in ("test", "regression", "validation") if splits[n]}
        data_mod.check_no_leak(splits["mining"], held, "the mining pool", near)
    elif cfg.train.enabled and cfg.eval.enabled:
        data_mod.check_no_leak(splits["train"], {"test": splits["test"]}, where="this run", near_duplicate_bits=near)
        if slices:  # a slice is held out like the test set: no training page may be one of its pages
            data_mod.check_no_leak(splits["train"], {f"slice {n}": r for n, r in slices.items()}, where="this run",
                                   near_duplicate_bits=near)
    if splits["validation"]:
        held = {n: splits[n] for n in ("test", "regression") if splits[n]}
        data_mod.check_no_leak(splits["validation"], held, "the validation set", near, role="validation")
        data_mod.check_no_leak(splits["train"], {"validation": splits["validation"]}, "this run", near)
    if cfg.ocr_hint.engine != "none":  # a missing engine (or Tesseract language) fails here, before a model loads
        from vlmsweep.ocr.hint import engine_version

        pages = [r for rs in splits.records.values() for r in rs] + [r for rs in slices.values() for r in rs]
        info.update(ocr_hint={"engine": engine_version(cfg.ocr_hint.engine, {r.image_domain or r.domain for r in pages}),
                              "resolution": cfg.ocr_hint.resolution})
    return RunData(splits, slices)


def one_process_only(cfg: Config) -> str | None:
    """Why this config cannot run under torchrun/accelerate launch (several processes), or None when it can."""
    if cfg.loop.cycles > 0:
        return (f"loop.cycles={cfg.loop.cycles} cannot run under torchrun/accelerate launch: the loop writes its "
                "manifests and state from one process. Run the loop in a single process, or use loop.cycles=0")
    if cfg.adapters.per_domain:
        return "adapters=per_domain cannot run under torchrun/accelerate launch yet: run it in one process"
    if cfg.train.eval_every > 0:
        return (f"train.eval_every={cfg.train.eval_every} cannot run under torchrun/accelerate launch yet: one process "
                "generates on the validation set while the others would wait at the next step; run it in one process")
    return None


# ----------------------------------------------------------------------------- the stages


def load_stage(cfg: Config, check_schemas: bool):
    """Base model and processor; with decoding=json_schema the schemas compile now, before any training."""
    base, processor, _ = model_load.load(cfg)
    if check_schemas and cfg.decoding.constrained:
        from vlmsweep.evaluate import check_schemas_compile

        check_schemas_compile(processor.tokenizer, base.config.text_config.vocab_size)
    return base, processor


@dataclass
class Hints:
    """What the hint stage adds to a pass: its metrics (ocr_hint.*, cost.ocr_seconds_per_image), report.md's section
    and run_info.json's record (the pages cut or left without a hint)."""

    metrics: dict[str, float] = field(default_factory=dict)
    section: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def hint_stage(cfg: Config, p: "Pass", tokenizer) -> tuple["Pass", Hints]:
    """ocr_hint: every record of the pass (training, validation, each evaluated set and slice) with its page's OCR
    text, which the collator and evaluation put after the instruction (vlmsweep.ocr.hint). ocr_hint=none: the pass
    as it is."""
    h = cfg.ocr_hint
    if h.engine == "none":
        if cfg.model.source == "tiny" and cfg.model.path == "tiny_reader":
            log.warning("model=tiny_reader reads the page's OCR text in the prompt and ocr_hint=none gives it none: its "
                        "answers cannot depend on the page (the control of an A/B; add ocr_hint=tesseract or rapidocr)")
        return p, Hints()
    from vlmsweep.ocr import hint as hint_mod

    every = p.train + p.validation + [r for rs, _ in p.evals.values() for r in rs] + [r for rs in p.slices.values() for r in rs]
    # the longest training answer (and <|im_end|>) must fit beside the hint as well as eval.max_new_tokens
    answers = [len(tokenizer(prompts.serialize(r.target))["input_ids"]) + 1 for r in p.train]
    budget = hint_token_budget(cfg, max(answers, default=0))
    if budget < 1:
        raise hint_mod.NoRoomForHint(
            f"ocr_hint={h.name} leaves no room for the hint: train.max_seq_len={cfg.train.max_seq_len} holds "
            f"{cfg.max_pixels.visual_tokens} visual tokens, the longest answer ({max([cfg.eval.max_new_tokens, *answers])} "
            f"tokens: the training set's or eval.max_new_tokens) and about {HINT_PROMPT_TOKENS} prompt tokens; raise "
            "train.max_seq_len or lower max_pixels")
    hinter = hint_mod.Hinter(h.engine, h.resolution, Path(cfg.cache_dir).expanduser(), budget,
                             lambda text: len(tokenizer(text)["input_ids"]), pixel_budget(cfg),
                             hint_mod.engine_version(h.engine, {r.image_domain or r.domain for r in every}))
    p = dataclasses.replace(p, train=hinter.attach(p.train), validation=hinter.attach(p.validation),
                            evals={n: (hinter.attach(rs), f) for n, (rs, f) in p.evals.items()},
                            slices={n: hinter.attach(rs) for n, rs in p.slices.items()})
    st = hinter.stats
    p = dataclasses.replace(p, hint_tokens=budget)
    log.info("ocr_hint=%s: %d page(s) with a hint (%d OCR'd now, %.2f s a page), %d cut to %d tokens, %d unreadable",
             h.name, st.pages, st.read, st.seconds / max(1, st.pages), len(st.cut), budget, len(st.failed))
    if st.unread_script:
        log.warning("ocr_hint=%s reads no Hangul: %d Korean page(s) get hints of their digits and Latin text only "
                    "(ocr_hint=tesseract reads Korean)", h.name, len(st.unread_script))
    info = {"ocr_hint_pages": {"budget_tokens": budget, "cut": st.cut, "unread_script": st.unread_script,
                               "failed": [{"id": i, "reason": why} for i, why in st.failed]}}
    return p, Hints(st.metrics(), hint_mod.section(st, h.name, h.resolution, budget), info)


def estimate_stage(cfg: Config, base, processor, records: list[Record]) -> dict[str, float]:
    """Estimated peak accelerator memory for this config, before training (logged, not enforced). A failed
    estimate is a warning that says why: it must never stop a run."""
    try:
        tok = processor.tokenizer
        sample = records[: min(16, len(records))]
        answers = [len(tok(prompts.serialize(r.target))["input_ids"]) + 1 for r in sample]
        asked = prompts.instruction(sample[0].domain, cfg.domain_tag.in_prompt)
        prompt = max(len(tok(prompts.with_hint(asked, r.hint))["input_ids"]) for r in sample) + 20  # ocr_hint: its text
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


def train_stage(cfg: Config, model, processor, records: list[Record], out_dir: Path, tracker, info: RunInfo,
                validation: list[Record] | None = None, hint_tokens: int | None = None):
    """Trains on `records` and writes out_dir/adapter/ (with the run's processor, budget, prompt and schema). With
    train.eval_every > 0, `validation` is scored during training (an EvalSet, predicted like the test set: the run's
    generation and decoding; vlmsweep.train.validation) and with train.select the adapter written is the selected one."""
    collator = make_collator(cfg, processor)
    lengths = check_lengths(records, collator, cfg.train.on_truncation)
    parts = trainable_by_part(model)
    log.info("trainable parameters by part: %s", parts)
    validate = None
    if validation and cfg.train.eval_every > 0:
        val_set = evaluators_mod.EvalSet("validation", validation, out_dir)  # writes nothing: its points are history
        validate = lambda: val_set.run(functools.partial(eval_stage, cfg, model, processor), {}).metrics  # noqa: E731
    with measure() as peak:
        trainer, metrics = train(model, collator, lengths.kept, cfg, out_dir, sink=tracker.log,
                                 memory_probe=lambda: peak.peak_bytes, validate=validate)
    metrics.update({f"train.trainable_params.{k}": float(v) for k, v in parts.items()})
    metrics["train.skipped_too_long"] = float(len(lengths.skipped))
    # CUDA: peak allocated; CPU: peak heap (anonymous RSS) growth during training (vlmsweep.train.peak.measure)
    metrics["cost.train_peak_memory_mb"] = peak.peak_bytes / 2**20
    info.update(skipped=[{"id": i, "reason": r} for i, r in lengths.skipped], chat_template=collator.template_check.as_dict())
    metrics["train.template_identity_checked"] = float(collator.template_check.checked)
    if trainer.is_world_process_zero():
        model_adapter.save_adapter(model, processor, cfg, out_dir / "adapter", *pixel_budget(cfg), hint_tokens=hint_tokens)
    return metrics


def eval_stage(cfg: Config, model, processor, records: list[Record]) -> tuple[dict[str, float], list[dict]]:
    """The model's predict function: generates and scores one set; writes nothing (write_stage does)."""
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
    """What one pass of the stages works on: a run, one loop cycle, or one per-domain group."""

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
    base: tuple[Any, Any] | None = None  # (base model, processor) the caller loaded already (schemas checked); None: load
    validation: list[Record] = field(default_factory=list)  # scored during training (train.eval_every); empty: none
    hint_tokens: int | None = None  # ocr_hint: the hints' token budget (the hint stage's), recorded in adapter/


@dataclass
class PassResult:
    metrics: dict[str, float]  # what the main set's metrics.json holds (training metrics included)
    sets: dict[str, tuple[dict[str, float], list[dict]]] = field(default_factory=dict)  # set name -> (metrics, samples)


def run_pass(cfg: Config, p: Pass, info: RunInfo) -> PassResult:
    """load -> hints -> estimate -> prepare -> train -> evaluate -> write, for the records the caller chose (data). The OCR
    baseline answers in the model's place: nothing to load or train, the same evaluators and files."""
    metrics: dict[str, float] = {}
    hints = Hints()
    predict: Predict
    if cfg.model.source == "ocr":
        from vlmsweep.ocr.baseline import evaluate_ocr

        predict = functools.partial(evaluate_ocr, cfg_eval=cfg.eval, seed=cfg.seed)
    else:
        base, processor = p.base or load_stage(cfg, check_schemas=bool(p.evals))
        p, hints = hint_stage(cfg, p, processor.tokenizer)
        metrics |= hints.metrics
        if hints.info:
            info.update(**hints.info)
        if p.estimate:
            metrics |= estimate_stage(cfg, base, processor, p.train or next(iter(p.evals.values()))[0])
        trains = bool(p.train) and p.trained_metrics is None
        model = prepare_model(cfg, base, p.adapter, trainable=trains)
        if trains:
            trained = numeric(train_stage(cfg, model, processor, p.train, p.out_dir, p.tracker, info, p.validation,
                                          hint_tokens=p.hint_tokens))
        else:
            trained = dict(p.trained_metrics or {})
        metrics |= trained
        if p.on_trained is not None and trains:
            p.on_trained(trained)
        if rank() != 0:
            # Data-parallel training is over; evaluation, metrics and reports belong to rank 0 alone.
            return PassResult({})
        predict = functools.partial(eval_stage, cfg, model, processor)
    evaluators = evaluators_mod.for_pass(cfg, p.evals, p.main_set, p.slices, p.out_dir)
    return write_evaluations(cfg, p, evaluate_stage(evaluators, predict), metrics, info, hints.section)


def evaluate_stage(evaluators: list[Evaluator], predict: Predict) -> dict[str, Evaluation]:
    """Each evaluator in order, each seeing the evaluations before it (name -> Evaluation); writes nothing."""
    done: dict[str, Evaluation] = {}
    for evaluator in evaluators:
        done[evaluator.name] = evaluator.run(predict, done)
    return done


def write_evaluations(cfg: Config, p: Pass, done: dict[str, Evaluation], metrics: dict[str, float],
                      info: RunInfo, hint_section: str = "") -> PassResult:
    """Each evaluation's folder written once (write_stage), the main set's last: its metrics.json also holds the
    pass's training, estimate and data metrics and what the other evaluators add (slice/<name>/<metric>), its
    report.md their sections (the slices table) and the data notes. run_info.json gets what they record (eval.perturb:
    the main set's injected change). Without a main set (training only), metrics.json holds the pass's metrics."""
    noted, data_section = data_notes(p.data_sources)
    metrics = noted | metrics
    curve = validation_section(cfg, p.out_dir, metrics)
    result = PassResult(numeric(metrics), {name: (e.metrics, e.samples) for name, e in done.items() if e.folder})
    added: dict[str, float] = {}
    sections: list[str] = []
    for e in done.values():
        added |= e.main_metrics
        sections += [e.main_section] if e.main_section else []
        for part in e.parts:
            write_stage(cfg, part.folder, part.metrics, part.samples)
        if e.folder is not None and e.name != p.main_set:
            write_stage(cfg, e.folder, e.metrics, e.samples)
    main = done.get(p.main_set)
    if main is None:
        write_json(p.out_dir / "metrics.json", result.metrics)
        return result
    appendix = "\n".join(sections + [x for x in (hint_section, curve, data_section) if x])
    result.metrics = write_stage(cfg, main.folder, main.metrics, main.samples, metrics | added, appendix=appendix)
    for e in done.values():
        if e.info:
            info.update(**e.info)
    if p.samples_table and cfg.tracker.log_samples:
        p.tracker.table(p.samples_table, main.samples)
    return result
