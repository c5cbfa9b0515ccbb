"""Generation on the embedded tiny model: the JSON stop rule per sequence, left padding, xgrammar constraints."""

import json

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoProcessor, LogitsProcessor, Qwen2VLForConditionalGeneration

from vlmsweep.config import DecodingConfig, EvalConfig
from vlmsweep.data.record import Record
from vlmsweep.data.schema import empty_target, load_schema
from vlmsweep.evaluate import check_schemas_compile, evaluate, generate
from vlmsweep.evaluate.generate import JsonCompleteStop, NonFiniteLogits, generate_batch
from vlmsweep.evaluate.outputs import write_outputs
from vlmsweep import prompts

PIXELS = 28 * 28


@pytest.fixture(scope="module")
def tiny(tiny_path):
    model = Qwen2VLForConditionalGeneration.from_pretrained(tiny_path).eval()
    processor = AutoProcessor.from_pretrained(tiny_path)
    return model, processor


class FinishJsonSooner(LogitsProcessor):
    """Test only: random weights rarely close a JSON string or object within 48 tokens. Placed before
    xgrammar's processor, this prefers `null` (+12), tokens holding a quote (+6) and longer tokens
    (+0.3 per character, so forced keys go in few tokens). The production path adds nothing."""

    def __init__(self, tokenizer, vocab_size):
        self.bias = torch.zeros(vocab_size)
        for i in range(len(tokenizer)):
            text = tokenizer.decode([i])
            self.bias[i] = 12.0 * (text.strip() == "null") + 6.0 * ('"' in text) + 0.3 * min(len(text), 20)

    def __call__(self, input_ids, scores):
        return scores + self.bias.to(scores.dtype)


def bias_generation(monkeypatch, bias: LogitsProcessor) -> None:
    """Every generate call applies `bias` after the NaN/inf check and before the grammar, through the one function
    that chooses generation's logits processors (generate.logits_processors), as production calls it."""
    real = generate.logits_processors

    def with_bias(*args, **kwargs):
        processors = real(*args, **kwargs)
        processors.insert(1, bias)
        return processors

    monkeypatch.setattr(generate, "logits_processors", with_bias)


def records_on_disk(folder, domains):
    out = []
    for i, domain in enumerate(domains):
        im = Image.new("RGB", (160 + 40 * i, 120), "white")
        ImageDraw.Draw(im).text((10, 10), f"Patient {i}\nAspirin 100 mg", fill="black")
        path = folder / f"img{i}.png"
        im.save(path)
        target = empty_target(prompts.schema_name(domain))
        out.append(Record(id=f"r{i}", image=path, domain=domain, target=target, image_domain=domain))
    return out


def test_stop_rule_ends_each_sequence_after_its_own_object(tiny):
    _, processor = tiny
    tok = processor.tokenizer
    texts = ['Sure: {"a": "}", "b": {"c": 1}} and then', "no json here at all, just words going on", '{"x": 1}']
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, rows))
    rows = [r + [tok.pad_token_id] * (width - len(r)) for r in rows]
    prompt = [[1, 2]] * 3
    stop = JsonCompleteStop(tok, prompt_len=2, batch_size=3)
    finished_at = [None] * 3
    for step in range(1, width + 1):
        ids = torch.tensor([p + r[:step] for p, r in zip(prompt, rows)])
        done = stop(ids, None)
        for row in range(3):
            if done[row] and finished_at[row] is None:
                finished_at[row] = step
    expected0 = next(k for k in range(1, width + 1) if tok.decode(rows[0][:k]).endswith("}}"))
    assert finished_at == [expected0, None, len(tok('{"x": 1}', add_special_tokens=False)["input_ids"])]
    assert stop.stopped_after == finished_at
    assert tok.decode(rows[0][: finished_at[0]]) == 'Sure: {"a": "}", "b": {"c": 1}}'


def test_json_schema_decoding_is_strict_and_schema_valid(tiny, tmp_path, monkeypatch):
    model, processor = tiny
    records = records_on_disk(tmp_path, ["prescription_ko", "receipt", "prescription_zh", "receipt"])
    bias_generation(monkeypatch, FinishJsonSooner(processor.tokenizer, model.config.text_config.vocab_size))
    metrics, samples = evaluate(
        model,
        processor,
        records,
        EvalConfig(batch_size=4, max_new_tokens=48),
        DecodingConfig(name="json_schema", constrained=True),
        domain_tag=True,
        max_pixels=16 * PIXELS,
        min_pixels=4 * PIXELS,
    )
    assert not (tmp_path / "run").exists()  # evaluate writes nothing: a pass's write stage does
    write_outputs(tmp_path / "run", metrics, samples)
    assert metrics["contract.strict_parse_rate"] == 1.0
    assert metrics["contract.schema_valid_rate"] == 1.0
    assert metrics["contract.key_set_rate"] == 1.0
    assert [s["stop_reason"] for s in samples] == ["json_complete"] * 4
    for s, rec in zip(samples, records):
        assert json.loads(s["raw"]) == s["parsed"]
        assert list(s["parsed"]) == list(load_schema(prompts.schema_name(rec.domain))["properties"])  # schema order
        assert 0 < s["output_tokens"] <= 48 and 4 <= s["visual_tokens"] <= 16
        assert s["prompt"].startswith("[PRESCRIPTION]" if rec.domain != "receipt" else "[RECEIPT]")
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert files == {"samples.jsonl", "metrics.json", "report.md"}
    assert len((tmp_path / "run" / "samples.jsonl").read_text().splitlines()) == 4


def test_free_decoding_batched_with_left_padding_equals_one_at_a_time(tiny, tmp_path):
    model, processor = tiny
    records = records_on_disk(tmp_path, ["prescription_ko", "receipt", "prescription_zh"])
    kwargs = dict(domain_tag=False, max_pixels=16 * PIXELS, min_pixels=4 * PIXELS)
    free = DecodingConfig(name="free", constrained=False)
    _, batched = evaluate(model, processor, records, EvalConfig(batch_size=3, max_new_tokens=6), free, **kwargs)
    _, single = evaluate(model, processor, records, EvalConfig(batch_size=1, max_new_tokens=6), free, **kwargs)
    assert [s["raw"] for s in batched] == [s["raw"] for s in single]
    for s in batched:
        assert s["stop_reason"] == "max_new_tokens" and s["output_tokens"] == 6
        assert "run_on" in s["tags"]  # no object before the token limit


def test_max_pixels_bounds_the_visual_tokens(tiny):
    model, processor = tiny
    chat = processor.apply_chat_template(prompts.messages("receipt", False), add_generation_prompt=True, tokenize=False)
    big = Image.new("RGB", (1000, 800), "white")
    [g] = generate_batch(model, processor, [chat], [big], max_new_tokens=1, min_pixels=4 * PIXELS, max_pixels=16 * PIXELS)
    assert 4 <= g.visual_tokens <= 16
    [g] = generate_batch(model, processor, [chat], [big], max_new_tokens=1, min_pixels=4 * PIXELS, max_pixels=64 * PIXELS)
    assert 16 < g.visual_tokens <= 64


def test_schemas_compile_or_fail_at_start_up_naming_the_schema(tiny):
    model, processor = tiny
    vocab = model.config.text_config.vocab_size
    check_schemas_compile(processor.tokenizer, vocab)  # the shipped schemas
    with pytest.raises(ValueError, match="JSON schema 'broken' does not compile with xgrammar"):
        check_schemas_compile(processor.tokenizer, vocab, {"broken": {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}})
    with pytest.raises(ValueError, match="JSON schema 'capped' uses maxLength at /properties/a"):
        check_schemas_compile(processor.tokenizer, vocab, {"capped": {"type": "object", "properties": {"a": {"type": "string", "maxLength": 5}}}})


def test_generation_is_greedy_whatever_the_checkpoint_config_says(tiny_path):
    """The replica carries the release's generation_config.json (do_sample true); made to sample widely
    here, it would change outputs with the seed. Evaluation's own config keeps them greedy."""
    model = Qwen2VLForConditionalGeneration.from_pretrained(tiny_path).eval()
    processor = AutoProcessor.from_pretrained(tiny_path)
    assert model.generation_config.do_sample  # the release's setting, loaded as the release's
    model.generation_config.temperature, model.generation_config.top_k, model.generation_config.top_p = 50.0, None, None
    chats = [processor.apply_chat_template(prompts.messages(d, False), add_generation_prompt=True, tokenize=False)
             for d in ("receipt", "prescription_ko")]
    images = [Image.new("RGB", (200, 160), "white"), Image.new("RGB", (160, 240), "gray")]
    budget = dict(min_pixels=4 * PIXELS, max_pixels=16 * PIXELS)
    outputs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        outputs.append([g.text for g in generate_batch(model, processor, chats, images, max_new_tokens=8, **budget)])
    assert outputs[0] == outputs[1]
    # what the checkpoint's own config does with the same inputs: it samples
    inputs = processor(text=chats, images=images, padding=True, padding_side="left", return_tensors="pt",
                       size={"shortest_edge": 4 * PIXELS, "longest_edge": 16 * PIXELS})
    sampled = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        sampled.append(model.generate(**inputs, max_new_tokens=8))
    assert not torch.equal(sampled[0], sampled[1])


def test_nan_logits_fail_naming_the_sample(tiny_path):
    model = Qwen2VLForConditionalGeneration.from_pretrained(tiny_path).eval()
    processor = AutoProcessor.from_pretrained(tiny_path)
    with torch.no_grad():
        model.lm_head.weight[100] = float("nan")  # tied: that token's logit is NaN at every position
    chat = processor.apply_chat_template(prompts.messages("receipt", False), add_generation_prompt=True, tokenize=False)
    with pytest.raises(NonFiniteLogits, match=r"samples \['r7', 'r8'\]: NaN/inf logits at generated token 0"):
        generate_batch(model, processor, [chat, chat], [Image.new("RGB", (120, 120), "white")] * 2, max_new_tokens=2,
                       min_pixels=4 * PIXELS, max_pixels=16 * PIXELS, sample_ids=["r7", "r8"])


@pytest.mark.parametrize("upcast", [True, False])
def test_a_4bit_model_with_fp32_upcast_generates_under_its_compute_dtype_on_cuda(tiny_path, upcast):
    from vlmsweep.config import ModelConfig, QuantConfig
    from vlmsweep.evaluate.generate import autocast_dtype
    from vlmsweep.model.load import load_base_model

    quant = QuantConfig(name="nf4", dtype="bfloat16", load_in_4bit=True, fp32_upcast=upcast, cpu_bf16="keep")
    model = load_base_model(ModelConfig(name="tiny"), quant, str(tiny_path))
    # fp32 vision, norms and embedding would otherwise run in plain float32 on the GPU (TF32 off)
    assert autocast_dtype(model, torch.device("cuda")) == (torch.bfloat16 if upcast else None)
    assert autocast_dtype(model, torch.device("cpu")) is None
