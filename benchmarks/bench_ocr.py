"""Benchmark: the OCR baseline's field metrics (model=ocr_tesseract), run the way a user runs it.

    HF_HUB_OFFLINE=1 python benchmarks/bench_ocr.py [--n 24] [--sroie SROIE_ROOT] [--out bench_ocr]

Runs `python -m vlmsweep model=ocr_tesseract` in subprocesses: on the synthetic test split (`data.test_size=N`,
the default mix: Korean and Chinese prescriptions, English, Korean and Chinese receipts, scan noise), on N
pages of the numeric challenge slice (`eval.slices=[numeric_challenge]`: the same domains, confusable digits,
small faded print) and, with
--sroie, on real receipts in the ICDAR-2019 SROIE layout (img/NNN.jpg + key/NNN.json) converted by
`python -m vlmsweep.data sroie`. Prints the machine, the Tesseract version and, per set and domain, field
exact match, ANLS, CER, digit accuracy, end-to-end field EM and seconds per page; the run folders under --out
hold every sample's OCR text, parsed object and tags.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

METRICS = ("content.e2e_field_em", "content.field_em", "content.anls", "content.cer", "content.digit_acc",
           "cost.eval_seconds_per_sample")


def cli(args: list[str], cwd: Path, module: str = "vlmsweep") -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"python -m {module} {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def table(name: str, run: Path, prefix: str = "") -> list[str]:
    """`prefix`: slice/<name>/ to print a slice's metrics from the run's metrics.json."""
    metrics = {k[len(prefix):]: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k.startswith(prefix)}
    domains = sorted({k.split(".")[1] for k in metrics if k.startswith("by_domain.")})
    n = int(metrics["samples"]) if prefix else sum(1 for _ in (run / "samples.jsonl").open())
    rows = [f"{name} ({n} pages)", "| metric | all | " + " | ".join(domains) + " |", "|---|---" + "|---" * len(domains) + "|"]
    for m in METRICS:
        cells = [metrics.get(m)] + [metrics.get(f"by_domain.{d}.{m}") for d in domains]
        rows.append(f"| {m} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in cells) + " |")
    return rows + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=24, help="synthetic test pages")
    ap.add_argument("--sroie", type=Path, default=None, help="an SROIE-layout folder (img/ + key/)")
    ap.add_argument("--out", type=Path, default=Path("bench_ocr"))
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    from vlmsweep.ocr import check_tesseract

    version = check_tesseract()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, {cpu}, "
          f"load average at start {os.getloadavg()[0]:.1f}; tesseract {version}\n")
    common = ["model=ocr_tesseract", "tracker=none"]
    cli([*common, f"data.test_size={args.n}", f"eval.slice_size={args.n}", "eval.slices=[numeric_challenge]",
         "hydra.run.dir=synthetic"], out)
    lines = table("synthetic test split", out / "synthetic")
    lines += table("numeric challenge slice", out / "synthetic", prefix="slice/numeric_challenge/")
    if args.sroie:
        cli(["sroie", "--root", str(args.sroie.resolve()), "--out", "sroie_data"], out, module="vlmsweep.data")
        cli([*common, "data.test_manifest=sroie_data/manifest.jsonl", "hydra.run.dir=sroie"], out)
        lines += table(f"SROIE receipts ({args.sroie.name})", out / "sroie")
    print("\n".join(lines))
    print(f"load average at the end {os.getloadavg()[0]:.1f}; run folders under {out}")


if __name__ == "__main__":
    main()
