"""Evaluation: generate answers, score the JSON contract and the content, tag failures, write the run's files.

Scoring (`score_outputs`) is pure and imports no torch, so it scores any system's outputs; `evaluate`
and `check_schemas_compile` import the generation code (torch, xgrammar) only when called.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

from vlmsweep import prompts
from vlmsweep.evaluate.grounding import add_chance
from vlmsweep.evaluate.metrics import METRICS, MetricInfo, TAGS, aggregate, metric_info, score_sample

__all__ = [
    "METRICS",
    "MetricInfo",
    "TAGS",
    "metric_info",
    "score_outputs",
    "evaluate",
    "check_schemas_compile",
]

log = logging.getLogger(__name__)

SAMPLE_FIELDS = ("id", "domain", "image_domain", "origin", "target")


def _field(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, dict):
        return record.get(name, default)
    return getattr(record, name, default)


def _load_schema(name: str) -> dict:
    from vlmsweep.data.schema import load_schema

    return load_schema(name)


def score_outputs(
    raws: Sequence[Any],
    records: Sequence[Any],
    prompts_used: Sequence[str] | None = None,
    *,
    domain_tag: bool = False,
    leakage_keywords: Sequence[str] = (),
    stop_reasons: Sequence[str | None] | None = None,
    costs: Sequence[dict[str, float]] | None = None,
    schemas: dict[str, dict] | None = None,
    input_errors: Sequence[str | None] | None = None,
    perturb: tuple[float, float, int] | None = None,
) -> tuple[dict[str, float], list[dict]]:
    """Score outputs of any system against records (Record objects or dicts with id, domain, target and
    optionally image_domain, origin, unannotated). `prompts_used`: the instruction each output answered
    (default: prompts.instruction(domain, domain_tag)). `costs`: per sample {seconds, visual_tokens,
    output_tokens}. `input_errors`: per sample, why its image could not be read (None: it was read).
    `perturb`: (digit_flip share, blank share, seed) of a positive control (vlmsweep/evaluate/perturb.py): the outputs are
    scored as perturbed, and each sample keeps its clean output, scores and tags under "clean".
    Returns (metrics.json dict, samples.jsonl records)."""
    if len(raws) != len(records):
        raise ValueError(f"score_outputs: {len(raws)} outputs for {len(records)} records; they must pair one to one")
    if perturb is not None and (perturb[0] > 0 or perturb[1] > 0):
        from vlmsweep.evaluate.perturb import perturb_outputs

        kwargs = dict(domain_tag=domain_tag, leakage_keywords=leakage_keywords, stop_reasons=stop_reasons, costs=costs,
                      schemas=schemas, input_errors=input_errors)
        _, clean = score_outputs(raws, records, prompts_used, **kwargs)  # type: ignore[arg-type]
        flipped, counts, empty = perturb_outputs([s["raw"] for s in clean], [str(s["id"]) for s in clean], *perturb)
        metrics, samples = score_outputs(flipped, records, prompts_used, **kwargs)  # type: ignore[arg-type]
        for sample, c, n in zip(samples, clean, counts):
            sample["clean"] = {"raw": c["raw"], "scores": c["scores"], "tags": c["tags"]}
            sample["perturb"] = {"digits_flipped": n.flipped, "digits": n.digits, "blanked": str(sample["id"]) in empty}
        return metrics, samples
    schemas = dict(schemas or {})
    samples = []
    for i, (raw, rec) in enumerate(zip(raws, records)):
        domain = _field(rec, "domain")
        target = _field(rec, "target")
        if domain is None or not isinstance(target, dict):
            raise ValueError(f"score_outputs: record {i} ({_field(rec, 'id')!r}) needs a domain and a target object")
        sname = prompts.schema_name(domain)
        if sname not in schemas:
            schemas[sname] = _load_schema(sname)
        instruction = prompts_used[i] if prompts_used is not None else prompts.instruction(domain, domain_tag)
        stop = stop_reasons[i] if stop_reasons is not None else None
        unannotated = tuple(_field(rec, "unannotated", ()) or ())
        scored = score_sample(
            raw,
            target,
            domain,
            schemas[sname],
            instruction,
            leakage_keywords=leakage_keywords,
            stop_reason=stop,
            unannotated=unannotated,
            input_error=input_errors[i] if input_errors is not None else None,
        )
        sample = {
            "id": _field(rec, "id", str(i)),
            "domain": domain,
            "image_domain": _field(rec, "image_domain", domain) or domain,
            "origin": _field(rec, "origin", "base"),
            "prompt": instruction,
            "raw": scored["raw"],
            "parsed": scored["parsed"],
            "salvaged": scored["salvaged"],
            "target": target,
            "tags": scored["tags"],
            "tag_evidence": scored["tag_evidence"],
            "field_scores": scored["field_scores"],
            "scores": scored["scores"],
            "stop_reason": stop,
        }
        if _field(rec, "hint") is not None:  # ocr_hint: the page's OCR text the prompt held after the instruction
            sample["ocr_hint"] = _field(rec, "hint")
        if input_errors is not None and input_errors[i] is not None:
            sample["input_error"] = input_errors[i]
        if unannotated:
            sample["unannotated"] = list(unannotated)
        if costs is not None:
            cost = costs[i]
            sample |= {k: cost.get(k) for k in ("visual_tokens", "output_tokens", "seconds")}
            sample["scores"] |= {
                "cost.eval_seconds_per_sample": cost.get("seconds"),
                "cost.visual_tokens_per_image": cost.get("visual_tokens"),
                "cost.output_tokens_per_sample": cost.get("output_tokens"),
            }
        samples.append(sample)
    add_chance(samples)  # each answer against other pages' targets: what it scores by chance (grounding.py)
    return aggregate(samples), samples


def _readable_image(record: Any, max_pixels: int):
    """The record's image ready for the processor, or the reason (naming file and id) it cannot be used."""
    from vlmsweep.data.images import ImageLoadError, check_size, load_image

    path = Path(_field(record, "image"))
    try:
        # Decode huge scans at reduced scale; the processor does the final resize to the budget.
        image = load_image(path, max_pixels=4 * max_pixels)
        check_size(image, path)  # the processor's aspect-ratio limit, named with the file
        return image
    except ImageLoadError as e:
        return f"id {_field(record, 'id')!r}: {e}"


def check_schemas_compile(tokenizer, vocab_size: int | None = None, schemas: dict[str, dict] | None = None) -> None:
    """Compile every domain schema with xgrammar now (cached for generation); a ValueError names the
    schema that fails. Call before training so decoding=json_schema cannot fail after it."""
    from vlmsweep.data.schema import SCHEMA_NAMES
    from vlmsweep.evaluate.generate import check_schema_compiles

    if schemas is None:
        schemas = {name: _load_schema(name) for name in SCHEMA_NAMES}
    if vocab_size is None:
        vocab_size = len(tokenizer)
    for name, schema in schemas.items():
        check_schema_compiles(tokenizer, int(vocab_size), name, schema)


def evaluate(
    model,
    processor,
    records: Sequence[Any],
    cfg_eval,
    decoding,
    domain_tag: bool,
    max_pixels: int,
    min_pixels: int,
    seed: int = 0,
) -> tuple[dict[str, float], list[dict]]:
    """Generate an answer for every record (greedy, batched, left-padded, JSON stop rule, optional
    xgrammar constraint) and score them; returns (metrics, samples) and writes nothing (a pass's write stage
    writes samples.jsonl, metrics.json and report.md: vlmsweep.evaluate.outputs.write_outputs). The logits
    processors of every generate call: vlmsweep.evaluate.generate.logits_processors. `seed`: the run's, for
    eval.perturb."""
    from vlmsweep.evaluate.generate import generate_batch

    constrained = bool(decoding.constrained)
    schemas = {name: _load_schema(name) for name in {prompts.schema_name(_field(r, "domain")) for r in records}}
    n = len(records)
    raws: list[str] = [""] * n
    stops: list[str | None] = ["unreadable_input"] * n
    costs: list[dict[str, float]] = [{"seconds": 0.0, "visual_tokens": 0, "output_tokens": 0} for _ in range(n)]
    errors: list[str | None] = [None] * n
    used_prompts = [prompts.instruction(_field(r, "domain"), domain_tag) for r in records]
    token_text: dict[int, str] = {}  # token id -> text, shared by the stop rule across batches
    started = time.perf_counter()
    batch_size = max(1, int(cfg_eval.batch_size))
    for b in range(0, n, batch_size):
        rows, texts, images = [], [], []
        for i in range(b, min(n, b + batch_size)):
            image = _readable_image(records[i], max_pixels)
            if isinstance(image, str):  # an image that cannot be read is a scored failure, never a crash
                errors[i] = image
                log.warning("evaluation: %s", image)
                continue
            domain = _field(records[i], "domain")
            rows.append(i)
            hint = _field(records[i], "hint")  # ocr_hint: the page's OCR text after the instruction
            texts.append(processor.apply_chat_template(prompts.messages(domain, domain_tag, hint=hint),
                                                       add_generation_prompt=True, tokenize=False))
            images.append(image)
        if not rows:
            continue
        row_schemas = [schemas[prompts.schema_name(_field(records[i], "domain"))] for i in rows] if constrained else None
        gens = generate_batch(
            model,
            processor,
            texts,
            images,
            max_new_tokens=int(cfg_eval.max_new_tokens),
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            schemas=row_schemas,
            token_text=token_text,
            sample_ids=[str(_field(records[i], "id", i)) for i in rows],  # named when a logit is NaN/inf
        )
        for i, g in zip(rows, gens):
            raws[i], stops[i] = g.text, g.stop_reason
            costs[i] = {"seconds": g.seconds, "visual_tokens": g.visual_tokens, "output_tokens": g.output_tokens}
    log.info("evaluated %d samples in %.1f s", len(records), time.perf_counter() - started)
    metrics, samples = score_outputs(
        raws,
        records,
        used_prompts,
        domain_tag=domain_tag,
        leakage_keywords=tuple(cfg_eval.leakage_keywords),
        stop_reasons=stops,
        costs=costs,
        schemas=schemas,
        input_errors=errors,
        perturb=(float(cfg_eval.perturb.digit_flip), float(cfg_eval.perturb.blank), int(seed)),
    )
    return metrics, samples
