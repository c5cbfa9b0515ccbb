"""`python -m vlmsweep.export ADAPTER OUT`: a merged model folder (checked against the adapter) or a vLLM LoRA."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from vlmsweep.pipeline.export import CHECK_FILE, DTYPE_CHOICES, ExportMismatch, export_merged, vllm_lora


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vlmsweep.export",
                                description="Merge a run's adapter into its base for serving, and check the result.")
    p.add_argument("adapter", help="a run's adapter/ folder")
    p.add_argument("--out", required=True, help="the folder to write (replaced if it exists)")
    p.add_argument("--vllm-lora", action="store_true",
                   help="write the adapter alone in vLLM's LoRA layout instead of a merged model (language-model LoRA only)")
    p.add_argument("--check", type=int, default=3,
                   help="synthetic documents whose greedy answers the merged model must reproduce (default 3; 0: none)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                   help="the merged weights' dtype; auto (default): the one the adapter was trained and evaluated in "
                        "(recorded in its folder), which reproduces its answers; bfloat16/float16: a smaller folder, "
                        "checked the same way")
    p.add_argument("--max-new-tokens", type=int, default=384,
                   help="answer length of the check, and the saved generation config's max_new_tokens (default 384)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from vlmsweep.model.inference import GENERIC_MODEL, QUANT_OF_DTYPE

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s][%(levelname)s] - %(message)s", stream=sys.stderr)
    out = Path(args.out).expanduser().resolve()
    started = time.perf_counter()
    try:
        if args.vllm_lora:
            done = vllm_lora(Path(args.adapter), out)
            print(f"vlmsweep.export: vLLM LoRA adapter in {out} ({done['tensors']} tensors on "
                  f"{', '.join(done['target_modules'])}; serve with the base {done['base']} and --enable-lora)")
            return 0
        if args.check < 0 or args.max_new_tokens < 1:
            raise ValueError("--check must be 0 or more and --max-new-tokens at least 1")
        check = export_merged(Path(args.adapter), out, args.check, args.max_new_tokens, args.dtype)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ExportMismatch as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    n = len(check["documents"])
    print(f"vlmsweep.export: merged model in {out} ({check['dtype']}"
          f"{', dequantised ' + check['dequantised'] if check['dequantised'] else ''}); reloaded: {n} greedy answers "
          f"identical to the adapter's, largest logit difference {check['max_abs_logit_diff']:.2g} "
          f"(of logits up to {check['max_abs_logit']:.3g}); {CHECK_FILE} in {time.perf_counter() - started:.0f} s")
    print(f"vlmsweep.export: evaluate it as a checkpoint with the run's overrides: python -m vlmsweep "
          f"train.enabled=false model={GENERIC_MODEL} model.path={out} quant={QUANT_OF_DTYPE[check['dtype']]}")
    return 0
