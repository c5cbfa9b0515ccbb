"""`python -m vlmsweep.report.calibrate SWEEP_DIR`: how often the report's intervals call an A/A difference real."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlmsweep.files import write_json
from vlmsweep.report.calibrate import DEFAULT_SPLITS, aa_runs, calibrate, default_metrics, print_calibration


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m vlmsweep.report.calibrate",
        description="A/A calibration of the report's intervals on a multirun of one config under several seeds "
                    "(python -m vlmsweep -m 'seed=range(8)'): false-positive rate and minimum detectable effect.")
    ap.add_argument("dir", type=Path, help="multirun folder of one config under several seeds")
    ap.add_argument("--metrics", default=None, help="comma-separated metric names (default: the headline metrics)")
    ap.add_argument("--splits", type=int, default=DEFAULT_SPLITS, help="random splits per design")
    ap.add_argument("--out", type=Path, default=None, help="calibration.json path (default: DIR/calibration.json)")
    args = ap.parse_args(argv)
    try:
        runs = aa_runs(args.dir)
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else default_metrics(runs)
        unknown = [m for m in metrics if not any(m in r.metrics for r in runs)]
        if unknown:
            raise ValueError(f"--metrics: {', '.join(unknown)} not in the runs' metrics.json under {args.dir}")
        cal = calibrate(runs, metrics, splits=args.splits)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_calibration(cal)
    out = args.out or args.dir / "calibration.json"
    write_json(out, cal.as_dict(), ensure_ascii=True)
    print(f"calibration: {out}")
    return 0
