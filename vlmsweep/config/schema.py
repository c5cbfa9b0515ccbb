"""The schema: one frozen dataclass per config section, each field with its default, its help and (a closed choice)
the values it takes; registered with Hydra's ConfigStore as the base of `conf/config.yaml`.

Where each value is written once (TRL's way, trl/trainer/sft_config.py):
- a section that is not a config group (lora, data, train, eval, loop, sweep, the top-level keys): its default is
  the dataclass field's, here, and nowhere else. `conf/config.yaml` holds only the defaults list, the interpolations
  (`cache_dir`, `output_dir`) and Hydra's settings; tests/test_config.py fails on a value it repeats or contradicts.
  The field is the one place a reader, a type checker, `--cfg job` and the configuration reference
  (docs/hooks/config_reference.py, from `help`) all read, and it sits beside the type that checks it.
- a config group (model, quant, ...): the option files in conf/<group>/ are the values and the defaults list of
  conf/config.yaml names the default option. Every option file sets every field (tests/test_config.py), so no run
  Hydra composes takes a value from the group dataclass's defaults: those apply only to a config built in Python
  (the warm-up recipe's own config, memory estimates, tests).

Closed choices are `choices` in the field's metadata, checked by vlmsweep.config.checks (and on the command line by
vlmsweep.cli.checks): OmegaConf 2.3 rejects `Literal` in a structured config ("Unexpected type annotation"), and an
Enum would hand every module an Enum member where it reads a string today.
"""

from __future__ import annotations

import copy
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


def knob(default: Any, help: str, choices: tuple[str, ...] = ()) -> Any:  # noqa: A002 - TRL's word for it
    """A schema field: its default (written here only), its help (the reference's "what") and, for a closed choice,
    the values it takes."""
    metadata = {"help": help, "choices": choices} if choices else {"help": help}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


def choices_of(tp: type, name: str) -> tuple[str, ...]:
    """The values a closed-choice field of dataclass `tp` takes (empty: not a closed choice)."""
    return next((f.metadata.get("choices", ()) for f in dataclasses.fields(tp) if f.name == name), ())


def visual_tokens_to_pixels(tokens: int) -> int:
    """The one place where a visual-token budget becomes the image processor's pixel budget."""
    return int(tokens) * PIXELS_PER_VISUAL_TOKEN


def pixel_budget(cfg: "Config") -> tuple[int, int]:
    """(min_pixels, max_pixels) of the image processor for a run's max_pixels option."""
    return visual_tokens_to_pixels(cfg.max_pixels.min_visual_tokens), visual_tokens_to_pixels(cfg.max_pixels.visual_tokens)


@dataclass(frozen=True)
class ModelConfig:
    name: str = knob(MISSING, "option label: tiny, qwen2_vl_2b, ...")
    source: str = knob("tiny", "tiny: built locally | pretrained: path or hub id | shape: real config, random weights "
                       "| ocr: OCR + rules", choices=("tiny", "pretrained", "shape", "ocr"))
    path: Optional[str] = knob(None, "local folder or hub id (pretrained); architecture name (shape); "
                               "engine (ocr: tesseract)")
    family: str = knob("qwen2_vl", "qwen2_vl | qwen2_5_vl: decides the module-name patterns")
    attn_implementation: str = knob("sdpa", "transformers' attention implementation")
    prequantized: bool = knob(False, "checkpoint already holds bitsandbytes 4-bit weights")
    adapter: Optional[str] = knob(None, "a trained LoRA adapter folder to load (evaluation without training)")


@dataclass(frozen=True)
class QuantConfig:
    name: str = knob(MISSING, "nf4 | bf16 | fp16 | fp32")
    dtype: str = knob("float32", "dtype of the non-quantized weights and of LoRA compute",
                      choices=("float32", "bfloat16", "float16"))
    load_in_4bit: bool = knob(False, "bitsandbytes 4-bit (QLoRA)")
    quant_type: str = knob("nf4", "bitsandbytes 4-bit type")
    double_quant: bool = knob(True, "bitsandbytes double quantization")
    quantize_vision: bool = knob(False, "ablation: put the vision tower in 4-bit too")
    fp32_upcast: bool = knob(True, "4-bit only: peft's prepare_model_for_kbit_training casts every non-4-bit weight "
                             "to fp32")
    cpu_bf16: str = knob("float32", "on the CPU (no CUDA): float32 (compute in fp32, logged) | keep (bf16: native or "
                         "emulated)", choices=("float32", "keep"))


@dataclass(frozen=True)
class ScopeConfig:
    name: str = knob(MISSING, "llm | projector | llm_projector | vision_last_n | all")
    parts: list[str] = knob([], "any of: llm, merger, vision")
    vision_last_n: int = knob(0, "with part \"vision\": only the last N vision blocks (0 = all blocks)")


@dataclass(frozen=True)
class LoraConfig:
    r: int = knob(16, "rank")
    alpha: int = knob(32, "scaling numerator (scale = alpha / r)")
    dropout: float = knob(0.05, "LoRA dropout")
    modules_to_save: list[str] = knob([], "extra fully-trained modules")


@dataclass(frozen=True)
class MaxPixelsConfig:
    name: str = knob(MISSING, "option label: 64tok, 256tok, ...")
    visual_tokens: int = knob(256, "max visual tokens per image after the 2x2 merge")
    min_visual_tokens: int = knob(4, "min visual tokens per image")


@dataclass(frozen=True)
class DataMixConfig:
    name: str = knob(MISSING, "medical_only | rx_receipt_1_1_1 | medical_heavy")
    weights: dict[str, float] = knob({}, "relative sampling weight per domain")
    receipt_ratio: Optional[float] = knob(None, "when set: share of receipts; the rest split by weights")
    hard_negatives: float = knob(0.0, "share of samples that ask a receipt image as a prescription")


@dataclass(frozen=True)
class DomainTagConfig:
    name: str = knob(MISSING, "none | prompt")
    in_prompt: bool = knob(False, "put [PRESCRIPTION] / [RECEIPT] in every prompt")


@dataclass(frozen=True)
class LossConfig:
    name: str = knob(MISSING, "assistant_only | full")
    assistant_only: bool = knob(True, "supervise only the assistant answer and its <|im_end|>")


@dataclass(frozen=True)
class DecodingConfig:
    name: str = knob(MISSING, "free | json_schema")
    constrained: bool = knob(False, "grammar-constrained against the domain's JSON schema (xgrammar)")


@dataclass(frozen=True)
class AdaptersConfig:
    name: str = knob(MISSING, "single | per_domain")
    per_domain: bool = knob(False, "one adapter per domain group (vlmsweep/pipeline/per_domain.py)")
    routing: str = knob("known", "per_domain: known (the sample's domain) | model (the base model classifies the page)",
                        choices=("known", "model"))
    groups: dict[str, list[str]] = knob({}, "group name -> its domains (per_domain)")


# ocr_hint: the tokens of a prompt besides the hint and the answer (the chat template's turns and the instruction: the
# longest, the receipt one with a domain tag, is 33 Qwen2 tokens; the template's system and user turns add about 20).
HINT_PROMPT_TOKENS = 96


def hint_token_budget(c: "Config", answer_tokens: int = 0) -> int:
    """The hint's tokens at most: ocr_hint.max_tokens, lowered so that a page's visual tokens, the prompt, the hint and
    an answer of max(eval.max_new_tokens, `answer_tokens`: the longest training answer) fit train.max_seq_len (below
    1: no room, which the config check and the hint stage refuse)."""
    answer = max(c.eval.max_new_tokens, answer_tokens)
    room = c.train.max_seq_len - c.max_pixels.visual_tokens - answer - HINT_PROMPT_TOKENS
    return min(c.ocr_hint.max_tokens, room)


@dataclass(frozen=True)
class OcrHintConfig:
    name: str = knob(MISSING, "none | tesseract | rapidocr")
    engine: str = knob("none", "none | tesseract (Debian's tesseract-ocr, kor + chi_sim + eng) | rapidocr (PP-OCRv4 "
                       "from the rapidocr-onnxruntime wheel: Chinese, Latin and digits, no Hangul)",
                       choices=("none", "tesseract", "rapidocr"))
    resolution: str = knob("page", "page: OCR of the full scan (what a real pipeline does) | budget: of the image as "
                           "resized to max_pixels (ties the hint to the visual-token budget)", choices=("page", "budget"))
    max_tokens: int = knob(1024, "hint tokens at most, further capped so that image, instruction, hint and "
                           "eval.max_new_tokens fit train.max_seq_len; a longer hint is cut at a line boundary "
                           "(counted: ocr_hint.cut_pages)")


@dataclass(frozen=True)
class TrackerConfig:
    name: str = knob(MISSING, "wandb | none")
    backend: str = knob("none", "wandb | none", choices=("wandb", "none"))
    mode: str = knob("offline", "offline | online | disabled (W&B)")
    project: str = knob("vlmsweep", "W&B project")
    entity: Optional[str] = knob(None, "W&B entity")
    group: Optional[str] = knob(None, "default: the multirun or sweep folder with its date (2026-12-07/12-00-00); "
                                      "a single run: its date folder")
    log_samples: bool = knob(True, "per-sample table")
    tags: list[str] = knob([], "extra W&B tags, beside the choices, seed and job number (tracker.tags=[baseline,ablation])")


@dataclass(frozen=True)
class DataConfig:
    seed: int = knob(0, "seed of the synthetic data; the four splits use disjoint streams of it")
    train_size: int = knob(64, "training samples drawn from the mix")
    test_size: int = knob(64, "held-out samples, never trained on or mined: the 2x2 and the A/A pair run on them "
                          "(the report states n)")
    mining_size: int = knob(8, "mining pool for the retrain loop")
    regression_size: int = knob(8, "fixed at cycle 0, never trained on")
    train_manifest: Optional[str] = knob(None, "JSONL manifest of your own data; replaces the synthetic train set")
    test_manifest: Optional[str] = knob(None, "... replaces the synthetic test set")
    mining_manifest: Optional[str] = knob(None, "... replaces the loop's synthetic mining pool")
    regression_manifest: Optional[str] = knob(None, "... replaces the loop's synthetic regression set "
                                              "(fixed at cycle 0)")
    val_size: int = knob(16, "validation pages scored during training (train.eval_every > 0 only; drawn from their "
                         "own seed stream, never the test or regression set)")
    val_manifest: Optional[str] = knob(None, "... replaces the synthetic validation set (train.eval_every > 0); "
                                       "a page it shares with the test, regression or training set is refused")
    add_synthetic: bool = knob(False, "with a manifest: also draw <split>_size synthetic samples from data_mix")
    skip_bad_lines: bool = knob(False, "count and report bad manifest lines (and unusable images) instead of failing")
    near_duplicate_bits: int = knob(8, "leakage guard: a training image within this many of 256 perceptual-hash bits "
                                    "of a test or regression image is the same document (re-encodes measure 2, "
                                    "distinct pages >= 28); -1: off")
    noise: str = knob("scan", "none | light | scan: scan-noise level of synthetic images")


@dataclass(frozen=True)
class TrainConfig:
    enabled: bool = knob(True, "false: evaluate only (the base model, or model.adapter)")
    max_steps: int = knob(30, "optimizer steps")
    batch_size: int = knob(4, "samples per device per step")
    grad_accum: int = knob(1, "micro-batches per optimizer step")
    lr: float = knob(2e-3, "learning rate")
    weight_decay: float = knob(0.0, "AdamW weight decay")
    warmup_ratio: float = knob(0.0, "share of the steps spent warming up the learning rate")
    lr_scheduler: str = knob("constant", "one of transformers' schedulers (constant, linear, cosine, ...)")
    grad_checkpointing: bool = knob(False, "recompute activations in the backward pass: less memory, more time")
    loss_impl: str = knob("chunked", "eager (all supervised logits at once) | chunked (pure torch, loss_chunk rows at "
                          "a time) | liger | cce (CUDA kernels: pip install 'vlmsweep[liger]' or 'vlmsweep[cce]')",
                          choices=LOSS_IMPLS)
    loss_chunk: int = knob(128, "chunked: supervised tokens whose logits exist at once (x 151,936 vocab x 8 bytes = "
                           "148 MiB)")
    max_seq_len: int = knob(2048, "tokens, visual tokens included")
    on_truncation: str = knob("error", "error | skip (counted): never train on a cut answer",
                              choices=("error", "skip"))
    save_steps: int = knob(0, "checkpoint every N steps (0: only the final adapter)")
    resume: bool = knob(True, "resume from the last checkpoint in the run folder if one exists")
    logging_steps: int = knob(5, "steps between log lines")
    num_workers: int = knob(0, "DataLoader workers")
    eval_every: int = knob(0, "score the validation set (data.val_size / data.val_manifest) every N optimizer steps "
                           "and at the last, with the run's decoding: metrics_history.jsonl and tracker curves "
                           "(0: off, the run's wall time unchanged)")
    select: Optional[str] = knob(None, "a validation metric (e.g. content.field_em; its direction is the registry's): "
                                 "keep the adapter of its best evaluation, not the last; the test set is scored with "
                                 "it and train.selected_step says which (needs train.eval_every > 0)")
    early_stop: int = knob(0, "stop when train.select has not improved for this many evaluations (0: never)")
    allow_cpu: bool = knob(False, "true: train a real checkpoint (>= 1 GiB of weights) even where torch sees no CUDA "
                           "device (days instead of hours); false: such a run fails at start-up saying why CUDA is "
                           "unusable")


@dataclass(frozen=True)
class PerturbConfig:
    digit_flip: float = knob(0.0, "positive control: share of the answer's digits replaced by another digit (seeded "
                             "by `seed`), e.g. -m eval.perturb.digit_flip=0,0.3 seed=0,1,2; run_info.json records "
                             "its measured size")
    blank: float = knob(0.0, "positive control: share of the answers replaced by an empty output (exactly "
                        "round(share * n), seeded): a contract control")


@dataclass(frozen=True)
class EvalConfig:
    enabled: bool = knob(True, "false: train only")
    batch_size: int = knob(8, "samples per generation batch")
    max_new_tokens: int = knob(384, "tokens an answer may take (the longest target is ~300 tokens)")
    leakage_keywords: list[str] = knob([], "empty: the built-in receipt lists (en, ko, zh); else as given: "
                                       "@en @ko @zh = a built-in list, @PATH = your file")
    worst_per_tag: int = knob(3, "examples per failure tag in report.md")
    slices: list[str] = knob([], "named sets scored apart (slice/<name>/... metrics): synthetic (the synthetic test "
                             "split), numeric_challenge (small faded print, confusable digits), or a name in "
                             "slice_manifests")
    slice_manifests: dict[str, str] = knob({}, "slice name -> JSONL manifest, e.g. "
                                           "eval.slice_manifests.real_receipts=data/sroie/manifest.jsonl")
    slice_size: int = knob(10, "pages of the rendered numeric_challenge slice (the five domains in turn)")
    perturb: PerturbConfig = knob(PerturbConfig, "a known effect injected after generation, before scoring "
                                  "(vlmsweep/evaluate/perturb.py)")


@dataclass(frozen=True)
class LoopConfig:
    cycles: int = knob(0, "0: a single train -> eval run; N: N retrain cycles after cycle 0 (train -> eval -> mine "
                       "-> retrain)")
    mine_per_tag: int = knob(4, "top-K mined samples per failure tag")
    synth_per_tag: int = knob(8, "targeted synthetic samples per failure tag")
    oversample: int = knob(2, "repeats of the hard set in the next cycle's training set")
    continue_adapter: bool = knob(True, "continue from the previous adapter (false: restart from base)")
    regression_margin: float = knob(0.05, "warn when a regression metric drops by more than this")
    on_empty_mine: str = knob("train", "train | stop: what a cycle that mined nothing does", choices=("train", "stop"))
    noise_seeds: int = knob(2, "cycle 0 trained again with seeds seed+1..seed+N and scored on the regression set: the "
                            "seed-noise band each cycle's change of a targeted failure tag is read against "
                            "(vlmsweep.loop.noise.seed_band); 0: no band, no verdict")


@dataclass(frozen=True)
class SweepConfig:
    objective: str = knob("content.e2e_field_em", "metric the sweeper optimises; its direction is the metric's")
    trade_off: list[str] = knob([], "metrics optimised together with the objective, each in its own direction (e.g. "
                                "[cost.visual_tokens_per_image]): a multi-objective study whose result is a Pareto "
                                "front, not a best")
    name: Optional[str] = knob(None, "Optuna study name (conf/sweep/*.yaml sets it)")
    trials: int = knob(0, "total trials of the study; a resumed sweep runs only the missing ones")
    storage: Optional[str] = knob(None, "Optuna storage URL: sqlite:///... (default) or postgresql://...")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = knob(MISSING, "the model (a config group)")
    quant: QuantConfig = knob(MISSING, "precision and quantization (a config group)")
    scope: ScopeConfig = knob(MISSING, "the trained parts (a config group)")
    max_pixels: MaxPixelsConfig = knob(MISSING, "the visual-token budget (a config group)")
    data_mix: DataMixConfig = knob(MISSING, "the synthetic mix (a config group)")
    domain_tag: DomainTagConfig = knob(MISSING, "the domain tag in prompts (a config group)")
    loss: LossConfig = knob(MISSING, "the supervised tokens (a config group)")
    decoding: DecodingConfig = knob(MISSING, "free or grammar-constrained decoding (a config group)")
    tracker: TrackerConfig = knob(MISSING, "the experiment tracker (a config group)")
    adapters: AdaptersConfig = knob(MISSING, "one adapter or one per domain group (a config group)")
    ocr_hint: OcrHintConfig = knob(MISSING, "the page's OCR text in the prompt (a config group)")
    lora: LoraConfig = knob(LoraConfig, "the adapters")
    data: DataConfig = knob(DataConfig, "the splits")
    train: TrainConfig = knob(TrainConfig, "training")
    eval: EvalConfig = knob(EvalConfig, "evaluation")
    loop: LoopConfig = knob(LoopConfig, "the retrain loop")
    sweep: SweepConfig = knob(SweepConfig, "the Optuna sweep")
    seed: int = knob(0, "seed of model init, LoRA init and data order")
    # conf/config.yaml sets the two below by interpolation (VLMSWEEP_CACHE; Hydra's run folder): these defaults are
    # for a Config built in Python
    cache_dir: str = knob("~/.cache/vlmsweep", "embedded model and rendered datasets (env VLMSWEEP_CACHE)")
    output_dir: str = knob("outputs/run", "set by Hydra to the run folder")
    choices: dict[str, str] = knob({}, "group -> option, filled from Hydra")


GROUPS = tuple(f.name for f in dataclasses.fields(Config) if f.default == MISSING)  # sections that are config groups


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


def config_dict(cfg: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]
