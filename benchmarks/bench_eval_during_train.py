"""What evaluation during training costs: `python -m vlmsweep` as it is (train.eval_every=0, the default) against the
same command with `train.eval_every=N train.select=content.field_em`, in alternation, wall time of each whole command.

    python benchmarks/bench_eval_during_train.py                        # the default command, once per arm
    python benchmarks/bench_eval_during_train.py --repeats 3 data.test_size=16   # a smaller test set, 3 runs per arm

Overrides after the options go to both arms. Prints the machine, each arm's wall time (median, range), the ratio of
the medians with its bootstrap interval (2+ repeats), and the eval-on runs' cost.eval_during_train_seconds and
train.seconds from their metrics.json. The default command is unchanged by the feature when it is off (no validation
split is built, no callback is added): the ratio shows what turning it on costs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multirun import cli_env, machine, machine_line  # noqa: E402
from spread import describe, ratio_of_medians  # noqa: E402


def one_run(folder: Path, overrides: list[str]) -> tuple[float, dict[str, float]]:
    cmd = [sys.executable, "-m", "vlmsweep", "tracker=none", f"hydra.run.dir={folder}", *overrides]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=folder.parent, env=cli_env(), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    return seconds, json.loads((folder / "metrics.json").read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1, help="runs per arm, alternating")
    ap.add_argument("--every", type=int, default=10, help="train.eval_every of the eval-on arm")
    ap.add_argument("overrides", nargs="*", help="overrides given to both arms")
    args = ap.parse_args(argv)
    arms = {"off": [], "on": [f"train.eval_every={args.every}", "train.select=content.field_em"]}
    seconds: dict[str, list[float]] = {a: [] for a in arms}
    on_metrics: list[dict[str, float]] = []
    print("machine:", machine_line(machine()), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-eval-train-") as tmp:
        for i in range(args.repeats):
            for arm, extra in arms.items():
                took, metrics = one_run(Path(tmp) / f"{arm}-{i}", [*args.overrides, *extra])
                seconds[arm].append(took)
                if arm == "on":
                    on_metrics.append(metrics)
                print(f"  {arm} #{i}: {took:.1f} s", flush=True)
    for arm in arms:
        print(f"{arm:>3}: {describe(seconds[arm])} s  ({' '.join(arms[arm]) or 'train.eval_every=0'})")
    ratio, low, high = ratio_of_medians(seconds["on"], seconds["off"])
    print(f"on / off: {ratio:.3f}" + (f" (95% bootstrap {low:.3f}-{high:.3f})" if low == low else ""))
    for m in on_metrics:
        print(f"  on: cost.eval_during_train_seconds={m.get('cost.eval_during_train_seconds', float('nan')):.1f}, "
              f"train.eval_points={m.get('train.eval_points', float('nan')):.0f}, "
              f"train.seconds={m.get('train.seconds', float('nan')):.1f}, "
              f"train.selected_step={m.get('train.selected_step', float('nan')):.0f}")


if __name__ == "__main__":
    main()
