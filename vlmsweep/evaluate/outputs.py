"""The evaluation files of a run folder: samples.jsonl, metrics.json and the readable report.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from vlmsweep.evaluate.grounding import summary_lines
from vlmsweep.evaluate.metrics import METRICS, TAGS
from vlmsweep.files import write_json, write_text
from vlmsweep.metrics import WORST_SCORE, arrow, worst_first

RAW_CHARS_IN_REPORT = 400


def _json_line(obj: Any) -> str:
    line = json.dumps(obj, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a broken output: \u escapes keep the line valid
        line = json.dumps(obj, ensure_ascii=True)
    return line


def write_samples(path: Path, samples: Sequence[dict]) -> None:
    write_text(path, "".join(_json_line(s) + "\n" for s in samples))


def _fmt(value: float | None, name: str) -> str:
    if value is None:
        return "–"
    if name.startswith("tags."):
        return f"{value:.0f}"
    return f"{value:.3f}"


def _code(text: str) -> str:
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    short = text[:RAW_CHARS_IN_REPORT].replace("```", "'''")
    more = f"\n… ({len(text) - RAW_CHARS_IN_REPORT} more chars)" if len(text) > RAW_CHARS_IN_REPORT else ""
    return f"```\n{short}{more}\n```"


EMBEDDED_MEANING = (
    "**The model is the embedded tiny Qwen2-VL** (built locally, it reads no document content; the warmed one "
    "has learned the answer format and plausible values, not reading): these numbers show that every stage runs "
    "and how the JSON-contract metrics move; its content metrics are chance-level guessing by construction and "
    "say nothing about how well a real checkpoint reads documents."
)

READER_MEANING = (
    "**The model is the embedded reader** (the tiny Qwen2-VL warmed with each page's text in the prompt): what its "
    "content metrics show above chance comes from the OCR text in the prompt (ocr_hint) read by a tiny model, never "
    "from the pixels, so it measures the OCR engine and the pipeline around it, not how well a real checkpoint reads "
    "an image; with ocr_hint=none its content metrics are chance-level guessing."
)


def _run_config(out_dir: Path) -> tuple[dict, str]:
    """The resolved config.yaml the run wrote before evaluating, and which split this folder holds: a run
    folder holds the test split, a loop's cycle_N/ too, cycle_N/mining/ and cycle_N/regression/ theirs."""
    import yaml

    split = out_dir.name if out_dir.name in ("mining", "regression") else "test"
    if out_dir.parent.name == "slices":  # <run>/slices/<name>/: an evaluation slice (vlmsweep/evaluate/slices.py)
        split = f"slice {out_dir.name}"
    for folder in (out_dir, out_dir.parent, out_dir.parent.parent):
        path = folder / "config.yaml"
        if path.is_file():
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                return {}, split
            return (loaded if isinstance(loaded, dict) else {}), split
    return {}, split


def describe_evaluation(cfg: dict, split: str) -> list[str]:
    """What was evaluated, from the run's resolved config: model, adapter, data, decoding (empty when the
    folder has no config.yaml, e.g. outputs scored outside a run)."""
    if not cfg:
        return []
    model, data, ev = cfg.get("model", {}), cfg.get("data", {}), cfg.get("eval", {})
    name = lambda group: (cfg.get(group) or {}).get("name", "?")  # noqa: E731
    shipped = {"tiny_warm": "shipped in the package, warmed once to answer in the JSON contract",
               "tiny_reader": "shipped in the package, warmed with each page's OCR text in the prompt: it answers from "
                              "that text, not from the pixels"}
    where = (f"{shipped[model['path']]}; its card is README.md in the model folder"
             if model.get("source") == "tiny" and model.get("path") in shipped else
             model.get("path") or ("built locally" if model.get("source") == "tiny" else "?"))
    if cfg.get("train", {}).get("enabled"):
        adapter = "LoRA trained in this run" + (f", starting from {model['adapter']}" if model.get("adapter") else "")
    else:
        adapter = model.get("adapter") or "none (the base model as loaded)"
    if split.startswith("slice "):  # slices/<name>/: a user manifest, the numeric challenge, or the synthetic test split
        slice_name = split.removeprefix("slice ")
        manifest = (ev.get("slice_manifests") or {}).get(slice_name)
        split = "test" if slice_name == "synthetic" else split
    else:
        manifest = data.get(f"{split}_manifest")
    dataset = (f"manifest {manifest}" if manifest else
               f"{split}: {ev.get('slice_size', '?')} rendered pages (digits focus, small faded print), data seed "
               f"{data.get('seed', '?')}" if split == "slice numeric_challenge" else
               f"synthetic {split} split: {data.get(f'{split}_size', '?')} samples, data seed {data.get('seed', '?')}, "
               f"mix {name('data_mix')}, noise {data.get('noise', '?')}")
    if model.get("source") == "ocr":  # the OCR baseline: no weights, adapter or decoding to describe
        return [f"- model: {name('model')}: OCR ({model.get('path')}) + label-anchored rules (vlmsweep/ocr/), "
                "nothing trained", f"- data: {dataset}", ""]
    lines = [
        f"- model: {name('model')} ({where}), quant {name('quant')}, scope {name('scope')}",
        f"- adapter: {adapter}",
        f"- data: {dataset}",
        f"- decoding: {name('decoding')}, greedy, at most {ev.get('max_new_tokens', '?')} new tokens; "
        f"at most {(cfg.get('max_pixels') or {}).get('visual_tokens', '?')} visual tokens per image; "
        f"domain tag {name('domain_tag')}",
        "",
    ]
    if model.get("source") == "tiny":
        lines += [READER_MEANING if model.get("path") == "tiny_reader" else EMBEDDED_MEANING, ""]
    return lines


def render_report(metrics: dict[str, float], samples: Sequence[dict], worst_per_tag: int = 3, title: str = "Evaluation",
                  about: Sequence[str] = ()) -> str:
    """report.md; `about`: the lines that say what was evaluated (describe_evaluation), right under the title."""
    domains = sorted({s["domain"] for s in samples})
    lines = [f"# {title}", "", *about]
    n_obj = sum(s["parsed"] is not None for s in samples)
    counts = ", ".join(f"{d}: {sum(s['domain'] == d for s in samples)}" for d in domains)
    lines += [
        f"{len(samples)} samples ({counts}). "
        f"Content metrics are scored on the {n_obj} samples with an answer object (strict or salvaged).",
        "",
        "## Metrics",
        "",
        "| metric | better | overall | " + " | ".join(domains) + " |",
        "|---|---|---|" + "---|" * len(domains),
    ]
    for name in METRICS:
        if name.startswith("tags."):
            continue
        if name not in metrics and not any(f"by_domain.{d}.{name}" in metrics for d in domains):
            continue
        cells = [_fmt(metrics.get(name), name)] + [_fmt(metrics.get(f"by_domain.{d}.{name}"), name) for d in domains]
        lines.append(f"| {name} | {arrow(name)} | " + " | ".join(cells) + " |")
    lines += ["", *summary_lines(samples)]
    lines += ["## Failure tags (samples)", "", "| tag | overall | " + " | ".join(domains) + " |",
              "|---|---|" + "---|" * len(domains)]
    for tag in TAGS:
        cells = [_fmt(metrics.get(f"tags.{tag}"), "tags.")] + [
            _fmt(metrics.get(f"by_domain.{d}.tags.{tag}"), "tags.") for d in domains
        ]
        lines.append(f"| {tag} | " + " | ".join(cells) + " |")
    lines += ["", "## Worst examples per tag", ""]
    for tag in TAGS:
        tagged = sorted((s for s in samples if tag in s["tags"]), key=worst_first)  # the registry's "worst"
        if not tagged:
            continue
        lines += [f"### {tag} ({min(worst_per_tag, len(tagged))} of {len(tagged)})", ""]
        for s in tagged[:worst_per_tag]:
            lines += [
                f"- **{s['id']}** ({s['domain']}, image {s.get('image_domain', s['domain'])}) — "
                f"{s['tag_evidence'].get(tag, '')}; {WORST_SCORE} {_fmt(s['scores'].get(WORST_SCORE), '')}, "
                f"stop {s.get('stop_reason') or '–'}",
                "",
                "  output:",
                "",
                _code(s["raw"]),
                "",
                "  target:",
                "",
                _code(json.dumps(s["target"], ensure_ascii=False)),
                "",
            ]
    return "\n".join(lines) + "\n"


def write_outputs(out_dir: Path, metrics: dict[str, float], samples: Sequence[dict], worst_per_tag: int = 3,
                  file_metrics: dict[str, float] | None = None, appendix: str = "") -> None:
    """samples.jsonl, metrics.json and report.md of one evaluated set. `file_metrics`: what metrics.json holds
    when it carries more than the evaluation (a run's training metrics); report.md shows the evaluation's,
    then `appendix` (Markdown: the slices' table)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_samples(out_dir / "samples.jsonl", samples)
    write_json(out_dir / "metrics.json", metrics if file_metrics is None else file_metrics, sort_keys=True)
    report = render_report(metrics, samples, worst_per_tag, about=describe_evaluation(*_run_config(out_dir)))
    if appendix:
        report += "\n" + appendix
    write_text(out_dir / "report.md", report.encode("utf-8", errors="replace").decode("utf-8"))
