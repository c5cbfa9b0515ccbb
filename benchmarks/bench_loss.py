"""The default run with train.loss_impl=eager and =chunked: peak resident memory and training steps/s, each in a fresh process.

    python benchmarks/bench_loss.py                               # the default run, both ways (~6 min on 2 cores)
    python benchmarks/bench_loss.py --steps 10 --repeats 2 --no-eval   # shorter runs, repeated for the spread
    python benchmarks/bench_loss.py --impls eager,chunked -- train.loss_chunk=64
    python benchmarks/bench_loss.py --loss-only --repeats 5        # the output layer + loss alone, in process

Each variant is the command a user runs, `python -m vlmsweep tracker=none train.loss_impl=IMPL [OVERRIDES]`, in a
fresh subprocess with its own output folder: imports, model load, data, the memory estimate, training and (unless
--no-eval) evaluation. The warmed model and the rendered data come from the cache (a fresh machine builds them on the
first run: run once before measuring). Printed per run and per variant (median and range over --repeats):
  peak RSS     the child's ru_maxrss from os.wait4: what GNU `time -v` prints as "Maximum resident set size"
  train growth cost.train_peak_memory_mb: RSS growth during trainer.train() (vlmsweep.train.peak)
  steps/s      train.steps / train.seconds from metrics.json (trainer.train() only, first step included)
  train loss   train.loss: the same seed and data, so eager and chunked should agree closely
Repeats interleave the variants, the order rotating every repetition (machine noise hits all alike); the ratios
chunked / eager are ratios of medians with a 95% bootstrap interval (benchmarks/spread.py).

--loss-only times what the implementations differ in, away from the rest of a step: forward + backward of the
output layer and cross-entropy over --rows supervised tokens (hidden 128, vocab 151,936: the embedded model's; the
default run's batch of 4 supervises ~900), wall and CPU seconds, for eager and chunked with --chunks rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from spread import describe, ratio_of_medians  # benchmarks/spread.py, beside this script

REPO = Path(__file__).resolve().parent.parent
GiB = 2**30


def run_once(impl: str, out_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    """One `python -m vlmsweep` in a fresh process; its peak RSS (os.wait4) and metrics.json."""
    overrides = ["tracker=none", f"train.loss_impl={impl}", f"hydra.run.dir={out_dir}", *args.overrides]
    if args.steps is not None:
        overrides.append(f"train.max_steps={args.steps}")
    if args.no_eval:
        overrides.append("eval.enabled=false")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "1"}
    with open(out_dir.parent / f"{out_dir.name}.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "vlmsweep", *overrides], cwd=out_dir.parent, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = (out_dir.parent / f"{out_dir.name}.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"train.loss_impl={impl}: python -m vlmsweep failed ({proc.returncode}):\n{tail}")
    metrics = json.loads((out_dir / "metrics.json").read_text())
    return {
        "peak_rss_gib": usage.ru_maxrss * 1024 / GiB,  # ru_maxrss is in KiB on Linux
        "train_growth_gib": metrics["cost.train_peak_memory_mb"] / 1024,
        "steps_per_s": metrics["train.steps"] / metrics["train.seconds"],
        "train_loss": metrics["train.loss"],
    }


def loss_only(args: argparse.Namespace) -> None:
    import statistics
    import time

    import torch

    from vlmsweep.train.loss import chunked_linear_cross_entropy

    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    weight = (torch.randn(151936, 128) * 0.02).to(dtype)
    hidden = torch.randn(args.rows, 128).to(dtype)
    labels = torch.randint(0, 151936, (args.rows,))

    def eager() -> None:
        x = hidden.clone().requires_grad_()
        torch.nn.functional.cross_entropy(torch.nn.functional.linear(x, weight).float(), labels, reduction="sum").backward()

    def chunked(rows: int) -> None:
        x = hidden.clone().requires_grad_()
        chunked_linear_cross_entropy(x, weight, labels, rows).backward()

    variants = {"eager": eager, **{f"chunked/{c}": (lambda c=c: chunked(c)) for c in args.chunks}}
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
    print(f"# loss only: {args.rows} rows x hidden 128 -> vocab 151,936, {args.dtype}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    for name, (wall, cpu) in times.items():
        print(f"{name:<12} wall s {describe(wall)}; CPU s {describe(cpu)}; median / eager "
              f"{statistics.median(wall) / statistics.median(times['eager'][0]):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--impls", type=lambda s: s.split(","), default=["eager", "chunked"], help="first is the baseline")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None, help="train.max_steps (default: the config's, 30)")
    ap.add_argument("--no-eval", action="store_true", help="eval.enabled=false: time and measure training only")
    ap.add_argument("--loss-only", action="store_true", help="time the output layer + loss alone, in this process")
    ap.add_argument("--rows", type=int, default=900, help="--loss-only: supervised tokens")
    ap.add_argument("--dtype", default="bfloat16", help="--loss-only: float32 or bfloat16")
    ap.add_argument("--chunks", type=lambda v: [int(c) for c in v.split(",")], default=[128, 256, 512],
                    help="--loss-only: train.loss_chunk values")
    ap.add_argument("overrides", nargs="*", help="more overrides for every variant (after --)")
    args = ap.parse_args()
    if args.loss_only:
        return loss_only(args)
    load = os.getloadavg()
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
          f"{load[0]:.1f} at start; python -m vlmsweep tracker=none{' eval.enabled=false' if args.no_eval else ''}"
          f"{f' train.max_steps={args.steps}' if args.steps else ''} {' '.join(args.overrides)}", flush=True)
    results: dict[str, list[dict[str, float]]] = {impl: [] for impl in args.impls}
    with tempfile.TemporaryDirectory(prefix="bench-loss-") as tmp:
        for r in range(args.repeats):
            order = args.impls[r % len(args.impls):] + args.impls[: r % len(args.impls)]
            for impl in order:
                row = run_once(impl, Path(tmp) / f"{impl}-{r}", args)
                results[impl].append(row)
                print(f"repeat {r} {impl:<8} peak RSS {row['peak_rss_gib']:.3f} GiB, train growth "
                      f"{row['train_growth_gib']:.3f} GiB, {row['steps_per_s']:.4f} steps/s, train loss "
                      f"{row['train_loss']:.5f}", flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    for impl, rows in results.items():
        print(f"{impl:<8} peak RSS GiB {describe([x['peak_rss_gib'] for x in rows])}; "
              f"steps/s {describe([x['steps_per_s'] for x in rows])}")
    base = args.impls[0]
    for impl in args.impls[1:]:
        for key, what in (("peak_rss_gib", "peak RSS"), ("steps_per_s", "steps/s")):
            ratio, low, high = ratio_of_medians([x[key] for x in results[impl]], [x[key] for x in results[base]])
            print(f"{impl} / {base} {what}: {ratio:.3f} [95% interval {low:.3f}-{high:.3f}]")


if __name__ == "__main__":
    main()
