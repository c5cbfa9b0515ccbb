"""Benchmark: what the OCR hint (ocr_hint) holds and costs, per engine and resolution, run the way a user runs it.

    HF_HUB_OFFLINE=1 python benchmarks/bench_ocr_hint.py [--n 15] [--sroie SROIE_ROOT] [--engines tesseract rapidocr]
                                                          [--train] [--out bench_ocr_hint]

For each engine and resolution (the full page, and the page as resized to 64, 256 and 1024 visual tokens with
`ocr_hint.resolution=budget`), runs `python -m vlmsweep ocr_hint=ENGINE train.enabled=false` on N synthetic test
pages (and, with --sroie, on real receipts in the ICDAR-2019 SROIE layout) and reads the hints from samples.jsonl.
Prints per domain the **value recall**: the share of the target's non-null values (leaf strings and numbers) found
verbatim in the page's hint, the ceiling of a model that copies from it (and with whitespace ignored, as Tesseract
spaces CJK text), the hint's length in tokens and the engine's seconds per page (cost.ocr_seconds_per_image).

--train adds the question the hint is for, on the default model: the default run (30 LoRA steps, 64 + 64 pages) with
`ocr_hint=none` and with the first engine, and each run's chance baseline (content.field_em_margin and its p): does the
answer depend on the page once its text is in the prompt?
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BUDGETS = (64, 256, 1024)


def cli(args: list[str], cwd: Path, module: str = "vlmsweep") -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"python -m {module} {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def leaves(value) -> list[str]:
    """The target's non-null leaf values as text."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in leaves(v)]
    return [] if value is None or value == "" else [str(value)]


def recall(samples: list[dict]) -> dict[str, dict[str, float]]:
    """domain -> {pages, recall, recall_nospace, tokens}; 'all' too."""
    out: dict[str, dict[str, list[float]]] = {}
    for s in samples:
        hint = s.get("ocr_hint") or ""
        values = leaves(s["target"])
        if not values:
            continue
        squeezed = "".join(hint.split())
        row = {"recall": sum(v in hint for v in values) / len(values),
               "recall_nospace": sum("".join(v.split()) in squeezed for v in values) / len(values),
               "chars": float(len(hint))}
        for key in (s["domain"], "all"):
            for k, v in row.items():
                out.setdefault(key, {}).setdefault(k, []).append(v)
    return {d: {"pages": float(len(r["recall"])), **{k: sum(v) / len(v) for k, v in r.items()}} for d, r in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=15, help="synthetic test pages (the five domains in turn)")
    ap.add_argument("--sroie", type=Path, default=None, help="an SROIE-layout folder (img/ + key/)")
    ap.add_argument("--engines", nargs="+", default=["tesseract", "rapidocr"])
    ap.add_argument("--train", action="store_true", help="also the default run with and without the hint")
    ap.add_argument("--out", type=Path, default=Path("bench_ocr_hint"))
    args = ap.parse_args()
    from vlmsweep.evaluate.grounding import randomization_test  # the report's own test of the chance baseline

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, {cpu}, load average at start "
          f"{os.getloadavg()[0]:.1f}\n", flush=True)
    sets = {"synthetic": [f"data.test_size={args.n}"]}
    if args.sroie:
        cli(["sroie", "--root", str(args.sroie.resolve()), "--out", "sroie_data"], out, module="vlmsweep.data")
        sets["sroie"] = ["data.test_manifest=sroie_data/manifest.jsonl"]
    resolutions = [("page", [])] + [(f"{b} tokens", ["ocr_hint.resolution=budget", f"max_pixels={b}tok"]) for b in BUDGETS]
    print("| set | engine | resolution | pages | value recall | ... whitespace ignored | hint chars | OCR s/page |")
    print("|---|---|---|---|---|---|---|---|")
    for name, data in sets.items():
        for engine in args.engines:
            for label, extra in resolutions:
                folder = f"{name}-{engine}-{label.replace(' ', '')}"
                if not (out / folder / "metrics.json").is_file():  # resumable: a finished cell is read, not run again
                    cli([f"ocr_hint={engine}", "train.enabled=false", "tracker=none", "eval.max_new_tokens=8", *data,
                         *extra, f"hydra.run.dir={folder}"], out)
                samples = [json.loads(line) for line in (out / folder / "samples.jsonl").open()]
                metrics = json.loads((out / folder / "metrics.json").read_text())
                r = recall(samples)
                for domain in ["all"] + sorted(d for d in r if d != "all"):
                    x = r[domain]
                    print(f"| {name}{'' if domain == 'all' else ' / ' + domain} | {engine} | {label} | {int(x['pages'])} | "
                          f"{x['recall']:.2f} | {x['recall_nospace']:.2f} | {x['chars']:.0f} | "
                          f"{metrics.get('cost.ocr_seconds_per_image', float('nan')) if domain == 'all' else float('nan'):.2f} |",
                          flush=True)
    if args.train:
        print("\nThe default run (python -m vlmsweep), without and with the hint:\n")
        print("| ocr_hint | strict parse | field EM | field EM margin | margin p | OCR s/page | wall s |")
        print("|---|---|---|---|---|---|---|")
        for engine in ["none", args.engines[0]]:
            folder = f"default-{engine}"
            started = time.perf_counter()
            if not (out / folder / "metrics.json").is_file():
                cli([f"ocr_hint={engine}", "tracker=none", f"hydra.run.dir={folder}"], out)
            m = json.loads((out / folder / "metrics.json").read_text())
            test = randomization_test([json.loads(line) for line in (out / folder / "samples.jsonl").open()])
            print(f"| {engine} | {m['contract.strict_parse_rate']:.3f} | {m['content.field_em']:.3f} | "
                  f"{m['content.field_em_margin']:+.3f} | {test.p_value if test else float('nan'):.3f} | "
                  f"{m.get('cost.ocr_seconds_per_image', 0.0):.2f} | {time.perf_counter() - started:.0f} |", flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}; run folders under {out}")


if __name__ == "__main__":
    main()
