"""`python -m vlmsweep.export ADAPTER_DIR --out DIR`: the adapter merged into its base, saved for serving, and checked.

The merged folder is a standard `from_pretrained` folder (weights, config, the adapter's processor at the run's
pixel budget, a greedy generation config, and vlmsweep_adapter.json so `predict` asks what training taught).
It is merged and saved in the dtype the adapter was trained and evaluated in (vlmsweep_adapter.json's
`precision.weights`; `--dtype` picks a smaller one): a float32 run merged into bfloat16 weights answers
differently. A 4-bit base is dequantised to that dtype before the merge (peft would otherwise re-quantise the
merged weights, rounding the LoRA update away). After saving, the folder is reloaded and its greedy outputs on a
few documents must equal the adapter's (computed in its own dtype): `export_check.json` holds both, with the
largest logit difference. When they differ, the other dtypes are tried in memory and the error names the one
that reproduces the answers, if any.

`--vllm-lora` writes the adapter alone in the layout vLLM loads for Qwen2-VL (its LoRA covers the language
model only), and refuses an adapter with LoRA on the vision tower or merger: that one must be merged.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from vlmsweep.files import write_json
from vlmsweep.model.quant import DTYPES

log = logging.getLogger("vlmsweep.pipeline.export")
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)  # see vlmsweep/cli/main.py

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


DTYPE_CHOICES = ("auto", *DTYPES)  # auto: the adapter's own (trained_dtype)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def trained_dtype(opened) -> str:
    """The dtype of the weights the adapter was trained and evaluated on, as its folder records it; an adapter
    folder written before that was recorded: the dtype its quant option computes in here (logged)."""
    from vlmsweep.model.quant import torch_dtype

    recorded = ((opened.info or {}).get("precision") or {}).get("weights")
    if recorded:
        return recorded
    guess = dtype_name(torch_dtype(opened.cfg.quant))
    log.warning("%s records no precision (written by an older vlmsweep): merging in %s, the dtype quant=%s computes "
                "in here; pass --dtype to choose", opened.folder, guess, opened.cfg.quant.name)
    return guess


def serving_dtype(name: str) -> torch.dtype:
    """What a folder saved in `name` computes in when predict or evaluation loads it here (bfloat16 computes in
    float32 on the CPU unless quant.cpu_bf16=keep, vlmsweep.model.quant.torch_dtype)."""
    from vlmsweep.config import QuantConfig
    from vlmsweep.model.quant import torch_dtype

    return torch_dtype(QuantConfig(name=name, dtype=name))


def merged_model(adapter: Path, dtype: torch.dtype):
    """The adapter's base (dequantised from 4-bit into `dtype` when it is 4-bit), the adapter merged in, in `dtype`."""
    from peft import PeftModel

    from vlmsweep.model.inference import open_folder

    opened = open_folder(adapter, with_adapter=False)
    base = opened.model
    dequantised = None
    if is_four_bit(base):
        # transformers' dequantize (bitsandbytes' own dequantisation): the merge then adds the LoRA update to the
        # very weights the 4-bit layers computed with, in `dtype`, instead of re-quantising the sum.
        # bitsandbytes dequantises into the checkpoint's compute dtype (the dtype the 4-bit layers computed in).
        saved = getattr(base.config, "quantization_config", None)
        computed = (saved.get if isinstance(saved, dict) else lambda k, d: getattr(saved, k, d))("bnb_4bit_compute_dtype", dtype)
        base = base.dequantize(dtype=dtype)
        steps = dict.fromkeys(dtype_name(d) if isinstance(d, torch.dtype) else str(d).removeprefix("torch.")
                              for d in (computed, dtype))
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
                      "dtype": dtype_name(model.dtype), "adapter_precision": info.pop("precision", None)}
    write_json(out / model_adapter.INFO_FILE, info)


def compared(docs, ref_text, ref_logits, text, logits) -> dict:
    """How a model's answers on the check documents compare with the adapter's."""
    differ = [i for (i, _, _), a, m in zip(docs, ref_text, text) if a != m]
    diff = float((logits - ref_logits).abs().max()) if docs else 0.0
    return {"greedy_equal": not differ, "differ": differ, "max_abs_logit_diff": diff}


def other_dtypes(adapter: Path, tried: str, trained: str, docs, ref, max_new_tokens: int) -> dict[str, dict]:
    """The adapter's own dtype, then float32, merged in memory and computed as a reload of that folder would be:
    {dtype: comparison}, stopping at the first that reproduces the adapter's answers."""
    found: dict[str, dict] = {}
    for name in dict.fromkeys((trained, "float32")):
        if name == tried:
            continue
        model, opened, _ = merged_model(adapter, DTYPES[name])
        model = model.to(serving_dtype(name))
        found[name] = compared(docs, *ref, *answers(model, opened.processor, opened.settings, docs, max_new_tokens))
        del model
        if found[name]["greedy_equal"]:
            break
    return found


def mismatch_message(dtype: str, trained: str, computed: str, check: dict, others: dict[str, dict]) -> str:
    first = (f"the merged model in {dtype} answers {check['differ']} differently from the adapter (largest logit "
             f"difference {check['max_abs_logit_diff']:.3g}, of logits up to {check['max_abs_logit']:.3g})")
    passing = [n for n, c in others.items() if c["greedy_equal"]]
    if passing:
        name = passing[0]
        return (f"{first}; merged in {name} it answers them all alike (largest logit difference "
                f"{others[name]['max_abs_logit_diff']:.2g}): export with --dtype {name}"
                + (" (the dtype the adapter was trained in)" if name == trained else ""))
    tried = "; ".join(f"{n}: {len(c['differ'])} differ, largest logit difference {c['max_abs_logit_diff']:.3g}"
                      for n, c in others.items())
    why = (f"The adapter computed in {computed}: its LoRA output, rounded apart from the base's, is not reproducible "
           f"by one merged weight. Serve the adapter itself (predict on the adapter folder, or --vllm-lora), or train "
           "with quant=fp32 for a merge that answers alike") if computed != "float32" else \
        f"The adapter computed in float32, so the merge itself is at fault: see {CHECK_FILE}"
    return f"{first}; " + (f"no other dtype reproduces them either ({tried})" if tried else
                           "float32 is the widest dtype") + f". {why}"


def merge_warning(computed: str) -> str | None:
    """Said before merging an adapter that computed in 16-bit: its check is expected to fail (mismatch_message's why),
    and the user should know that before a merge of a 2B model, not after it."""
    if computed == "float32":
        return None
    return (f"the adapter computed in {computed}: a merged weight rounds its LoRA update apart from how the adapter "
            "computed it, so the merged model is expected to answer some documents differently (ExportMismatch after "
            "the merge). Serving the adapter itself (predict on the adapter folder, or --vllm-lora) needs no merge; "
            "quant=fp32 training merges alike. Merging to check")


def export_merged(adapter: Path, out: Path, checks: int, max_new_tokens: int, dtype: str = "auto") -> dict:
    """Merge in `dtype` (auto: the adapter's own), save, reload, compare; returns (and writes) the check.
    Raises ExportMismatch on a difference, naming the dtype that reproduces the adapter's answers if one does."""
    from vlmsweep.model.inference import open_folder
    from vlmsweep.model.quant import torch_dtype

    reference = open_folder(adapter)  # the adapter on its base, in its dtype, exactly as predict loads it
    trained = trained_dtype(reference)
    computed = dtype_name(torch_dtype(reference.cfg.quant))
    chosen = trained if dtype == "auto" else dtype
    docs = check_documents(checks)
    ref = answers(reference.model, reference.processor, reference.settings, docs, max_new_tokens) \
        if docs else ([], None)
    del reference
    if (warning := merge_warning(computed)) is not None:
        log.warning(warning)
    model, opened, dequantised = merged_model(adapter, DTYPES[chosen])
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_merged(model, opened, tmp, max_new_tokens, dequantised)
    del model
    reloaded = open_folder(tmp)  # a plain from_pretrained of the written folder, in its own dtype
    got_text, got_logits = answers(reloaded.model, reloaded.processor, reloaded.settings, docs, max_new_tokens) \
        if docs else ([], None)
    check = {
        "adapter": str(opened.folder),
        "dequantised": dequantised,
        "dtype": chosen,  # the folder's weights
        "computed_in": dtype_name(reloaded.model.dtype),  # the reload's, here
        "adapter_dtype": {"weights": trained, "compute": computed},
        "documents": [{"id": i, "domain": d, "adapter": a, "merged": m, "equal": a == m}
                      for (i, d, _), a, m in zip(docs, ref[0], got_text)],
        "max_new_tokens": max_new_tokens,
        "max_abs_logit": float(ref[1].abs().max()) if docs else 0.0,
        "tolerance": "greedy answers identical, token for token; the logit difference is reported, not bounded",
    }
    check |= compared(docs, *ref, got_text, got_logits) if docs else {"greedy_equal": True, "differ": [],
                                                                      "max_abs_logit_diff": 0.0}
    del reloaded
    if not check["greedy_equal"]:
        check["other_dtypes"] = other_dtypes(adapter, chosen, trained, docs, ref, max_new_tokens)
    write_json(tmp / CHECK_FILE, check)
    if not check["greedy_equal"]:
        raise ExportMismatch(f"{mismatch_message(chosen, trained, computed, check, check['other_dtypes'])}. The "
                             f"folder is left at {tmp} with {CHECK_FILE}, not at {out}")
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
    write_json(out / "adapter_config.json", config, ensure_ascii=True)  # as peft writes it
    for name in (adapter / "vlmsweep_adapter.json",):
        if name.is_file():
            shutil.copyfile(name, out / name.name)
    return {"tensors": len(renamed), "target_modules": leaves, "base": config.get("base_model_name_or_path")}


# ----------------------------------------------------------------------------- CLI
