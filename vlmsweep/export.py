"""`python -m vlmsweep.export ADAPTER_DIR --out DIR`: the adapter merged into its base, saved for serving, and checked.

The merged folder is a standard `from_pretrained` folder (weights, config, the adapter's processor at the run's
pixel budget, a greedy generation config, and vlmsweep_adapter.json so `predict` asks what training taught).
A 4-bit base is dequantised to the compute dtype before the merge (peft would otherwise re-quantise the merged
weights, rounding the LoRA update away). After saving, the folder is reloaded and its greedy outputs on a few
documents must equal the adapter's: `export_check.json` holds both, with the largest logit difference.

`--vllm-lora` writes the adapter alone in the layout vLLM loads for Qwen2-VL (its LoRA covers the language
model only), and refuses an adapter with LoRA on the vision tower or merger: that one must be merged.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import torch


log = logging.getLogger("vlmsweep.export")
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)  # see vlmsweep/__main__.py

CHECK_FILE = "export_check.json"
CHECK_DOMAINS = ("prescription_ko", "prescription_zh", "receipt")  # the documents the check renders, in turn
CHECK_SEED = 9_000_000  # far from the training streams' seeds (data.mix.sample_seed): never a training page


class ExportMismatch(RuntimeError):
    """The reloaded merged model answers differently from the adapter: the folder must not be served."""


# ----------------------------------------------------------------------------- check documents


def check_documents(n: int) -> list[tuple[str, str, object]]:
    """(id, domain, image): synthetic documents rendered in memory, one domain after another."""
    from vlmsweep.data import render_sample

    docs = []
    for i in range(n):
        domain = CHECK_DOMAINS[i % len(CHECK_DOMAINS)]
        docs.append((f"check-{i}-{domain}", domain, render_sample(CHECK_SEED + i, domain).image))
    return docs


@torch.inference_mode()
def answers(model, processor, settings, docs, max_new_tokens: int) -> tuple[list[str], torch.Tensor]:
    """Greedy free-decoding answers (evaluation's generate_batch) and the first answer token's logits."""
    from vlmsweep.evaluate.generate import generate_batch

    texts = [settings.chat_text(processor, d) for _, d, _ in docs]
    images = [img for _, _, img in docs]
    gens = generate_batch(model, processor, texts, images, max_new_tokens=max_new_tokens,
                          min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)
    size = {"shortest_edge": settings.min_pixels, "longest_edge": settings.max_pixels}
    inputs = processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt", size=size)
    inputs = inputs.to(next(model.parameters()).device)
    logits = model(**inputs).logits[:, -1, :].float().cpu()
    return [g.text for g in gens], logits


# ----------------------------------------------------------------------------- merge


def is_four_bit(model) -> bool:
    return getattr(model, "hf_quantizer", None) is not None or bool(getattr(model, "is_loaded_in_4bit", False))


def merged_model(adapter: Path):
    """The adapter's base (dequantised from 4-bit to the compute dtype when it is 4-bit), the adapter merged in."""
    from peft import PeftModel

    from vlmsweep.model.inference import open_folder
    from vlmsweep.model.quant import torch_dtype

    opened = open_folder(adapter, with_adapter=False)
    base, dtype = opened.model, torch_dtype(opened.cfg.quant)
    dequantised = None
    if is_four_bit(base):
        # transformers' dequantize (bitsandbytes' own dequantisation): the merge then adds the LoRA update to the
        # very weights the 4-bit layers computed with, in `dtype`, instead of re-quantising the sum.
        # bitsandbytes dequantises into the checkpoint's compute dtype (the dtype the 4-bit layers computed in).
        saved = getattr(base.config, "quantization_config", None)
        computed = (saved.get if isinstance(saved, dict) else lambda k, d: getattr(saved, k, d))("bnb_4bit_compute_dtype", dtype)
        base = base.dequantize(dtype=dtype)
        steps = dict.fromkeys(str(d).removeprefix("torch.") for d in (computed, dtype))
        dequantised = f"4-bit {opened.cfg.quant.quant_type} -> {' -> '.join(steps)}"
    base = base.to(dtype)
    model = PeftModel.from_pretrained(base, str(opened.folder)).merge_and_unload()
    model.eval()
    return model, opened, dequantised


def save_merged(model, opened, out: Path, max_new_tokens: int, dequantised: str | None) -> None:
    from vlmsweep.evaluate.generate import eval_generation_config
    from vlmsweep.model import adapter as model_adapter

    config = model.config
    if getattr(config, "quantization_config", None) is not None:  # dequantised: nothing is 4-bit any more
        del config.quantization_config
    model.generation_config = eval_generation_config(opened.processor.tokenizer, max_new_tokens)  # greedy
    model.save_pretrained(out)
    opened.processor.save_pretrained(out)  # the adapter's processor: the run's pixel budget, not the release's
    info = dict(opened.info)
    info["merged"] = {"adapter": str(opened.folder), "base": info.pop("base"), "dequantised": dequantised,
                      "dtype": str(model.dtype).removeprefix("torch.")}
    (out / model_adapter.INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def export_merged(adapter: Path, out: Path, checks: int, max_new_tokens: int) -> dict:
    """Merge, save, reload, compare; returns (and writes) the check. Raises ExportMismatch on a difference."""
    from vlmsweep.model.inference import open_folder

    reference = open_folder(adapter)  # the adapter on its base, exactly as predict and evaluation load it
    docs = check_documents(checks)
    ref_text, ref_logits = answers(reference.model, reference.processor, reference.settings, docs, max_new_tokens) \
        if docs else ([], None)
    del reference
    model, opened, dequantised = merged_model(adapter)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_merged(model, opened, tmp, max_new_tokens, dequantised)
    del model
    reloaded = open_folder(tmp)  # a plain from_pretrained of the written folder
    got_text, got_logits = answers(reloaded.model, reloaded.processor, reloaded.settings, docs, max_new_tokens) \
        if docs else ([], None)
    scale = float(ref_logits.abs().max()) if docs else 0.0
    diff = float((got_logits - ref_logits).abs().max()) if docs else 0.0
    check = {
        "adapter": str(opened.folder),
        "dequantised": dequantised,
        "dtype": str(reloaded.model.dtype).removeprefix("torch."),
        "documents": [{"id": i, "domain": d, "adapter": a, "merged": m, "equal": a == m}
                      for (i, d, _), a, m in zip(docs, ref_text, got_text)],
        "greedy_equal": ref_text == got_text,
        "max_new_tokens": max_new_tokens,
        "max_abs_logit_diff": diff,
        "max_abs_logit": scale,
        "tolerance": "greedy answers identical, token for token; the logit difference is reported, not bounded",
    }
    (tmp / CHECK_FILE).write_text(json.dumps(check, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if not check["greedy_equal"]:
        differ = [d["id"] for d in check["documents"] if not d["equal"]]
        raise ExportMismatch(
            f"the merged model answers {differ} differently from the adapter (largest logit difference {diff:.3g}); "
            f"the folder is left at {tmp} with {CHECK_FILE}, not at {out}"
        )
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return check


# ----------------------------------------------------------------------------- vLLM adapter


# vLLM maps Qwen2-VL checkpoint names `model.` (the release's layout) and `model.language_model.` (transformers
# >= 4.52) onto its language model alike (Qwen2VLForConditionalGeneration.hf_to_vllm_mapper); peft's
# `base_model.model.` prefix is stripped by vLLM's LoRA loader. The release's own names are what every vLLM
# version with Qwen2-VL LoRA reads, so the adapter is written under them.
TRANSFORMERS5_LLM = "base_model.model.model.language_model."
RELEASE_LLM = "base_model.model.model."


def vllm_lora(adapter: Path, out: Path) -> dict:
    from safetensors.torch import load_file, save_file

    adapter = Path(adapter).expanduser().resolve()
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter}: no adapter_config.json there; --vllm-lora takes a run's adapter/ folder")
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    outside = sorted({k.split(".lora_")[0] for k in weights if not k.startswith(TRANSFORMERS5_LLM)})
    if outside or config.get("modules_to_save"):
        what = outside[:3] if outside else config["modules_to_save"]
        raise ValueError(
            f"{adapter} trains modules outside the language model ({len(outside) or len(what)}, e.g. {', '.join(what)}): "
            "vLLM's LoRA for Qwen2-VL covers the language model only, so this adapter cannot be served as a LoRA. "
            f"Serve the merged model instead: python -m vlmsweep.export {adapter} --out DIR"
        )
    renamed = {RELEASE_LLM + k[len(TRANSFORMERS5_LLM):]: v.contiguous() for k, v in weights.items()}
    leaves = sorted({k.split(".lora_")[0].rsplit(".", 1)[1] for k in renamed})
    config["target_modules"] = leaves  # a list of layer names, as vLLM expects (not the training regex)
    out.mkdir(parents=True, exist_ok=True)
    save_file(renamed, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    for name in (adapter / "vlmsweep_adapter.json",):
        if name.is_file():
            shutil.copyfile(name, out / name.name)
    return {"tensors": len(renamed), "target_modules": leaves, "base": config.get("base_model_name_or_path")}


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vlmsweep.export",
                                description="Merge a run's adapter into its base for serving, and check the result.")
    p.add_argument("adapter", help="a run's adapter/ folder")
    p.add_argument("--out", required=True, help="the folder to write (replaced if it exists)")
    p.add_argument("--vllm-lora", action="store_true",
                   help="write the adapter alone in vLLM's LoRA layout instead of a merged model (language-model LoRA only)")
    p.add_argument("--check", type=int, default=3,
                   help="synthetic documents whose greedy answers the merged model must reproduce (default 3; 0: none)")
    p.add_argument("--max-new-tokens", type=int, default=384,
                   help="answer length of the check, and the saved generation config's max_new_tokens (default 384)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
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
        check = export_merged(Path(args.adapter), out, args.check, args.max_new_tokens)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
