"""`python -m vlmsweep.report DIR`: compare the runs of a multirun, sweep or loop folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlmsweep.report.build import build_report, log_to_wandb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vlmsweep.report", description="Compare the runs of a multirun, sweep or loop folder.")
    ap.add_argument("dir", type=Path, help="multirun folder (0/, 1/, ...), Optuna sweep folder, or loop run (cycle_N/)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: DIR/report)")
    ap.add_argument("--metrics", default=None, help="comma-separated metric names (default: the headline metrics)")
    ap.add_argument("--storage", default=None,
                    help="Optuna storage URL of the sweep's study (default: DIR/optuna.db, else the trials' sweep.storage)")
    ap.add_argument("--wandb", choices=("offline", "online"), default=None,
                    help="also log the effects and summary tables, the plots and report.html to a W&B run named "
                         "'report' in the experiment's group (docs/wandb.md)")
    ap.add_argument("--wandb-project", default=None, help="W&B project (default: the runs' tracker.project)")
    ap.add_argument("--wandb-entity", default=None, help="W&B entity (default: the runs' tracker.entity)")
    args = ap.parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        html_path = build_report(args.dir, args.out, metrics, storage=args.storage)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.wandb:
        log_to_wandb(args.dir, html_path.parent, mode=args.wandb, project=args.wandb_project, entity=args.wandb_entity,
                     metrics=metrics, storage=args.storage)
    return 0
