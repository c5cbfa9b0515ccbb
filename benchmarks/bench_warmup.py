"""The Instruct warm-up recipe, measured: build time, loss, held-out contract, and the default LoRA run after it.

    python benchmarks/bench_warmup.py                         # the default recipe (vlmsweep.recipes.warmup.Recipe)
    python benchmarks/bench_warmup.py --set steps=300 batch_size=8 documents=1024 visual_tokens=16,64 \
        lr=2e-3 lr_scheduler=linear                           # a variant: any Recipe field
    python benchmarks/bench_warmup.py --then-run              # also the default `python -m vlmsweep` on it
    python benchmarks/bench_warmup.py --layers 4              # warm a replica with 4 LLM layers instead of 2

Targets (issue #12): held-out strict parse >= 0.9 and exact key set >= 0.9 under free decoding, build
< 10 min on 2 CPU cores; the default LoRA run afterwards keeps strict parse >= 0.8. The held-out samples
come from the warm-up's own seed stream, never from a split a run uses. Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from vlmsweep.recipes.warmup import Recipe, warm

KEYS = ("warmup.seconds", "warmup.cpu_seconds", "warmup.render_seconds", "warmup.train_seconds",
        "warmup.eval_seconds", "warmup.answer_vocab", "warmup.first_loss", "warmup.answer_vocab_loss",
        "warmup.full_vocab_first_loss", "warmup.final_loss", "warmup.supervised_tokens",
        "heldout.contract.strict_parse_rate", "heldout.contract.key_set_rate", "heldout.contract.salvage_rate",
        "heldout.content.field_em", "heldout.content.field_em_margin", "heldout.tags.run_on", "heldout.tags.repetition_loop")


def parse_recipe(pairs: list[str]) -> Recipe:
    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    values = {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        if name not in fields:
            sys.exit(f"--set {pair}: Recipe has no field {name!r}; fields: {', '.join(fields)}")
        default = getattr(Recipe(), name)
        if isinstance(default, tuple):
            values[name] = tuple(type(default[0])(x) if default else x for x in raw.split(",") if x)
        else:
            values[name] = type(default)(raw)
    return Recipe(**values)


def raw_model(cache: Path, layers: int | None = None, folder: Path | None = None) -> Path:
    """The raw tiny replica; with `layers`, one with that many LLM layers (other sizes the same), written to `folder`."""
    from vlmsweep.model import release, tiny

    if layers is None:
        return tiny.ensure_embedded_model("tiny", cache)
    sizes = json.loads(json.dumps(tiny.TINY_SIZES))
    sizes["text"].update(num_hidden_layers=layers, max_window_layers=layers)
    tiny.write_replica(release.release_config(**sizes, dtype="float32"), folder)
    return folder


def default_run(model_dir: Path, out: Path) -> dict[str, float]:
    """`python -m vlmsweep` on its defaults, with model.path pointing at the warmed folder."""
    from vlmsweep.config.compose import compose
    from vlmsweep.run import run

    overrides = ["model.source=pretrained", f"model.path={model_dir}", "tracker=none"]
    return run(compose(overrides, out), overrides)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="Recipe fields to change")
    ap.add_argument("--then-run", action="store_true", help="then the default LoRA run on the warmed model")
    ap.add_argument("--keep", type=Path, help="write the warmed model here (default: a temporary folder)")
    ap.add_argument("--layers", type=int, help="LLM layers of the replica to warm (default: the tiny replica's 2)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    recipe = parse_recipe(args.set)
    cache = Path(os.environ.get("VLMSWEEP_CACHE", "~/.cache/vlmsweep")).expanduser()
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"# recipe {json.dumps(dataclasses.asdict(recipe))}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-warmup-") as tmp:
        out = args.keep or Path(tmp) / "warm"
        raw = raw_model(cache, args.layers, Path(tmp) / "raw")
        figures = warm(raw, out, recipe)
        result = {k: round(figures[k], 4) for k in KEYS if k in figures}
        if args.then_run:
            t = time.perf_counter()
            metrics = default_run(out, Path(tmp) / "run")
            result["run.seconds"] = round(time.perf_counter() - t, 1)
            for k in ("contract.strict_parse_rate", "contract.key_set_rate", "content.coverage", "content.field_em",
                      "content.e2e_field_em", "train.loss"):
                if k in metrics:
                    result[f"run.{k}"] = round(metrics[k], 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
