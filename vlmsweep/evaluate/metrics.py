"""Per-sample scoring and aggregation into metrics.json (pure, no torch).

Every per-sample value lives in the sample's "scores" under the metrics.json name, so any metric is the
mean of its per-sample values over the samples where it is defined (not null): a report can bootstrap
it by resampling samples. Exceptions: `tags.<tag>` is a count (samples carrying the tag), and
`by_domain.<domain>.<metric>` is the same aggregation over the samples whose asked domain it is.
Content metrics are defined only for samples with an answer object (strict or salvaged); when no
sample has one they are absent from metrics.json and `content.coverage` is 0.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import jiwer

from vlmsweep.evaluate import contract, fields
from vlmsweep.evaluate.tags import DEFAULT_LEAKAGE_KEYWORDS, TAGS, tag_sample
from vlmsweep.metrics import EVALUATION, MetricInfo
from vlmsweep.metrics import metric as metric_info
from vlmsweep.prompts import schema_name, serialize


# Names, directions and descriptions are the registry's (vlmsweep/metrics.py); the failure tags' counts are named here.
METRICS: dict[str, MetricInfo] = {
    name: metric_info(name)
    for family in EVALUATION for name in ([f"tags.{tag}" for tag in TAGS] if family == "tags.*" else [family])
}


def _clean_raw(raw: Any) -> str:
    # Outputs from other systems may be None or bytes; bytes with invalid UTF-8 keep U+FFFD.
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return str(raw)


def annotated(obj: dict, unannotated: Sequence[str]) -> dict:
    """The keys content is scored on: all but those the source does not label (SROIE's items, subtotal, tax)."""
    drop = set(unannotated)
    return {k: v for k, v in obj.items() if k not in drop}


def score_sample(
    raw: Any,
    target: dict,
    domain: str,
    schema: dict,
    instruction: str,
    leakage_keywords: Sequence[str] = (),
    stop_reason: str | None = None,
    unannotated: Sequence[str] = (),
    input_error: str | None = None,
) -> dict[str, Any]:
    """Parsed answer, tags with evidence, per-field scores and per-sample metric values for one output.

    `unannotated`: top-level keys the source does not label (SROIE items); the contract still wants
    them, but content scores and value tags leave them out instead of scoring them as wrong.
    `input_error`: why the sample's image could not be read. The model produced nothing, so the sample
    scores as an empty answer (a failure, not a missing sample) tagged `unreadable_input` alone.
    """
    raw = _clean_raw(raw)
    sname = schema_name(domain)
    keywords = tuple(leakage_keywords) or DEFAULT_LEAKAGE_KEYWORDS
    target_text = serialize(target)
    strict = contract.strict_parse(raw)
    found = contract.salvage(raw) if strict is None else None
    answer = strict if strict is not None else (found.obj if found else None)
    answer_end = (len(raw.rstrip()) if strict is not None else found.end) if answer is not None else None
    key_errors = contract.key_set_errors(answer, schema) if answer is not None else []
    type_errs = contract.type_errors(answer, schema) if answer is not None else []
    content_target = annotated(target, unannotated)
    content_answer = annotated(answer, unannotated) if answer is not None else None
    pairs = fields.pair_fields(content_answer, content_target) if content_answer is not None else None
    tags = tag_sample(
        raw,
        strict=strict,
        answer=answer,
        answer_end=answer_end,
        pairs=pairs,
        key_errors=key_errors,
        type_errs=type_errs,
        target=content_target,
        target_text=target_text,
        schema_name=sname,
        instruction=instruction,
        leakage_keywords=keywords,
        stop_reason=stop_reason,
    )
    if input_error is not None:
        tags = {"unreadable_input": input_error}
    scores: dict[str, float | None] = {
        "contract.strict_parse_rate": float(strict is not None),
        "contract.key_set_rate": float(strict is not None and not key_errors),
        "contract.schema_valid_rate": float(strict is not None and contract.schema_valid(strict, schema)),
        "contract.salvage_rate": float(answer is not None),
        "content.coverage": float(answer is not None),
    }
    field_scores: dict[str, float] = {}
    if pairs is not None:
        fs = fields.score_fields(pairs, sname)
        field_scores = fs.field_scores
        scores |= {
            "content.e2e_field_em": fs.field_em,
            "content.field_em": fs.field_em,
            "content.anls": fs.anls,
            "content.cer": fs.cer,
            "content.wer": fs.wer,
            "content.raw_cer": fs.raw_cer,
            "content.field_f1": fs.field_f1,
            "content.ted_acc": fields.ted_accuracy(content_answer, content_target),
            "content.digit_acc": fs.digit_acc,
            "content.unit_acc": fs.unit_acc,
        }
    else:
        # End to end, a sample without an answer object got no field right: always defined, so
        # it is the default sweep objective (content.field_em alone is absent when nothing parses).
        scores["content.e2e_field_em"] = 0.0
        scores |= dict.fromkeys(
            ["content.field_em", "content.anls", "content.cer", "content.wer", "content.raw_cer", "content.field_f1",
             "content.ted_acc", "content.digit_acc", "content.unit_acc"]
        )
    # jiwer's default CER transformation strips the output and changes nothing else: the naive number.
    # The target text is a serialised JSON object, never empty, so this is always a rate.
    scores["text.raw_cer"] = float(jiwer.cer(target_text, raw))
    scores["rate.run_on"] = float("run_on" in tags)
    scores["rate.repetition_loop"] = float("repetition_loop" in tags)
    scores["rate.instruction_echo"] = float("instruction_echo" in tags)
    scores["rate.leakage"] = float("domain_leakage" in tags) if sname == "prescription" else None
    return {
        "raw": raw,
        "parsed": answer,
        "salvaged": strict is None and answer is not None,
        "tags": list(tags),
        "tag_evidence": tags,
        "field_scores": field_scores,
        "scores": scores,
    }


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _aggregate(samples: Sequence[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    names = [n for n in METRICS if not n.startswith("tags.")]
    for name in names:
        value = _mean(s["scores"].get(name) for s in samples)
        if value is not None:
            out[name] = float(value)
    for tag in TAGS:
        out[f"tags.{tag}"] = float(sum(tag in s["tags"] for s in samples))
    return out


def aggregate(samples: Sequence[dict]) -> dict[str, float]:
    """metrics.json: overall, then by_domain.<domain>.<metric> for every asked domain present."""
    metrics = _aggregate(samples)
    for domain in sorted({s["domain"] for s in samples}):
        subset = [s for s in samples if s["domain"] == domain]
        metrics |= {f"by_domain.{domain}.{k}": v for k, v in _aggregate(subset).items()}
    return metrics
