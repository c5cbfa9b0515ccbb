"""The shipped warmed model against the build it was packed from: assembly time, size, and greedy answers.

    python benchmarks/bench_shipped.py                              # assembly into an empty cache: seconds, MiB
    python benchmarks/bench_shipped.py --against ~/.cache/vlmsweep/models/tiny-warm-KEY   # and the answers
    python benchmarks/bench_shipped.py --against DIR --train        # the default LoRA run on each, not the base

The assembled model keeps the build's tensors but one: the embedding rows of tokens the warm-up never fed in are one
stored vector instead of the build's (trained) random values. Since the embedding is the output layer too, that rule
decides those tokens' logits; `--against` measures what it changes: the share of the default test set's greedy
answers that are the same text on both models (evaluation only unless --train), and both runs' metrics. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def answers(model_dir: Path, out: Path, train: bool) -> tuple[dict[str, str], dict[str, float]]:
    """The default run (evaluation only unless `train`) on the folder: sample id -> answer text, and the metrics."""
    from vlmsweep.config.compose import compose
    from vlmsweep.run import run

    overrides = ["model.source=pretrained", f"model.path={model_dir}", "tracker=none"]
    overrides += [] if train else ["train.enabled=false"]
    metrics = run(compose(overrides, out), overrides)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return {s["id"]: s["raw"] for s in samples}, metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", type=Path, help="the warm-up build the shipped files were packed from")
    ap.add_argument("--train", action="store_true", help="compare the default LoRA run's answers, not the base model's")
    args = ap.parse_args()

    from vlmsweep.model.shipped import SHIPPED_DIR, WEIGHTS, ensure_warm_model

    root = Path(tempfile.mkdtemp(prefix="vlmsweep-shipped-"))
    started = time.perf_counter()
    assembled = ensure_warm_model(root / "cache")
    figures = {"assembly_s": round(time.perf_counter() - started, 2),
               "shipped_mib": round((SHIPPED_DIR / WEIGHTS).stat().st_size / 2**20, 2)}
    print(json.dumps(figures), flush=True)
    if args.against is None:
        return
    ours, our_metrics = answers(assembled, root / "assembled", args.train)
    theirs, their_metrics = answers(args.against.expanduser(), root / "build", args.train)
    same = sum(ours[k] == theirs.get(k) for k in ours)
    keys = sorted(k for k in our_metrics if k.startswith(("contract.", "content.field_em", "content.digit_acc")))
    print(json.dumps({"answers_equal": f"{same}/{len(ours)}", "match_rate": round(same / len(ours), 3),
                      "train": args.train, "assembled": {k: our_metrics[k] for k in keys},
                      "build": {k: their_metrics[k] for k in keys}}))


if __name__ == "__main__":
    main()
