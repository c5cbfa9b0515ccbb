"""Named evaluation slices: each set evaluated apart into slices/<name>/, its metrics as slice/<name>/<metric>.

The evaluator that runs them is vlmsweep.evaluate.evaluators.Slices; here: their names, records and table."""

from __future__ import annotations

from pathlib import Path

from vlmsweep.evaluate.metrics import METRICS, TAGS
from vlmsweep.metrics import arrow

PREFIX = "slice/"


def slice_metric(name: str, metric: str) -> str:
    return f"{PREFIX}{name}/{metric}"


def load_slices(cfg) -> dict[str, list]:
    """Every configured slice's records, read (manifests validated) before any model is loaded."""
    from vlmsweep.data.slices import slice_names, slice_records

    cache = Path(cfg.cache_dir).expanduser() / "data"
    return {name: slice_records(name, cfg.eval, cfg.data, cfg.data_mix, cache) for name in slice_names(cfg.eval)}


def slice_table(metrics: dict[str, float], names: list[str]) -> str:
    """The slices side by side: one column per slice, one row per metric or failure tag."""
    lines = ["## Slices", "", "Each slice is evaluated apart (its samples and report in `slices/<name>/`; "
             "`synthetic` without data.test_manifest is the test set above).", "",
             "| metric | better | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    lines.append("| samples | | " + " | ".join(f"{metrics.get(slice_metric(n, 'samples'), 0):.0f}" for n in names) + " |")
    for name in METRICS:
        cells = [metrics.get(slice_metric(n, name)) for n in names]
        if name.startswith("tags.") or all(c is None for c in cells):
            continue
        lines.append(f"| {name} | {arrow(name)} | "
                     + " | ".join("–" if c is None else f"{c:.3f}" for c in cells) + " |")
    for tag in TAGS:
        cells = [metrics.get(slice_metric(n, f"tags.{tag}")) for n in names]
        lines.append(f"| tags.{tag} | {arrow(f'tags.{tag}')} | " + " | ".join("–" if c is None else f"{c:.0f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"
