"""Hand-written run folders for the report tests (metrics.json, samples.jsonl, run_info.json)."""

from __future__ import annotations

import json
from pathlib import Path


def make_run(
    folder: Path,
    *,
    choices: dict[str, str] | None = None,
    overrides: list[str] | None = None,
    seed: int = 0,
    scores: dict[str, list[float]] | None = None,
    metrics: dict[str, float] | None = None,
    status: str = "ok",
    error: str | None = None,
    write_metrics: bool = True,
) -> Path:
    """scores: metric -> per-sample values for samples s0, s1, ...; metrics.json gets their means
    (plus `metrics`)."""
    folder.mkdir(parents=True, exist_ok=True)
    info = {"status": status, "error": error, "choices": choices or {}, "overrides": overrides or [], "seed": seed}
    (folder / "run_info.json").write_text(json.dumps(info))
    scores = scores or {}
    means = {m: sum(v) / len(v) for m, v in scores.items()}
    if write_metrics:
        (folder / "metrics.json").write_text(json.dumps({**means, **(metrics or {})}))
    n = max((len(v) for v in scores.values()), default=0)
    with (folder / "samples.jsonl").open("w") as fh:
        for k in range(n):
            fh.write(json.dumps({"id": f"s{k}", "domain": "prescription_ko", "scores": {m: v[k] for m, v in scores.items()}}) + "\n")
    return folder


def make_2x2(root: Path, cells: dict[tuple[str, str], list[float] | list[list[float]]], metric: str = "content.field_em",
             seeds: int = 1, extra: dict[str, float] | None = None) -> Path:
    """cells[(quant, scope)] = per-sample scores (or one list per seed). Runs numbered in Hydra's order
    quant=nf4,bf16 x scope=llm,all."""
    k = 0
    for quant in ("nf4", "bf16"):
        for scope in ("llm", "all"):
            values = cells[(quant, scope)]
            per_seed = values if isinstance(values[0], list) else [values] * seeds  # one list: every seed alike
            for s in range(seeds):
                make_run(root / str(k), choices={"quant": quant, "scope": scope, "max_pixels": "256"},
                         overrides=[f"quant={quant}", f"scope={scope}", f"seed={s}"], seed=s,
                         scores={metric: per_seed[s]}, metrics=extra)  # fmt: skip
                k += 1
    return root
