"""benchmarks/bench_threads.py reads a run's training and evaluation seconds from its log."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_threads import figures  # noqa: E402 - a script beside the others

LOG = """[2026-12-06 20:15:01,000][vlmsweep.pipeline.stages][INFO] - trainable parameters by part: {'llm': 65536}
{'loss': '0.5726', 'grad_norm': '0.1417', 'learning_rate': '0.002', 'epoch': '0.3125'}
{'train_runtime': '38.6', 'train_samples_per_second': '3.109', 'train_loss': '0.5229'}
[2026-12-06 20:16:57,312][vlmsweep.evaluate][INFO] - evaluated 16 samples in 7.4 s
"""


def test_figures_are_the_logged_train_runtime_and_evaluation_seconds():
    assert figures(LOG) == {"train_s": 38.6, "eval_s": 7.4}


def test_a_log_without_them_gives_none_rather_than_a_number():
    assert figures("[vlmsweep][ERROR] - data.test_manifest=x.jsonl: not found\n") == {"train_s": None, "eval_s": None}
