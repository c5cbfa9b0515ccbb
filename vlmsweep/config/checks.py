"""The checks no type can express: numbers in range, closed choices (declared once, on the schema's fields), and
options that contradict each other; `to_config` runs them on every composed config, before any model loads."""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vlmsweep.config.schema import HINT_PROMPT_TOKENS, AdaptersConfig, Config, choices_of, hint_token_budget, schema


def to_config(cfg: DictConfig | dict[str, Any], choices: dict[str, str] | None = None) -> Config:
    """DictConfig -> frozen dataclasses, with the cross-field checks no type can express.

    `choices` are Hydra's group -> option picks (the labels of plots, tags and reports).
    """
    merged = OmegaConf.merge(schema(), cfg)
    config: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    if choices is not None:
        config = dataclasses.replace(config, choices=dict(choices))
    check(config)
    return config


def choice_errors(node: Any, prefix: str = "") -> list[str]:
    """A value that is none of its field's choices (the `choices` of vlmsweep.config.schema.knob), named with the valid
    ones; nested sections are walked."""
    out = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            out += choice_errors(value, f"{prefix}{f.name}.")
        elif f.metadata.get("choices") and value not in f.metadata["choices"]:
            out.append(f"{prefix}{f.name}={value!r}: expected one of {', '.join(f.metadata['choices'])}")
    return out


def adapters_errors(c: Config) -> list[str]:
    a = c.adapters
    if a.routing not in choices_of(AdaptersConfig, "routing"):
        return []  # choice_errors names it
    if not a.per_domain:
        return [] if a.routing == "known" and not a.groups else [
            f"adapters={a.name}: adapters.routing and adapters.groups apply to adapters=per_domain only"]
    out = []
    if c.loop.cycles > 0:
        out.append("adapters=per_domain with loop.cycles>0: the retrain loop trains one adapter; use loop.cycles=0")
    if c.eval.slices or c.eval.slice_manifests:
        out.append("adapters=per_domain does not evaluate eval.slices yet; leave eval.slices empty")
    if c.model.source == "ocr":
        out.append(f"adapters=per_domain with model={c.model.name}: the OCR baseline has no adapters")
    if c.train.enabled and c.model.adapter:
        out.append("adapters=per_domain trains its adapters from the base: drop model.adapter, or evaluate a "
                   "per-domain run's adapters/ folder with train.enabled=false model.adapter=RUN_DIR/adapters")
    if not c.train.enabled and not c.model.adapter and c.eval.enabled:
        out.append("adapters=per_domain with train.enabled=false needs model.adapter=RUN_DIR/adapters "
                   "(a per-domain run's adapters folder)")
    from vlmsweep.prompts import SCHEMA_OF_DOMAIN

    seen: dict[str, str] = {}
    for group, domains in a.groups.items():
        if not domains:
            out.append(f"adapters.groups.{group} is empty: give it domains or remove the group")
        for d in domains:
            if d not in SCHEMA_OF_DOMAIN:
                out.append(f"adapters.groups.{group}: unknown domain {d!r}; expected one of {sorted(SCHEMA_OF_DOMAIN)}")
            elif d in seen:
                out.append(f"adapters.groups: domain {d} is in both {seen[d]} and {group}; a domain needs one adapter")
            seen.setdefault(d, group)
    if len(a.groups) < 2:
        out.append(f"adapters.groups has {len(a.groups)} group(s): per_domain needs at least two (else use adapters=single)")
    return out


# (option, value, lowest allowed, what it is): numbers whose wrong sign or zero would fail deep inside a run, or
# worse, run and mean nothing (a zero learning rate trains nothing; a negative one trains away from the data).
def _ranges(c: Config) -> list[tuple[str, float, float, bool, str]]:
    """(option, value, bound, strict, meaning): each value must be > bound (strict) or >= bound."""
    return [
        ("train.max_steps", c.train.max_steps, 1, False, "optimizer steps"),
        ("train.batch_size", c.train.batch_size, 1, False, "samples per device and step"),
        ("train.grad_accum", c.train.grad_accum, 1, False, "micro-batches per optimizer step"),
        ("train.lr", c.train.lr, 0, True, "a positive learning rate"),
        ("train.weight_decay", c.train.weight_decay, 0, False, "a weight decay of 0 or more"),
        ("train.max_seq_len", c.train.max_seq_len, 1, False, "tokens per sample"),
        ("train.save_steps", c.train.save_steps, 0, False, "steps between checkpoints (0: only at the end)"),
        ("train.logging_steps", c.train.logging_steps, 1, False, "steps between log lines"),
        ("train.num_workers", c.train.num_workers, 0, False, "DataLoader worker processes"),
        ("eval.batch_size", c.eval.batch_size, 1, False, "samples per generation batch"),
        ("eval.max_new_tokens", c.eval.max_new_tokens, 1, False, "tokens an answer may take"),
        ("eval.worst_per_tag", c.eval.worst_per_tag, 0, False, "examples per failure tag"),
        ("eval.slice_size", c.eval.slice_size, 1, False, "pages of a rendered slice"),
        ("data.train_size", c.data.train_size, 0, False, "samples"),
        ("data.test_size", c.data.test_size, 0, False, "samples"),
        ("data.mining_size", c.data.mining_size, 0, False, "samples"),
        ("data.regression_size", c.data.regression_size, 0, False, "samples"),
        ("data.val_size", c.data.val_size, 0, False, "samples"),
        ("train.eval_every", c.train.eval_every, 0, False, "steps between validation evaluations (0: off)"),
        ("train.early_stop", c.train.early_stop, 0, False, "evaluations without improvement (0: never stop)"),
        ("lora.r", c.lora.r, 1, False, "the adapters' rank"),
        ("lora.alpha", c.lora.alpha, 0, True, "a positive scaling numerator"),
        ("scope.vision_last_n", c.scope.vision_last_n, 0, False, "vision blocks (0: all)"),
        ("max_pixels.min_visual_tokens", c.max_pixels.min_visual_tokens, 1, False, "visual tokens"),
        ("loop.cycles", c.loop.cycles, 0, False, "retrain cycles"),
        ("loop.mine_per_tag", c.loop.mine_per_tag, 0, False, "records per tag"),
        ("loop.synth_per_tag", c.loop.synth_per_tag, 0, False, "records per tag"),
        ("loop.oversample", c.loop.oversample, 1, False, "copies of the hard set"),
        ("loop.noise_seeds", c.loop.noise_seeds, 0, False, "extra seeds of cycle 0"),
        ("loop.regression_margin", c.loop.regression_margin, 0, False, "a margin of 0 or more"),
    ]


def range_errors(c: Config) -> list[str]:
    """Numbers out of range, and options that would be silently ignored, each with what to give instead."""
    out = []
    for option, value, bound, strict, meaning in _ranges(c):
        if value < bound or (strict and value == bound):
            out.append(f"{option}={value}: expected {meaning} ({'>' if strict else '>='} {bound})")
    for option, value in (("train.warmup_ratio", c.train.warmup_ratio), ("lora.dropout", c.lora.dropout)):
        if not 0.0 <= value < 1.0:
            out.append(f"{option}={value}: expected a value in [0, 1)")
    from transformers import SchedulerType  # run start loads transformers anyway

    if c.train.lr_scheduler not in {s.value for s in SchedulerType}:
        out.append(f"train.lr_scheduler={c.train.lr_scheduler!r}: expected one of transformers' schedulers: "
                   f"{', '.join(s.value for s in SchedulerType)}")
    if c.scope.vision_last_n > 0 and "vision" not in c.scope.parts:
        out.append(f"scope.vision_last_n={c.scope.vision_last_n} applies to the vision part, which scope.parts="
                   f"{list(c.scope.parts)} does not train: add vision to scope.parts (or use scope=vision_last_n)")
    return out


def validation_errors(c: Config) -> list[str]:
    """Evaluation during training (train.eval_every, train.select, train.early_stop) and its validation split."""
    t, out = c.train, []
    if t.select is not None:
        from vlmsweep.metrics import VALIDATION_PREFIXES, NoDirection, higher_is_better

        try:
            higher_is_better(t.select)
            if not t.select.startswith(VALIDATION_PREFIXES):
                raise KeyError(f"{t.select!r} is not scored on the validation set")
        except NoDirection:
            out.append(f"train.select={t.select}: a count has no better side; choose a metric such as "
                       "content.field_em or contract.schema_valid_rate")
        except KeyError:
            out.append(f"train.select={t.select}: expected a validation metric with a direction, one of "
                       f"{', '.join(p + '*' for p in VALIDATION_PREFIXES)} (e.g. content.field_em, text.raw_cer)")
        if t.eval_every == 0:
            out.append(f"train.select={t.select} needs evaluations to select from: set train.eval_every=N")
    if t.early_stop > 0 and t.select is None:
        out.append(f"train.early_stop={t.early_stop} stops on the selected metric: set train.select=<metric>")
    if t.eval_every > 0:
        if not t.enabled or c.model.source == "ocr":
            out.append(f"train.eval_every={t.eval_every} evaluates during training: this run trains nothing")
        if c.data.val_size == 0 and not c.data.val_manifest:
            out.append(f"train.eval_every={t.eval_every} needs a validation set: data.val_size > 0 or "
                       "data.val_manifest (never the test set)")
        if c.adapters.per_domain:
            out.append("train.eval_every with adapters=per_domain is not supported yet: use adapters=single")
    return out


def ocr_hint_errors(c: Config) -> list[str]:
    """ocr_hint: an engine's text in the prompt of a model that answers from a prompt."""
    h, out = c.ocr_hint, []
    if h.max_tokens < 1:
        out.append(f"ocr_hint.max_tokens={h.max_tokens}: expected a positive number of hint tokens")
    if h.engine != "none" and c.model.source == "ocr":
        out.append(f"ocr_hint={h.name} with model={c.model.name}: the OCR baseline reads the page itself and has no "
                   "prompt; use ocr_hint=none")
    if h.engine != "none" and h.max_tokens >= 1 and hint_token_budget(c) < 1:
        out.append(f"ocr_hint={h.name} leaves no room for the hint: train.max_seq_len={c.train.max_seq_len} holds "
                   f"{c.max_pixels.visual_tokens} visual tokens (max_pixels={c.max_pixels.name}), an answer of "
                   f"eval.max_new_tokens={c.eval.max_new_tokens} and about {HINT_PROMPT_TOKENS} prompt tokens; raise "
                   "train.max_seq_len or lower max_pixels")
    if h.engine == "none" and h.resolution != "page":
        out.append(f"ocr_hint.resolution={h.resolution} with ocr_hint={h.name}: there is no hint to resize for; "
                   "choose an engine (ocr_hint=tesseract or ocr_hint=rapidocr)")
    return out


def check(c: Config) -> None:
    errors = choice_errors(c) + range_errors(c)
    if c.model.source == "ocr":  # the OCR baseline (vlmsweep/ocr/) only evaluates
        if c.model.path != "tesseract":
            errors.append(f"model.path={c.model.path!r}: the OCR baseline's engine is tesseract")
        if c.train.enabled or c.model.adapter or c.loop.cycles > 0:
            errors.append(f"model={c.model.name} is the OCR baseline: it has nothing to train or adapt; "
                          "use train.enabled=false, no model.adapter and loop.cycles=0")
    if c.model.source == "pretrained" and not c.model.path:
        errors.append(
            "model.path is not set: give a local checkpoint folder or a hub id, "
            "e.g. model.path=/models/Qwen2-VL-2B-Instruct (download it once with "
            "`huggingface-cli download Qwen/Qwen2-VL-2B-Instruct --local-dir DIR`)"
        )
    unknown = set(c.scope.parts) - {"llm", "merger", "vision"}
    if unknown or not c.scope.parts:
        errors.append(f"scope.parts={list(c.scope.parts)}: choose from llm, merger, vision (at least one)")
    if c.max_pixels.visual_tokens < c.max_pixels.min_visual_tokens:
        errors.append("max_pixels.visual_tokens is below max_pixels.min_visual_tokens")
    if c.data_mix.receipt_ratio is not None and not 0.0 <= c.data_mix.receipt_ratio <= 1.0:
        errors.append(f"data_mix.receipt_ratio={c.data_mix.receipt_ratio}: expected a value in [0, 1]")
    if not 0.0 <= c.data_mix.hard_negatives < 1.0:
        errors.append(f"data_mix.hard_negatives={c.data_mix.hard_negatives}: expected a value in [0, 1)")
    for name, share in (("digit_flip", c.eval.perturb.digit_flip), ("blank", c.eval.perturb.blank)):
        if not 0.0 <= share <= 1.0:
            errors.append(f"eval.perturb.{name}={share}: expected a share in [0, 1]")
        elif share > 0 and (c.loop.cycles > 0 or c.adapters.per_domain):
            errors.append(f"eval.perturb.{name} is a positive control for single runs (loop.cycles=0, adapters=single): "
                          "perturbed answers would feed the loop's mining or the per-domain evaluation")
    if c.train.loss_chunk < 1:
        errors.append(f"train.loss_chunk={c.train.loss_chunk}: expected a positive number of tokens (rows of logits)")
    if c.loop.cycles > 0 and not (c.train.enabled and c.eval.enabled):
        errors.append("loop.cycles > 0 needs train.enabled=true and eval.enabled=true (each cycle trains and evaluates)")
    if c.loop.cycles > 0 and (c.eval.slices or c.eval.slice_manifests):  # not silently ignored
        errors.append("eval.slices / eval.slice_manifests: the retrain loop does not evaluate slices yet; "
                      "use them with loop.cycles=0")
    errors += adapters_errors(c)
    errors += validation_errors(c)
    errors += ocr_hint_errors(c)
    if c.sweep.objective.startswith("slice/"):  # slice/<name>/<metric>: the slice must be one this run evaluates
        name = c.sweep.objective.split("/")[1]
        if name not in c.eval.slices and name not in c.eval.slice_manifests:
            errors.append(f"sweep.objective={c.sweep.objective}: slice {name!r} is not evaluated; add it to eval.slices "
                          f"(or +eval.slice_manifests.{name}=PATH)")
    if errors:
        raise ValueError("invalid configuration:\n  " + "\n  ".join(errors))
