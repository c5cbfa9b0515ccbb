"""Comparison of many runs (multirun, Optuna sweep, retrain loop): tables, factor effects, plots, HTML.

Its names load on first use (PEP 562): a run imports `vlmsweep.report.runs` for the headline metrics, and should not
pay for matplotlib and scipy, which only the comparison needs."""

from __future__ import annotations

import importlib

_WHERE = {"build_report": "vlmsweep.report.build", "RunResult": "vlmsweep.report.runs", "load_runs": "vlmsweep.report.runs"}

__all__ = ["RunResult", "build_report", "load_runs"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
