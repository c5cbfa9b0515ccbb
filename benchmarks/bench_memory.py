"""Memory estimate vs measurement on the CPU, and the estimate's variants for the plan's experiments.

    python benchmarks/bench_memory.py              # tiny + the real 2B shape (needs ~12 GB of RAM, ~5 min)
    python benchmarks/bench_memory.py --only tiny
    python benchmarks/bench_memory.py --estimates-only   # the plan's experiments per loss implementation (seconds)

Measured = tensor bytes of the built model + peak RSS growth over two forward+backward+AdamW steps
(benchmarks/memory_harness.py): LoRA r=16 on the LLM, batch 1, logits at the supervised positions, with the
eager loss (every supervised token's logits at once) and the chunked one (train.loss_chunk=128 rows at a time).
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from memory_harness import measure_training_step  # benchmarks/memory_harness.py, beside this script
from vlmsweep.model.memory import GiB, estimate
from vlmsweep.model.tiny import shape_config, tiny_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("tiny", "shape"), default=None)
    ap.add_argument("--visual-tokens", type=int, default=64)
    ap.add_argument("--text-tokens", type=int, default=128)
    ap.add_argument("--supervised-tokens", type=int, default=96)
    ap.add_argument("--loss-impls", type=lambda v: v.split(","), default=["eager", "chunked"], help="eager,chunked")
    ap.add_argument("--estimates-only", action="store_true", help="print the experiments' estimates, measure nothing")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU RSS")
    print(f"step: LoRA r=16 on the LLM, batch 1, {args.visual_tokens} visual + {args.text_tokens} text tokens, "
          f"{args.supervised_tokens} supervised")
    print(f"{'model':<6} {'dtype':<9} {'loss':<8} {'estimate GiB':>12} {'measured GiB':>12} {'est/meas':>9}")
    for name, config in (("tiny", tiny_config), ("shape", shape_config)):
        if args.only and args.only != name or args.estimates_only:
            continue
        for dtype in (torch.float32, torch.bfloat16):
            for loss_impl in args.loss_impls:
                est, measured = measure_training_step(
                    config(), dtype, lora_r=16, batch_size=1, visual_tokens=args.visual_tokens,
                    text_tokens=args.text_tokens, supervised_tokens=args.supervised_tokens, loss_impl=loss_impl,
                )
                print(f"{name:<6} {str(dtype).split('.')[-1]:<9} {loss_impl:<8} {est / GiB:>12.3f} {measured / GiB:>12.3f} "
                      f"{est / measured:>9.2f}", flush=True)

    # The plan's experiments on the 2B shape (1024 visual + 300 text tokens, all supervised, batch 1, LoRA r=16):
    # the estimate per loss implementation, and (chunked) without peft's fp32 upcast or gradient checkpointing.
    shape = shape_config()
    print("\nestimate, Qwen2-VL-2B shape, 1024 visual + 300 text tokens (all supervised), batch 1, LoRA r=16 (GiB)")
    print(f"{'exp':<5} {'quant':<5} {'scope':<5} {'weights':>8} {'LoRA+grad+optim':>15} {'activations':>11} "
          f"{'logits eager':>12} {'logits chunked':>14} {'total eager':>11} {'total chunked':>13} {'total liger':>11} "
          f"{'total cce':>9} {'no upcast':>10} {'no checkpointing':>17}")
    for exp, quant, parts in (("exp1", "nf4", ["llm"]), ("exp2", "nf4", ["llm", "merger", "vision"]),
                              ("exp3", "bf16", ["llm"]), ("exp4", "bf16", ["llm", "merger", "vision"])):
        kw = dict(quant=quant, trainable_parts=parts, lora_r=16, batch_size=1, text_tokens=300, visual_tokens=1024)
        by_impl = {impl: estimate(shape, grad_checkpointing=True, loss_impl=impl, **kw)
                   for impl in ("eager", "chunked", "liger", "cce")}
        default = by_impl["chunked"]
        no_upcast = estimate(shape, grad_checkpointing=True, kbit_fp32_upcast=False, **kw).total_bytes
        no_ckpt = estimate(shape, grad_checkpointing=False, **kw).total_bytes
        scope = "llm" if parts == ["llm"] else "all"
        trained = default.lora_bytes + default.gradients_bytes + default.optimizer_bytes
        print(f"{exp:<5} {quant:<5} {scope:<5} {default.weights_bytes / GiB:>8.2f} {trained / GiB:>15.2f} "
              f"{default.activations_bytes / GiB:>11.2f} {by_impl['eager'].logits_bytes / GiB:>12.2f} "
              f"{default.logits_bytes / GiB:>14.2f} {by_impl['eager'].total_bytes / GiB:>11.2f} "
              f"{default.total_bytes / GiB:>13.2f} {by_impl['liger'].total_bytes / GiB:>11.2f} "
              f"{by_impl['cce'].total_bytes / GiB:>9.2f} {no_upcast / GiB:>10.2f} {no_ckpt / GiB:>17.2f}")


if __name__ == "__main__":
    main()
