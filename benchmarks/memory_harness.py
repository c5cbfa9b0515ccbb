"""Measure a training step's memory on the CPU beside the estimate (vlmsweep.model.memory): the harness that
benchmarks/bench_memory.py and tests/test_memory.py share. Builds a random model and runs AdamW steps."""

from __future__ import annotations

from typing import Any

from vlmsweep.model import memory
from vlmsweep.train.peak import measure


def measure_training_step(
    config_hf: Any, dtype, *, lora_r: int, batch_size: int, visual_tokens: int, text_tokens: int, supervised_tokens: int,
    loss_impl: str = "eager", loss_chunk: int = 128,
) -> tuple[int, int]:
    """(estimate, measured) bytes of two forward+backward+AdamW steps of a random model of this config on
    the CPU (LoRA r on the LLM, or lora_r=0: full fine-tune of the LLM). measured = exact tensor bytes of
    the built model + peak growth of the heap (anonymous RSS: vlmsweep.train.peak) during the steps (building is outside: it has its own transient).
    loss_impl: eager (logits of every supervised position at once) or chunked (vlmsweep.train.loss).
    A 16-bit step runs with oneDNN off: on a CPU with native bf16 (AVX512-BF16, AMX) oneDNN's bf16 kernels keep
    fp32 or reordered copies of their operands, which an accelerator's kernels do not hold (with them the tiny bf16
    case of tests/test_memory.py measured about 1.4x its estimate there); torch's own kernels hold what a GPU holds."""
    import torch

    if dtype != torch.float32:
        with torch.backends.mkldnn.flags(enabled=False):
            return _measure(config_hf, dtype, lora_r=lora_r, batch_size=batch_size, visual_tokens=visual_tokens,
                            text_tokens=text_tokens, supervised_tokens=supervised_tokens, loss_impl=loss_impl,
                            loss_chunk=loss_chunk)
    return _measure(config_hf, dtype, lora_r=lora_r, batch_size=batch_size, visual_tokens=visual_tokens,
                    text_tokens=text_tokens, supervised_tokens=supervised_tokens, loss_impl=loss_impl, loss_chunk=loss_chunk)


def _measure(
    config_hf: Any, dtype, *, lora_r: int, batch_size: int, visual_tokens: int, text_tokens: int, supervised_tokens: int,
    loss_impl: str, loss_chunk: int,
) -> tuple[int, int]:
    import gc as _gc

    import torch
    from transformers import Qwen2VLForConditionalGeneration
    from transformers.initialization import no_init_weights

    from vlmsweep.model.scope import LLM
    from vlmsweep.train.loss import chunked_linear_cross_entropy

    if loss_impl not in ("eager", "chunked"):
        raise ValueError(f"loss_impl={loss_impl!r}: the CPU harness measures eager or chunked")

    torch.manual_seed(0)
    quant = "fp32" if dtype == torch.float32 else "bf16"
    est = memory.estimate(config_hf, quant=quant, trainable_parts=["llm"], lora_r=lora_r, batch_size=batch_size,
                   text_tokens=text_tokens, visual_tokens=visual_tokens, supervised_tokens=supervised_tokens,
                   grad_checkpointing=False, loss_impl=loss_impl, loss_chunk=loss_chunk)  # fmt: skip
    with no_init_weights():  # random init of many parameters is slow; filling uniformly is not
        model = Qwen2VLForConditionalGeneration._from_config(config_hf, dtype=dtype)
    model.tie_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.02, 0.02)
    if lora_r:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05, target_modules=LLM))
        base = model.base_model.model
    else:
        base = model
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith("model.visual"))
    assert base.lm_head.weight is base.model.language_model.embed_tokens.weight
    tensors = sum(p.numel() * p.element_size() for p in model.parameters())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vis, text, sup = visual_tokens, text_tokens, supervised_tokens
    ids = torch.randint(0, 1000, (batch_size, text + vis))
    ids[:, 2 : 2 + vis] = config_hf.image_token_id
    grid = int((vis * 4) ** 0.5)  # vis visual tokens = 4*vis patches before the 2x2 merge
    pixels = torch.randn(batch_size * grid * grid, 3 * 2 * 14 * 14, dtype=dtype)
    thw = torch.tensor([[1, grid, grid]] * batch_size)
    _gc.collect()
    with measure("cpu", exact=True) as m:  # a fresh process that measures nothing else
        for _ in range(2):  # step 2 runs with the optimizer states alive
            hidden = base.model(input_ids=ids, pixel_values=pixels, image_grid_thw=thw,
                                mm_token_type_ids=(ids == config_hf.image_token_id).long()).last_hidden_state  # fmt: skip
            kept, labels = hidden[:, -sup:].flatten(0, 1), ids[:, -sup:].flatten()  # the supervised positions
            if loss_impl == "eager":
                loss = torch.nn.functional.cross_entropy(base.lm_head(kept).float(), labels)
            else:
                loss = chunked_linear_cross_entropy(kept, base.lm_head.weight, labels, loss_chunk) / len(labels)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            del hidden, kept, loss
    return est.total_bytes, tensors + m.peak_bytes
