"""Memory estimate: hand-counted parameters and bytes, and agreement with a measured CPU training step."""

from __future__ import annotations

import math
import re
import sys
import time
from pathlib import Path

import pytest
import torch

from vlmsweep.cli import memory as memory_cli
from vlmsweep.model import memory
from vlmsweep.model.memory import GiB, estimate, nf4_bits_per_param
from vlmsweep.model.tiny import shape_config
from vlmsweep.train.peak import measure


@pytest.fixture(scope="module")
def shape2b():
    return shape_config()


def mid_config():
    """h 256, 4 layers, the real 151,936 vocab (tied): weights (~40 M params) dominate a short step."""
    c = shape_config(
        hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        max_window_layers=4, rope_scaling={"type": "mrope", "mrope_section": [8, 12, 12], "rope_theta": 1e6},
    )  # fmt: skip
    v = c.vision_config
    v.depth, v.embed_dim, v.num_heads, v.mlp_ratio = 2, 128, 4, 2
    return c


def test_param_counts_of_the_2b_shape(shape2b):
    counts = memory.param_counts(shape2b)
    # Qwen2-VL-2B: 2.21 B parameters; the tied lm_head shares embed_tokens and is counted once.
    assert sum(counts.values()) == 2_208_985_600
    assert counts["lm_head"] == 0
    assert counts["llm.embed_tokens"] == 151936 * 1536
    # one vision block: LN 2x(2x1280) + qkv 1280x3840+3840 + proj 1280x1280+1280 + fc1 1280x5120+5120 + fc2 5120x1280+1280
    block = 2 * 2 * 1280 + (1280 * 3840 + 3840) + (1280 * 1280 + 1280) + (1280 * 5120 + 5120) + (5120 * 1280 + 1280)
    assert counts["vision.blocks"] == 32 * block


def test_nf4_storage_bits():
    assert nf4_bits_per_param(double_quant=False) == 4.5  # 4 bits + one fp32 absmax per 64 weights
    assert nf4_bits_per_param(double_quant=True) == pytest.approx(4 + 8 / 64 + 32 / (64 * 256))


def test_weights_by_precision(shape2b):
    n = 2_208_985_600
    assert estimate(shape2b, quant="bf16").weights_bytes == 2 * n
    assert estimate(shape2b, quant="fp32").weights_bytes == 4 * n
    # nf4: only the LLM's Linear weights go to 4 bits; per layer q,o 1536^2, k,v 256x1536, gate/up/down 3x1536x8960
    linear = 28 * (2 * 1536 * 1536 + 2 * 256 * 1536 + 3 * 1536 * 8960)
    nf4 = estimate(shape2b, quant="nf4", double_quant=False, kbit_fp32_upcast=False)
    assert nf4.weights_by_precision["nf4"] == math.ceil(linear * 4.5 / 8)
    assert nf4.weights_by_precision["16-bit"] == 2 * (n - linear)
    upcast = estimate(shape2b, quant="nf4", double_quant=False)  # peft's prepare_model_for_kbit_training
    assert upcast.weights_by_precision["fp32"] == 4 * (n - linear)
    vision_linear = 32 * (1280 * 3840 + 1280 * 1280 + 2 * 1280 * 5120) + (5120 * 5120 + 5120 * 1536)
    qv = estimate(shape2b, quant="nf4", double_quant=False, kbit_fp32_upcast=False, quantize_vision=True)
    assert qv.weights_by_precision["16-bit"] == 2 * (n - linear - vision_linear)


def test_lora_and_optimizer_bytes(shape2b):
    est = estimate(shape2b, quant="bf16", trainable_parts=["llm"], lora_r=16)
    # r * (in + out) per projection: q,o 2x(1536+1536), k,v 2x(1536+256), gate,up 2x(1536+8960), down 8960+1536
    per_layer = 16 * (2 * 3072 + 2 * 1792 + 3 * 10496)
    assert est.lora_params == 28 * per_layer == 18_464_768
    assert est.lora_bytes == est.gradients_bytes == 4 * est.lora_params  # fp32 adapters and grads
    assert est.optimizer_bytes == 8 * est.lora_params  # AdamW: two fp32 moments
    last4 = estimate(shape2b, quant="bf16", trainable_parts=["llm", "vision"], vision_last_n=4, lora_r=16)
    block = 16 * ((1280 + 3840) + (1280 + 1280) + 2 * (1280 + 5120))
    assert last4.lora_params == est.lora_params + 4 * block
    full = estimate(shape2b, quant="bf16", trainable_parts=["merger"], lora_r=0)
    assert full.trainable_params == 34_087_936 and full.gradients_bytes == 2 * 34_087_936
    with pytest.raises(ValueError, match="lora_r"):
        estimate(shape2b, quant="nf4", lora_r=0)


def test_activation_terms_move_the_right_way(shape2b):
    kw = dict(quant="bf16", lora_r=16, text_tokens=300, visual_tokens=1024)
    gc_on = estimate(shape2b, trainable_parts=["llm"], grad_checkpointing=True, **kw)
    gc_off = estimate(shape2b, trainable_parts=["llm"], grad_checkpointing=False, **kw)
    assert gc_off.activations_by_part["llm"] > 10 * gc_on.activations_by_part["llm"]
    # a frozen vision tower keeps no graph: only one block's working set, far less than training it
    frozen = gc_off.activations_by_part["vision"]
    trained = estimate(shape2b, trainable_parts=["llm", "merger", "vision"], grad_checkpointing=False, **kw)
    assert trained.activations_by_part["vision"] > 20 * frozen and gc_off.activations_by_part["merger"] == 0
    # logits only at the supervised positions: 200 answer tokens x vocab x (2 + 16) bytes
    assert estimate(shape2b, supervised_tokens=200, loss_impl="eager", **kw).logits_bytes == 200 * 151936 * 18
    # doubling the batch doubles every activation term
    b2 = estimate(shape2b, trainable_parts=["llm"], grad_checkpointing=False, batch_size=2, **kw)
    assert b2.activations_bytes == 2 * gc_off.activations_bytes


def test_logits_term_follows_the_loss_implementation(shape2b):
    """eager holds every supervised token's logits; chunked one chunk's (two fp32 buffers) and the hidden-state
    gradient; liger its own chunk (rows / ceil(vocab / hidden), a power of two); cce no vocabulary-wide buffer."""
    kw = dict(quant="bf16", trainable_parts=["llm"], lora_r=16, batch_size=2, text_tokens=300, supervised_tokens=200)
    by_impl = {impl: estimate(shape2b, loss_impl=impl, loss_chunk=64, **kw) for impl in ("eager", "chunked", "liger", "cce")}
    rows, vocab, h = 400, 151936, 1536
    assert by_impl["eager"].logits_bytes == rows * vocab * 18
    assert by_impl["chunked"].logits_bytes == 64 * vocab * 8 + rows * h * 2
    assert by_impl["liger"].logits_bytes == 8 * vocab * 2 + rows * h * 2  # ceil(400 / ceil(151936 / 1536)) = 5 -> 8
    assert by_impl["cce"].logits_bytes == rows * h * 2 + rows * 8
    for impl, est in by_impl.items():  # only the logits term moves
        assert est.total_bytes - by_impl["eager"].total_bytes == est.logits_bytes - by_impl["eager"].logits_bytes, impl
    assert by_impl["chunked"].settings["logits_rows"] == 64
    # a chunk larger than the batch's supervised tokens holds them all; a trained output layer adds its fp32
    # gradient accumulator (vocab x hidden) to the chunked loss
    assert estimate(shape2b, loss_impl="chunked", loss_chunk=4096, **kw).logits_bytes == rows * vocab * 8 + rows * h * 2
    full = dict(kw, lora_r=0)
    assert (estimate(shape2b, loss_impl="chunked", loss_chunk=64, **full).logits_bytes
            == 64 * vocab * 8 + rows * h * 2 + vocab * h * 4)
    with pytest.raises(ValueError, match="loss_impl='fused'"):
        estimate(shape2b, loss_impl="fused", **kw)


def test_bad_arguments_are_named(shape2b):
    with pytest.raises(ValueError, match="quant='int3'"):
        estimate(shape2b, quant="int3")
    with pytest.raises(ValueError, match="trainable_parts"):
        estimate(shape2b, quant="bf16", trainable_parts=["decoder"])


def test_measure_cpu_sees_an_allocation():
    with measure("cpu") as m:
        x = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
        time.sleep(0.1)  # the sampler reads RSS every 10 ms: a peak shorter than that can be missed
        del x
    assert 60 * 2**20 < m.peak_bytes < 90 * 2**20


def test_measure_cuda_reads_the_peak_while_the_block_runs(monkeypatch):
    # every training log line reads the peak inside the block (peak_memory_mb): it was 0.0 on CUDA until the end
    allocated = {"peak": 5 * 2**20}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2**20)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: allocated["peak"])
    with measure("cuda") as m:
        assert m.peak_bytes == 5 * 2**20
        allocated["peak"] = 7 * 2**20
        assert m.peak_bytes == 7 * 2**20
    allocated["peak"] = 9 * 2**20  # after the block: the block's figure stays
    assert m.peak_bytes == 7 * 2**20 and m.baseline_bytes == 2**20


def _in_fresh_process(config: str, dtype, **kwargs) -> tuple[int, int]:
    """measure_training_step(CONFIG, dtype, **kwargs) in a fresh process: peak heap growth in a test worker that
    earlier tests left with freed heap is not the step's own (the step reuses that memory, or the worker's allocator
    keeps what an earlier test freed): fp32-lora once measured 0.78x its estimate in a worker, and bf16-eager 1.45x
    in one suite's worker, where alone it measured within 25% in each of four runs. `config` is an expression: mid_config()
    (this module's) or tiny_config() (vlmsweep.model.tiny)."""
    import json
    import subprocess

    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    code = (f"import json, sys, torch; sys.path[:0] = [{str(Path(__file__).parent)!r}, "
            f"{str(Path(__file__).parent.parent / 'benchmarks')!r}]; torch.set_num_threads(1); "
            "from test_memory import mid_config; from vlmsweep.model.tiny import tiny_config; "
            "from memory_harness import measure_training_step; "
            f"print(json.dumps(measure_training_step({config}, torch.{str(dtype).split('.')[-1]}, {args})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600).stdout
    est, measured = json.loads(out.strip().splitlines()[-1])
    return est, measured


def _train_two_steps(dtype, lora: bool, batch: int) -> tuple[int, int]:
    return _in_fresh_process("mid_config()", dtype, lora_r=8 if lora else 0, batch_size=batch, visual_tokens=16,
                             text_tokens=48, supervised_tokens=32)


@pytest.mark.parametrize(
    "dtype,lora,batch",
    # bf16 + LoRA measured 0.79x on this CPU (CPU bf16 kernels' fp32 temporaries): in the README, not here
    # fp32 full fine-tune measured 0.997x as well; left out to keep the suite fast
    # bf16-full at batch 1: this CPU has no native bf16 (emulated, ~20x slower), and batch 2 cost a minute
    [(torch.float32, True, 2), (torch.bfloat16, False, 1)],
    ids=["fp32-lora", "bf16-full"],
)
@pytest.mark.slow
def test_estimate_within_25_percent_of_measured_cpu_step(dtype, lora, batch):
    est, measured = _train_two_steps(dtype, lora, batch)
    # the heap on the 2-core Intel Xeon, two fresh processes each: fp32-lora 298-299 MiB against 363 (the estimate
    # 1.22x: |est - measured| / measured 0.22), bf16-full 557 against 477 (0.86x)
    assert abs(est - measured) / measured < 0.25, f"estimate {est / 2**20:.0f} MiB vs measured {measured / 2**20:.0f} MiB"


# fp32: the default loss (chunked, 4 chunks of 64 of the 256 supervised tokens), whose logits term is one chunk;
# bf16: eager at batch 1 (chunked bf16 measured 0.72x on this CPU: its bf16 matmuls' temporaries, in the README)
@pytest.mark.parametrize(
    "dtype,loss_impl,batch,supervised",
    [(torch.float32, "chunked", 2, 128), (torch.bfloat16, "eager", 1, 48)],
    ids=["fp32-chunked", "bf16-eager"],
)
@pytest.mark.slow
def test_estimate_within_40_percent_for_the_tiny_model(dtype, loss_impl, batch, supervised):
    est, measured = _in_fresh_process("tiny_config()", dtype, lora_r=16, batch_size=batch, visual_tokens=64,
                                      text_tokens=supervised + 32, supervised_tokens=supervised, loss_impl=loss_impl,
                                      loss_chunk=64)
    # Measured is the heap (anonymous RSS, vlmsweep.train.peak): the whole RSS also held the 30-50 MiB of torch's
    # library code the first backward pass pages in, which put both cases 1.33-1.45x above the estimate on the 2-core
    # Intel Xeon (CI failed once at 1.42x, 239 against 168 MiB). The heap alone, fresh processes on the quiet machine:
    # fp32-chunked 171-175 MiB against 166 (1.03-1.05x), bf16-eager 156-212 against 168 (0.93-1.26x, the allocator's
    # run-to-run spread; the kernel's peak counter agrees with the sampler). The bound keeps room for that spread.
    high = 1.40
    assert 0.8 < measured / est < high, f"estimate {est / 2**20:.0f} MiB vs measured {measured / 2**20:.0f} MiB"


def test_qwen2_5_vl_estimate_reads_the_family_from_the_model_config():
    """Qwen2.5-VL-3B (its release config, no weights): parameters, LoRA targets from the scope module (SwiGLU
    vision MLP included), and activations of its gated vision blocks, each against a hand count."""
    from vlmsweep.model.shapes import QWEN2_5_VL_3B, parse

    c = parse(QWEN2_5_VL_3B)
    assert memory.family(c) == "qwen2_5_vl" and memory.family(shape_config()) == "qwen2_vl"
    counts = memory.param_counts(c)
    # one vision block: RMSNorms 2x1280 + qkv 1280x3840+3840 + proj 1280x1280+1280 + gate/up 2x(1280x3420+3420)
    # + down 3420x1280+1280; 32 blocks
    block = 2 * 1280 + (1280 * 3840 + 3840) + (1280 * 1280 + 1280) + 2 * (1280 * 3420 + 3420) + (3420 * 1280 + 1280)
    assert counts["vision.blocks"] == 32 * block
    assert counts["llm.embed_tokens"] == 151936 * 2048 and counts["lm_head"] == 0  # tied
    assert sum(counts.values()) == 3_754_622_976  # the release's 3.75 B
    llm = estimate(c, quant="bf16", trainable_parts=["llm"], lora_r=16)
    # per layer: q,o 2x(2048+2048), k,v 2x(2048+256), gate,up 2x(2048+11008), down 11008+2048; 36 layers
    assert llm.lora_params == 36 * 16 * (2 * 4096 + 2 * 2304 + 3 * 13056)
    everything = estimate(c, quant="bf16", trainable_parts=["llm", "merger", "vision"], lora_r=16)
    vision_block = 16 * ((1280 + 3840) + (1280 + 1280) + 2 * (1280 + 3420) + (3420 + 1280))
    merger = 16 * ((5120 + 5120) + (5120 + 2048))
    assert everything.lora_params == llm.lora_params + 32 * vision_block + merger
    # a trained gated vision tower keeps gate, up, SiLU and product per patch: more than the Qwen2-VL count
    # for the same sizes would (fc1 + GELU's two)
    kw = dict(quant="bf16", trainable_parts=["vision"], lora_r=0, grad_checkpointing=False, visual_tokens=256)
    act = estimate(c, **kw).activations_by_part["vision"]
    per_patch = memory._vision_block_bytes(1280, 3420, 16, 1024, 2, "sdpa", gated=True)
    assert act == 1024 * 32 * per_patch
    assert per_patch - memory._vision_block_bytes(1280, 3420, 16, 1024, 2, "sdpa") == 2 * 3420 + (2 * 4 * 1280 + 2 * 2 * 1280 - 2 * 2 * 2 * 1280)


def test_a_run_logs_a_qwen2_5_vl_estimate_and_a_failed_estimate_says_why(caplog):
    """The run's estimate stage on a Qwen2.5-VL config (before: silently missing); an estimate that fails is a
    warning naming the error, and the run goes on."""
    import logging
    from types import SimpleNamespace

    from conftest import FAST, compose
    from vlmsweep.model.shapes import QWEN2_5_VL_3B, parse
    from vlmsweep.pipeline.stages import estimate_stage

    cfg = compose(FAST + ["model=qwen2_5_vl_3b"])

    class Tok:
        def __call__(self, text):
            return {"input_ids": text.split()}

    from vlmsweep.data import Record, empty_target

    records = [Record(id="r", image=Path("x.png"), domain="prescription_ko", target=empty_target("prescription"),
                      image_domain="prescription_ko")]
    base = SimpleNamespace(config=parse(QWEN2_5_VL_3B))
    est = estimate_stage(cfg, base, SimpleNamespace(tokenizer=Tok()), records)
    assert est["memory.estimate.lora_params"] == 36 * 16 * (2 * 4096 + 2 * 2304 + 3 * 13056)
    with caplog.at_level(logging.WARNING):
        assert estimate_stage(cfg, SimpleNamespace(config=SimpleNamespace(model_type="llava")),
                              SimpleNamespace(tokenizer=Tok()), records) == {}
    assert "memory estimate failed (the run goes on without one): ValueError: model_type='llava'" in caplog.text


def test_cli_takes_the_runs_overrides(capsys):
    """`python -m vlmsweep.memory OVERRIDES` estimates the config `python -m vlmsweep OVERRIDES` trains."""
    assert memory_cli.main(["model=qwen2_5_vl_3b", "lora.r=8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model=qwen2_5_vl_3b (qwen2_5_vl), quant=bf16, scope=llm, LoRA r=8")
    assert f"LoRA weights   {36 * 8 * 51968 * 4 / GiB:>8.3f}" in out  # 36 layers x r x (in + out), fp32
    assert memory_cli.main(["+experiment=exp2", "max_pixels=1024tok"]) == 0
    out = capsys.readouterr().out
    assert "model=qwen2_vl_2b_bnb4 (qwen2_vl), quant=nf4, scope=all" in out and "1024 visual" in out
    # both loss implementations: the run's (chunked, in the table) and eager, whose logits are batch x 200 x vocab
    assert "loss_impl=chunked, 128 at a time" in out
    eager = re.search(r"train.loss_impl=eager instead: logits ([\d.]+) GiB, total ([\d.]+) GiB", out)
    total = float(re.search(r"^total +([\d.]+)", out, re.M).group(1))
    assert eager and float(eager.group(1)) == pytest.approx(4 * 200 * 151936 * 18 / GiB, abs=1e-3)
    assert float(eager.group(2)) > total + 1.5
    assert "the plan's estimate for exp2: ~12 GB" in out
    assert memory_cli.main(["lora.rr=3"]) == 2
    assert "unknown config key 'lora.rr', did you mean lora.r" in capsys.readouterr().err
    assert memory_cli.main(["model=qwen2_vl_2b", "model.path=/nowhere"]) == 2
    assert "model.path=/nowhere: no config.json there" in capsys.readouterr().err


def test_the_plans_experiments_estimate():
    est = memory.experiment_estimates()
    eager = memory.experiment_estimates(loss_impl="eager")
    for exp in est:  # the chunked loss drops (almost all of) the logits term, nothing else
        assert eager[exp].total_bytes - est[exp].total_bytes == eager[exp].logits_bytes - est[exp].logits_bytes
        assert est[exp].logits_bytes < 0.3 * eager[exp].logits_bytes
    assert est["exp1"].weights_bytes < est["exp3"].weights_bytes  # 4-bit LLM weights
    assert est["exp2"].total_bytes > est["exp1"].total_bytes  # training the vision tower costs memory
    assert 3 * GiB < est["exp1"].total_bytes < 12 * GiB
