"""Comparison of many runs (multirun, Optuna sweep, retrain loop): tables, factor effects, plots, HTML."""

from vlmsweep.report.build import build_report
from vlmsweep.report.runs import RunResult, load_runs

__all__ = ["RunResult", "build_report", "load_runs"]
