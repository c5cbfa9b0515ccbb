"""Evaluation speed: samples per second batched vs one at a time, and json_schema vs free time per token.

    python benchmarks/bench_eval.py                      # embedded tiny model, CPU or the first GPU
    python benchmarks/bench_eval.py --model qwen2_vl_2b  # the real 2B architecture, random weights
    python benchmarks/bench_eval.py --model-path /models/Qwen2-VL-2B-Instruct

Targets (issue): batched (8) >= 3x the samples/s of one at a time; constrained <= 10% slower per token.
Per-token time = generation wall time / generated tokens, prefill included, same records, same budget.

A random model's rows all run to max_new_tokens: the best case for batching (no row waits for another).
The "varied" settings end each sample's answer at its own length (drawn once per sample, seeded, between
1/8 of max_new_tokens and all of it, the same in every setting) through a logits processor that forces
<|im_end|>: a batch then runs as long as its longest row, as a trained model's batches do. Each setting runs
--repeats times, interleaved; printed: median seconds with the range, speed-ups with a 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

from vlmsweep import prompts
from vlmsweep.config import DecodingConfig, EvalConfig
from vlmsweep.data.record import Record
from vlmsweep.data.schema import empty_target
from vlmsweep.evaluate import check_schemas_compile, evaluate, generate
from vlmsweep.model.tiny import ensure_embedded_model

PIXELS = 28 * 28  # one visual token
DOMAINS = ("prescription_ko", "receipt", "prescription_zh", "receipt")


def make_records(folder: Path, n: int) -> list[Record]:
    records = []
    for i in range(n):
        domain = DOMAINS[i % len(DOMAINS)]
        im = Image.new("RGB", (448, 448), "white")
        ImageDraw.Draw(im).text((20, 20), f"Patient {i}\nID 1234{i % 10}\nAspirin 100 mg", fill="black")
        path = folder / f"{i}.png"
        im.save(path)
        records.append(Record(f"b{i}", path, domain, empty_target(prompts.schema_name(domain)), domain))
    return records


class ProcessorClock:
    """Times xgrammar's logits processor inside generate: a figure a busy machine disturbs far less
    than the difference of two end-to-end timings."""

    def __init__(self) -> None:
        import xgrammar.contrib.hf as xgr_hf

        self.seconds = 0.0
        original = xgr_hf.LogitsProcessor.__call__
        clock = self

        def timed_call(proc, input_ids, scores):
            start = time.perf_counter()
            out = original(proc, input_ids, scores)
            clock.seconds += time.perf_counter() - start
            return out

        xgr_hf.LogitsProcessor.__call__ = timed_call


class EndAtLengths:
    """Forces <|im_end|> once a row has generated its sample's length. evaluate() generates the records in
    order, batch after batch, so each generate call takes the next rows' lengths; a step continues the call
    when its ids are the previous step's plus one token, anything else is a new call."""

    def __init__(self, lengths: list[int], eos_id: int) -> None:
        self.lengths, self.eos_id = lengths, eos_id
        self.next, self.rows, self.prompt_len, self.previous = 0, [], 0, None

    def __call__(self, input_ids, scores):
        prev = self.previous
        same_call = prev is not None and prev.shape[0] == input_ids.shape[0] and prev.shape[1] + 1 == input_ids.shape[1] \
            and torch.equal(input_ids[:, :-1], prev)
        if not same_call:
            self.rows = self.lengths[self.next: self.next + input_ids.shape[0]]
            self.next += input_ids.shape[0]
            self.prompt_len = input_ids.shape[1]
        self.previous = input_ids.clone()
        for row, length in enumerate(self.rows):
            if input_ids.shape[1] - self.prompt_len >= length - 1:  # this step's token is the row's last
                scores[row, :] = float("-inf")
                scores[row, self.eos_id] = 0.0
        return scores


@contextlib.contextmanager
def processor_before_grammar(extra):
    """Generation applies `extra` (None: nothing) after the NaN/inf check and before the grammar, through the function
    that chooses generation's logits processors (vlmsweep.evaluate.generate.logits_processors)."""
    real = generate.logits_processors

    def with_extra(*args, **kwargs):
        processors = real(*args, **kwargs)
        if extra is not None:
            processors.insert(1, extra)
        return processors

    generate.logits_processors = with_extra
    try:
        yield
    finally:
        generate.logits_processors = real


def timed(model, processor, records, batch_size, constrained, max_new_tokens, visual_tokens, lengths=None):
    cfg = EvalConfig(batch_size=batch_size, max_new_tokens=max_new_tokens)
    decoding = DecodingConfig(name="json_schema" if constrained else "free", constrained=constrained)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    extra = EndAtLengths(lengths, processor.tokenizer.convert_tokens_to_ids("<|im_end|>")) if lengths else None
    start = time.perf_counter()
    with processor_before_grammar(extra):
        _, samples = evaluate(
            model, processor, records, cfg, decoding, domain_tag=False,
            max_pixels=visual_tokens * PIXELS, min_pixels=4 * PIXELS,
        )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = sum(s["output_tokens"] for s in samples)
    return seconds, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", choices=["tiny", "qwen2_vl_2b"], help="embedded architecture")
    ap.add_argument("--model-path", default=None, help="a local checkpoint folder instead of an embedded model")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--visual-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timings of each setting")
    ap.add_argument("--cache-dir", default="~/.cache/vlmsweep")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    path = args.model_path or ensure_embedded_model(args.model, args.cache_dir, dtype=dtype)
    model = Qwen2VLForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device).eval()
    processor = AutoProcessor.from_pretrained(path)
    start = time.perf_counter()
    check_schemas_compile(processor.tokenizer, model.config.text_config.vocab_size)
    compile_s = time.perf_counter() - start

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from spread import describe, ratio_of_medians

    rng = random.Random(0)
    lengths = [rng.randint(max(2, args.max_new_tokens // 8), args.max_new_tokens) for _ in range(args.samples)]
    with tempfile.TemporaryDirectory() as tmp:
        records = make_records(Path(tmp), args.samples)
        common = dict(max_new_tokens=args.max_new_tokens, visual_tokens=args.visual_tokens)
        timed(model, processor, records[: args.batch_size], args.batch_size, True, **common)  # warm-up
        clock = ProcessorClock()
        b = args.batch_size
        settings = [  # name, batch size, constrained, per-sample lengths
            ("free, batch 1", 1, False, None),
            (f"free, batch {b}", b, False, None),
            ("varied, batch 1", 1, False, lengths),
            (f"varied, batch {b}", b, False, lengths),
            (f"json_schema, batch {b}", b, True, None),
        ]
        runs: dict[str, list[tuple[float, int]]] = {name: [] for name, *_ in settings}
        grammar_ms_per_token = []
        for rep in range(args.repeats):  # interleaved, rotating: a busy shared machine slows all settings alike
            for name, bs, constrained, lens in settings[rep % len(settings):] + settings[: rep % len(settings)]:
                clock.seconds = 0.0
                run = timed(model, processor, records, bs, constrained, lengths=lens, **common)
                if constrained:
                    grammar_ms_per_token.append(1000 * clock.seconds / max(1, run[1]))
                runs[name].append(run)

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none"
    print(f"machine: {platform.platform()}, {torch.get_num_threads()} torch threads, cpu {cpu}, gpu {gpu}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"torch {torch.__version__}, model {args.model_path or args.model} ({dtype}), {args.samples} samples, "
          f"max_new_tokens {args.max_new_tokens}, <= {args.visual_tokens} visual tokens per image, {args.repeats} repeats")
    print(f"varied answer lengths: {sorted(lengths)}")
    print(f"xgrammar schema compile (both schemas): {compile_s:.2f} s")
    print(f"{'setting':<24} {'seconds: median (range)':<32} {'samples/s':>10} {'tokens':>7} {'ms/token':>9}")
    seconds = {name: [r[0] for r in rs] for name, rs in runs.items()}
    for name, rs in runs.items():
        med = statistics.median(seconds[name])
        tokens = rs[0][1]
        print(f"{name:<24} {describe(seconds[name]):<32} {args.samples / med:10.2f} {tokens:7d} {1000 * med / max(1, tokens):9.2f}")
    for kind in ("free", "varied"):
        r, lo, hi = ratio_of_medians(seconds[f"{kind}, batch 1"], seconds[f"{kind}, batch {b}"])
        print(f"batched speed-up, {kind + ' (rows end at max_new_tokens)' if kind == 'free' else 'varied (rows end at their own lengths)'}: "
              f"{r:.2f}x [95% interval {lo:.2f}–{hi:.2f}] (target >= 3x)  {'OK' if r >= 3 else 'MISSED'}")
    free_tokens, json_tokens = runs[f"free, batch {b}"][0][1], runs[f"json_schema, batch {b}"][0][1]
    per_token = [s / max(1, json_tokens) for s in seconds[f"json_schema, batch {b}"]]
    free_per_token = [s / max(1, free_tokens) for s in seconds[f"free, batch {b}"]]
    r, lo, hi = ratio_of_medians(per_token, free_per_token)
    print(f"json_schema per-token overhead: {100 * (r - 1):+.1f}% [95% interval {100 * (lo - 1):+.1f}% to "
          f"{100 * (hi - 1):+.1f}%] (target <= +10%)  {'OK' if r - 1 <= 0.10 else 'MISSED'}")
    free_ms = 1000 * statistics.median(free_per_token)
    grammar_ms = statistics.median(grammar_ms_per_token)
    print(f"  of which inside xgrammar's processor: {grammar_ms:.2f} ms/token = {100 * grammar_ms / free_ms:.1f}% "
          "of the free per-token time (timed directly, less sensitive to machine load)")


if __name__ == "__main__":
    main()
