"""Generation for evaluation: batched greedy decoding with left padding, the JSON stop rule, xgrammar constraints."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from vlmsweep.evaluate.contract import JsonObjectScanner

STOP_EOS, STOP_JSON, STOP_MAX = "eos", "json_complete", "max_new_tokens"

# The canonical answer text (prompts.serialize) uses these separators; the grammar allows exactly them
# so a trained model's preferred tokens stay legal under constraint.
JSON_SEPARATORS = (", ", ": ")


class JsonCompleteStop(StoppingCriteria):
    """Ends each sequence of the batch right after its first complete top-level JSON object.

    transformers 5 calls stopping criteria every step with the whole `input_ids` and expects one bool
    per sequence; `generate` then pads the finished rows. Each row keeps its own scanner fed with the
    text of its new tokens only. Structural characters ({ } " \\) are ASCII and byte-level BPE never
    splits them across tokens, so decoding token by token is exact for the scan.
    """

    def __init__(self, tokenizer, prompt_len: int, batch_size: int, token_text: dict[int, str] | None = None):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.seen = prompt_len
        self.scanners = [JsonObjectScanner() for _ in range(batch_size)]
        self.stopped_after: list[int | None] = [None] * batch_size  # generated tokens when the object closed
        self.token_text = token_text if token_text is not None else {}

    def _text(self, token: int) -> str:
        text = self.token_text.get(token)
        if text is None:
            text = self.tokenizer.decode([token], skip_special_tokens=True)
            self.token_text[token] = text
        return text

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.seen :].tolist()
        start = self.seen
        self.seen = input_ids.shape[1]
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row, tokens in enumerate(new):
            if self.stopped_after[row] is not None:
                done[row] = True
                continue
            for k, tok in enumerate(tokens):
                if self.scanners[row].feed(self._text(tok)) is not None:
                    self.stopped_after[row] = start + k + 1 - self.prompt_len
                    done[row] = True
                    break
        return done


# --- xgrammar -------------------------------------------------------------------------------------

_GRAMMARS: dict[tuple, tuple[Any, Any]] = {}  # (tokenizer id, vocab, stops, schema) -> (tokenizer, compiled)
_INFOS: dict[tuple, tuple[Any, Any]] = {}


def stop_token_ids(tokenizer) -> list[int]:
    """The run's stop ids, from the tokenizer (never the checkpoint's generation config): eos
    (<|im_end|>) plus the pad id (<|endoftext|>, the release's second eos). `generate` feeds pad tokens
    to finished rows, and xgrammar's processor would reject them unless they count as stop tokens."""
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, tokenizer.pad_token_id):
        if value is None:
            continue
        ids |= set(value) if isinstance(value, (list, tuple)) else {int(value)}
    return sorted(ids)


def _tokenizer_info(tokenizer, vocab_size: int, stops: tuple[int, ...]):
    import xgrammar as xgr

    key = (id(tokenizer), vocab_size, stops)
    if key not in _INFOS:
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stops))
        _INFOS[key] = (tokenizer, info)  # keeping the tokenizer alive keeps id() unique
    return _INFOS[key][1]


def compiled_grammar(tokenizer, vocab_size: int, schema: dict, stops: Sequence[int] | None = None):
    """The schema compiled for this tokenizer, once per (tokenizer, vocab size, stop ids, schema)."""
    import xgrammar as xgr

    stops_t = tuple(sorted(stops if stops is not None else stop_token_ids(tokenizer)))
    schema_json = json.dumps(schema, sort_keys=True)
    key = (id(tokenizer), vocab_size, stops_t, schema_json)
    if key not in _GRAMMARS:
        compiler = xgr.GrammarCompiler(_tokenizer_info(tokenizer, vocab_size, stops_t))
        # Property order matters (it is the answer order): compile the schema as given, never key-sorted.
        compiled = compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=JSON_SEPARATORS)
        _GRAMMARS[key] = (tokenizer, compiled)
    return _GRAMMARS[key][1]


def _find_key(schema: Any, key: str, path: str = "") -> str | None:
    if isinstance(schema, dict):
        if key in schema:
            return path or "<root>"
        for k, v in schema.items():
            found = _find_key(v, key, f"{path}/{k}")
            if found:
                return found
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            found = _find_key(v, key, f"{path}/{i}")
            if found:
                return found
    return None


def check_schema_compiles(tokenizer, vocab_size: int, name: str, schema: dict) -> None:
    where = _find_key(schema, "maxLength")
    if where is not None:
        # xgrammar 0.2.8 then admits raw control characters and refuses escapes: outputs stop parsing.
        raise ValueError(
            f"JSON schema {name!r} uses maxLength at {where}: xgrammar 0.2.8 mis-compiles it "
            "(raw control characters allowed, escapes refused). Remove maxLength from the schema."
        )
    try:
        compiled_grammar(tokenizer, vocab_size, schema)
    except Exception as err:  # noqa: BLE001 - any compiler failure becomes one clear start-up error
        raise ValueError(
            f"JSON schema {name!r} does not compile with xgrammar for constrained decoding "
            f"(decoding=json_schema): {type(err).__name__}: {err}. Fix the schema or use decoding=free."
        ) from err


def constrained_processor(tokenizer, vocab_size: int, schemas: Sequence[dict], stops: Sequence[int]):
    """A fresh xgrammar logits processor (they are single-use), one grammar per row of the batch."""
    import xgrammar.contrib.hf as xgr_hf

    return xgr_hf.LogitsProcessor([compiled_grammar(tokenizer, vocab_size, s, stops) for s in schemas])


# --- generation -----------------------------------------------------------------------------------


def eval_generation_config(tokenizer, max_new_tokens: int, do_sample: bool = False) -> GenerationConfig:
    """Evaluation's own complete decoding settings. A checkpoint's generation_config.json fills every
    field left None here (transformers merges it in), and the release's samples (do_sample true,
    temperature 0.01, top_p 0.001, top_k 1): so each field that shapes decoding is set explicitly, the
    sampling knobs to transformers' neutral defaults (unused when greedy; no "ignored flag" warning)."""
    stops = stop_token_ids(tokenizer)
    return GenerationConfig(
        do_sample=do_sample,
        num_beams=1,
        max_new_tokens=int(max_new_tokens),
        min_new_tokens=0,
        temperature=1.0,
        top_k=50,
        top_p=1.0,
        typical_p=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        length_penalty=1.0,
        eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )


class NonFiniteLogits(FloatingPointError):
    """NaN or inf logits (fp16 overflow is a known Qwen2-VL failure): scores would be garbage."""


class FiniteLogitsCheck(LogitsProcessor):
    """Fails on the first NaN/inf in the raw logits, naming the sample; runs before any other processor."""

    def __init__(self, sample_ids: Sequence[str], prompt_len: int):
        self.sample_ids, self.prompt_len = list(sample_ids), prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        bad = ~torch.isfinite(scores).all(dim=-1)
        if bool(bad.any()):
            rows = bad.nonzero().flatten().tolist()
            names = [self.sample_ids[r] if r < len(self.sample_ids) else f"row {r}" for r in rows]
            step = input_ids.shape[1] - self.prompt_len
            raise NonFiniteLogits(
                f"samples {names}: NaN/inf logits at generated token {step} (dtype {scores.dtype}). In fp16 this is "
                "the known Qwen2-VL overflow: evaluate in bf16 or fp32 (quant=bf16 / quant=fp32)"
            )
        return scores


@dataclass
class Generation:
    text: str
    stop_reason: str  # eos | json_complete | max_new_tokens
    output_tokens: int  # generated tokens up to and including the stop token / closing brace
    visual_tokens: int
    seconds: float  # batch wall time / batch size


def vocab_size_of(model) -> int:
    config = model.config
    text_config = getattr(config, "text_config", None) or config
    return int(text_config.vocab_size)


def autocast_dtype(model, device: torch.device) -> torch.dtype | None:
    """The 16-bit dtype to generate under autocast on CUDA, or None. A 4-bit model prepared with quant.fp32_upcast holds
    its vision tower, norms, embedding and LoRA in float32: training runs them under the Trainer's bf16/fp16 autocast,
    but a bare generate() would run them in plain float32 (TF32 off by default), several times slower on a GPU. Its
    4-bit layers' compute dtype says what training used."""
    if device.type != "cuda":
        return None
    # by class name: bitsandbytes is optional, and a model without it has no 4-bit layer
    compute = next((m.compute_dtype for m in model.modules() if type(m).__name__ == "Linear4bit"), None)
    if compute not in (torch.bfloat16, torch.float16):
        return None
    if not any(p.dtype == torch.float32 for p in model.parameters()):
        return None
    return compute


def logits_processors(tokenizer, vocab_size: int, sample_ids: Sequence[str], prompt_len: int,
                      schemas: Sequence[dict] | None, stops: Sequence[int]) -> LogitsProcessorList:
    """Every logits processor of one generate call, in order: the NaN/inf check on the raw logits, then xgrammar's
    constraint (when `schemas` are given, one per row). The one place that chooses them, and the extension point
    for a caller's own penalty or bias: wrap this function and insert before the grammar's, at index 1 (the tests
    close JSON strings on random weights so, tests/test_eval_generate.py bias_generation; benchmarks/bench_eval.py
    ends answers at chosen lengths)."""
    processors = LogitsProcessorList([FiniteLogitsCheck(sample_ids, prompt_len)])
    if schemas is not None:
        processors.append(constrained_processor(tokenizer, vocab_size, schemas, stops))
    return processors


@torch.inference_mode()
def generate_batch(
    model,
    processor,
    chat_texts: Sequence[str],
    images: Sequence[Any],
    *,
    max_new_tokens: int,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    schemas: Sequence[dict] | None = None,
    do_sample: bool = False,
    token_text: dict[int, str] | None = None,
    sample_ids: Sequence[str] | None = None,
) -> list[Generation]:
    """One padded batch through `generate`. `schemas` (one per row) turns on xgrammar constraints; the logits
    processors are logits_processors'. Greedy unless do_sample is asked;
    the checkpoint's generation config never applies (eval_generation_config). `sample_ids` name the
    rows in the error when a logit is NaN/inf."""
    tokenizer = processor.tokenizer
    image_kwargs: dict[str, Any] = {}
    if min_pixels is not None and max_pixels is not None:
        # transformers 5: per-call min/max_pixels are deprecated; `size` takes the same two numbers.
        image_kwargs["size"] = {"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)}
    start = time.perf_counter()
    inputs = processor(
        text=list(chat_texts),
        images=list(images),
        padding=True,
        padding_side="left",  # generation appends on the right: prompts must end at the same column
        return_tensors="pt",
        **image_kwargs,
    )
    device = next(model.parameters()).device
    inputs = inputs.to(device)
    prompt_len = inputs["input_ids"].shape[1]
    batch = inputs["input_ids"].shape[0]
    gen_config = eval_generation_config(tokenizer, max_new_tokens, do_sample)
    stops = stop_token_ids(tokenizer)
    ids = list(sample_ids) if sample_ids is not None else [f"row {r}" for r in range(batch)]
    processors = logits_processors(tokenizer, vocab_size_of(model), ids, prompt_len, schemas, stops)
    json_stop = JsonCompleteStop(tokenizer, prompt_len, batch, token_text)
    dtype = autocast_dtype(model, device)
    with torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext():
        out = model.generate(
            **inputs,
            generation_config=gen_config,
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([json_stop]),
        )
    seconds = (time.perf_counter() - start) / batch
    eos_ids = set(stops)
    merge = getattr(processor.image_processor, "merge_size", 2)
    grid = inputs.get("image_grid_thw")
    results = []
    for row in range(batch):
        generated = out[row, prompt_len:].tolist()
        if json_stop.stopped_after[row] is not None:
            n = json_stop.stopped_after[row]
            reason, text_ids = STOP_JSON, generated[:n]
        else:
            eos_at = next((k for k, tok in enumerate(generated) if tok in eos_ids), None)
            if eos_at is not None:
                n, reason, text_ids = eos_at + 1, STOP_EOS, generated[:eos_at]
            else:
                n, reason, text_ids = len(generated), STOP_MAX, generated
        visual = int(grid[row].prod().item()) // (merge * merge) if grid is not None and row < len(grid) else 0
        results.append(
            Generation(
                text=tokenizer.decode(text_ids, skip_special_tokens=True),
                stop_reason=reason,
                output_tokens=n,
                visual_tokens=visual,
                seconds=seconds,
            )
        )
    return results

