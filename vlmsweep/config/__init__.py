"""Typed configuration: one frozen dataclass per config group, registered with Hydra's ConfigStore.

Only the entry point sees a DictConfig; `to_config` turns it into `Config` at once and everything
below takes these dataclasses. Registering `Config` as the schema of `conf/config.yaml` makes a
typo or a wrong type fail when the config is composed, not in the middle of a run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

# The Hydra config folder: conf/ at the top of a checkout;
# installed from a wheel, the same tree inside the package (pyproject.toml maps conf/ to vlmsweep/conf).
_PACKAGE = Path(__file__).resolve().parent.parent  # vlmsweep/
CONF_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf" / "config.yaml").is_file() else _PACKAGE.parent / "conf"

# One visual token covers a 28x28 pixel area: Qwen2-VL cuts 14x14 patches and merges 2x2 of them.
PIXELS_PER_VISUAL_TOKEN = 28 * 28

# train.loss_impl: how the output layer and cross-entropy are computed (vlmsweep/train/loss.py)
LOSS_IMPLS = ("eager", "chunked", "liger", "cce")


def visual_tokens_to_pixels(tokens: int) -> int:
    """The one place where a visual-token budget becomes the image processor's pixel budget."""
    return int(tokens) * PIXELS_PER_VISUAL_TOKEN


def pixel_budget(cfg: "Config") -> tuple[int, int]:
    """(min_pixels, max_pixels) of the image processor for a run's max_pixels option."""
    return visual_tokens_to_pixels(cfg.max_pixels.min_visual_tokens), visual_tokens_to_pixels(cfg.max_pixels.visual_tokens)


@dataclass(frozen=True)
class ModelConfig:
    name: str = MISSING  # option label: tiny, qwen2_vl_2b, ...
    source: str = "tiny"  # tiny: built locally | pretrained: path or hub id | shape: real config, random weights | ocr: OCR + rules
    path: Optional[str] = None  # local folder or hub id (pretrained); architecture name (shape); engine (ocr: tesseract)
    family: str = "qwen2_vl"  # qwen2_vl | qwen2_5_vl: decides the module-name patterns
    attn_implementation: str = "sdpa"
    prequantized: bool = False  # checkpoint already holds bitsandbytes 4-bit weights
    adapter: Optional[str] = None  # a trained LoRA adapter folder to load (evaluation without training)


@dataclass(frozen=True)
class QuantConfig:
    name: str = MISSING  # nf4 | bf16 | fp16 | fp32
    dtype: str = "float32"  # dtype of the non-quantized weights and of LoRA compute
    load_in_4bit: bool = False  # bitsandbytes 4-bit (QLoRA)
    quant_type: str = "nf4"
    double_quant: bool = True
    quantize_vision: bool = False  # ablation: put the vision tower in 4-bit too
    fp32_upcast: bool = True  # 4-bit only: peft's prepare_model_for_kbit_training casts every non-4-bit weight to fp32
    cpu_bf16: str = "float32"  # on the CPU (no CUDA): float32 (compute in fp32, logged) | keep (bf16: native or emulated)


@dataclass(frozen=True)
class ScopeConfig:
    name: str = MISSING  # llm | projector | llm_projector | vision_last_n | all
    parts: list[str] = field(default_factory=list)  # any of: llm, merger, vision
    vision_last_n: int = 0  # with part "vision": only the last N vision blocks (0 = all blocks)


@dataclass(frozen=True)
class LoraConfig:
    r: int = 16  # rank
    alpha: int = 32  # scaling numerator (scale = alpha / r)
    dropout: float = 0.05
    modules_to_save: list[str] = field(default_factory=list)  # extra fully-trained modules


@dataclass(frozen=True)
class MaxPixelsConfig:
    name: str = MISSING
    visual_tokens: int = 256  # max visual tokens per image after the 2x2 merge
    min_visual_tokens: int = 4  # min visual tokens per image


@dataclass(frozen=True)
class DataMixConfig:
    name: str = MISSING  # medical_only | rx_receipt_1_1_1 | medical_heavy
    weights: dict[str, float] = field(default_factory=dict)  # relative sampling weight per domain
    receipt_ratio: Optional[float] = None  # when set: share of receipts; the rest split by weights
    hard_negatives: float = 0.0  # share of samples that ask a receipt image as a prescription


@dataclass(frozen=True)
class DomainTagConfig:
    name: str = MISSING  # none | prompt
    in_prompt: bool = False  # put [PRESCRIPTION] / [RECEIPT] in every prompt


@dataclass(frozen=True)
class LossConfig:
    name: str = MISSING  # assistant_only | full
    assistant_only: bool = True  # supervise only the assistant answer and its <|im_end|>


@dataclass(frozen=True)
class DecodingConfig:
    name: str = MISSING  # free | json_schema
    constrained: bool = False  # grammar-constrained against the domain's JSON schema (xgrammar)


@dataclass(frozen=True)
class AdaptersConfig:
    name: str = MISSING  # single | per_domain
    per_domain: bool = False  # one adapter per domain group (vlmsweep/pipeline/per_domain.py)
    routing: str = "known"  # per_domain: known (the sample's domain) | model (the base model classifies the page)
    groups: dict[str, list[str]] = field(default_factory=dict)  # group name -> its domains (per_domain)


@dataclass(frozen=True)
class TrackerConfig:
    name: str = MISSING  # wandb | none
    backend: str = "none"
    mode: str = "offline"  # offline | online | disabled (W&B)
    project: str = "vlmsweep"
    entity: Optional[str] = None
    group: Optional[str] = None  # defaults to the sweep folder's name in a multirun
    log_samples: bool = True  # per-sample table


@dataclass(frozen=True)
class DataConfig:
    seed: int = 0  # seed of the synthetic data; split streams are derived from it
    train_size: int = 64  # training samples drawn from the mix
    test_size: int = 64  # held-out samples, never trained on or mined
    mining_size: int = 8  # mining pool for the retrain loop
    regression_size: int = 8  # fixed at cycle 0, never trained on
    train_manifest: Optional[str] = None  # JSONL manifest of your own data; replaces the synthetic train set
    test_manifest: Optional[str] = None  # ... replaces the synthetic test set
    mining_manifest: Optional[str] = None  # ... replaces the loop's synthetic mining pool
    regression_manifest: Optional[str] = None  # ... replaces the loop's synthetic regression set (fixed at cycle 0)
    add_synthetic: bool = False  # with a manifest: also draw <split>_size synthetic samples from data_mix
    skip_bad_lines: bool = False  # count and report bad manifest lines (and unusable images) instead of failing
    near_duplicate_bits: int = 8  # leakage guard: images this close (perceptual hash, of 256 bits) are one document; -1: off
    noise: str = "scan"  # none | light | scan: scan-noise level of synthetic images


@dataclass(frozen=True)
class TrainConfig:
    enabled: bool = True
    max_steps: int = 30  # optimizer steps
    batch_size: int = 4  # per device
    grad_accum: int = 1
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    lr_scheduler: str = "constant"
    grad_checkpointing: bool = False
    loss_impl: str = "chunked"  # eager | chunked | liger | cce (CUDA): how logits and cross-entropy are computed
    loss_chunk: int = 128  # chunked: supervised tokens whose logits exist at once (rows x vocab x 8 bytes)
    max_seq_len: int = 2048  # tokens, visual tokens included
    on_truncation: str = "error"  # error | skip: a sample whose answer would be cut
    save_steps: int = 0  # 0: save only at the end
    resume: bool = True  # resume from the last checkpoint in the run folder if one exists
    logging_steps: int = 5
    num_workers: int = 0  # DataLoader workers
    allow_cpu: bool = False  # a real checkpoint (1 GiB of weights or more) trains where torch sees no CUDA device only if true


@dataclass(frozen=True)
class PerturbConfig:
    digit_flip: float = 0.0  # positive control: share of the digits in each answer replaced before scoring (seeded by seed)
    blank: float = 0.0  # positive control: share of the answers replaced by an empty output (exactly round(share * n))


@dataclass(frozen=True)
class EvalConfig:
    enabled: bool = True
    batch_size: int = 8
    max_new_tokens: int = 384
    leakage_keywords: list[str] = field(default_factory=list)  # empty: the built-in receipt list
    worst_per_tag: int = 3  # examples per failure tag in report.md
    slices: list[str] = field(default_factory=list)  # named sets evaluated beside the test set: synthetic, numeric_challenge, or a slice_manifests name
    slice_manifests: dict[str, str] = field(default_factory=dict)  # slice name -> JSONL manifest (each one is evaluated)
    slice_size: int = 10  # pages of a rendered slice (numeric_challenge)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)  # a known injected effect (vlmsweep/evaluate/perturb.py)


@dataclass(frozen=True)
class LoopConfig:
    cycles: int = 0  # 0: a single train -> eval run; N: N retrain cycles after cycle 0
    mine_per_tag: int = 4  # top-K mined samples per failure tag
    synth_per_tag: int = 8  # targeted synthetic samples per failure tag
    oversample: int = 2  # repeats of the hard set in the next cycle's training set
    continue_adapter: bool = True  # continue from the previous adapter (false: restart from base)
    regression_margin: float = 0.05  # warn when a regression metric drops by more than this
    on_empty_mine: str = "train"  # train | stop: what a cycle that mined nothing does
    # cycle 0 trained again with seeds seed+1..seed+N and scored on the regression set: the seed-noise band each
    # cycle's change of a targeted failure tag is read against (vlmsweep.loop.noise.seed_band); 0: no band, no verdict
    noise_seeds: int = 2


@dataclass(frozen=True)
class SweepConfig:
    objective: str = "content.e2e_field_em"  # metric the sweeper optimises; its direction is the metric's
    # metrics optimised together with the objective, each in its own direction (e.g. [cost.visual_tokens_per_image]):
    # a multi-objective study whose result is a Pareto front, not a best
    trade_off: list[str] = field(default_factory=list)
    name: Optional[str] = None  # Optuna study name (conf/sweep/*.yaml sets it)
    trials: int = 0  # total trials of the study; a resumed sweep runs only the missing ones
    storage: Optional[str] = None  # Optuna storage URL: sqlite:///... (default) or postgresql://...


@dataclass(frozen=True)
class Config:
    model: ModelConfig = MISSING
    quant: QuantConfig = MISSING
    scope: ScopeConfig = MISSING
    max_pixels: MaxPixelsConfig = MISSING
    data_mix: DataMixConfig = MISSING
    domain_tag: DomainTagConfig = MISSING
    loss: LossConfig = MISSING
    decoding: DecodingConfig = MISSING
    tracker: TrackerConfig = MISSING
    adapters: AdaptersConfig = MISSING
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seed: int = 0  # seed of model init, LoRA init and data order
    cache_dir: str = "~/.cache/vlmsweep"  # embedded model and rendered datasets
    output_dir: str = "outputs/run"  # set by Hydra to the run folder
    choices: dict[str, str] = field(default_factory=dict)  # group -> option, filled from Hydra


def schema() -> DictConfig:
    """Config as a structured (typed, closed) node that composition may write into.

    OmegaConf marks nodes of frozen dataclasses read-only; the frozen-ness is wanted on the objects
    the code receives (to_config), not on the schema that YAML values are merged into.
    """
    node = OmegaConf.structured(Config)

    def unlock(n: Any) -> None:
        n._set_flag("readonly", None)
        if isinstance(n, DictConfig):
            for key in n.keys():
                child = n._get_node(key)
                if isinstance(child, DictConfig):
                    unlock(child)
                elif child is not None:
                    child._set_flag("readonly", None)

    unlock(node)
    return node


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="vlmsweep_schema", node=schema())


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


def adapters_errors(c: Config) -> list[str]:
    a = c.adapters
    if a.routing not in ("known", "model"):
        return [f"adapters.routing={a.routing!r}: expected known or model"]
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


def check(c: Config) -> None:
    errors = range_errors(c)
    if c.model.source not in ("tiny", "pretrained", "shape", "ocr"):
        errors.append(f"model.source={c.model.source!r}: expected tiny, pretrained, shape or ocr")
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
    if c.quant.cpu_bf16 not in ("float32", "keep"):
        errors.append(f"quant.cpu_bf16={c.quant.cpu_bf16!r}: expected float32 or keep")
    if c.quant.dtype not in ("float32", "bfloat16", "float16"):
        errors.append(f"quant.dtype={c.quant.dtype!r}: expected float32, bfloat16 or float16")
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
    if c.train.loss_impl not in LOSS_IMPLS:
        errors.append(f"train.loss_impl={c.train.loss_impl!r}: expected one of {', '.join(LOSS_IMPLS)}")
    if c.train.loss_chunk < 1:
        errors.append(f"train.loss_chunk={c.train.loss_chunk}: expected a positive number of tokens (rows of logits)")
    if c.train.on_truncation not in ("error", "skip"):
        errors.append(f"train.on_truncation={c.train.on_truncation!r}: expected error or skip")
    if c.tracker.backend not in ("wandb", "none"):
        errors.append(f"tracker.backend={c.tracker.backend!r}: expected wandb or none")
    if c.loop.on_empty_mine not in ("train", "stop"):
        errors.append(f"loop.on_empty_mine={c.loop.on_empty_mine!r}: expected train or stop")
    if c.loop.cycles > 0 and not (c.train.enabled and c.eval.enabled):
        errors.append("loop.cycles > 0 needs train.enabled=true and eval.enabled=true (each cycle trains and evaluates)")
    if c.loop.cycles > 0 and (c.eval.slices or c.eval.slice_manifests):  # not silently ignored
        errors.append("eval.slices / eval.slice_manifests: the retrain loop does not evaluate slices yet; "
                      "use them with loop.cycles=0")
    errors += adapters_errors(c)
    if c.sweep.objective.startswith("slice/"):  # slice/<name>/<metric>: the slice must be one this run evaluates
        name = c.sweep.objective.split("/")[1]
        if name not in c.eval.slices and name not in c.eval.slice_manifests:
            errors.append(f"sweep.objective={c.sweep.objective}: slice {name!r} is not evaluated; add it to eval.slices "
                          f"(or +eval.slice_manifests.{name}=PATH)")
    if errors:
        raise ValueError("invalid configuration:\n  " + "\n  ".join(errors))


def config_dict(cfg: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]
