"""benchmarks/bench_budget.py without training: its sweep, and the report's budget effect read from hand-made runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from report_fakes import make_run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_budget import budget_effects, main, parse_levels, sweep_overrides  # noqa: E402 - a script beside the others


def test_the_sweep_is_the_budget_then_the_seeds():
    assert sweep_overrides(parse_levels("64tok,256tok"), 3) == ["max_pixels=64tok,256tok", "seed=0,1,2"]
    for bad in ("64tok", "64tok,64tok", "64tok,256tok,512tok"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_levels(bad)


def _multirun(root: Path, em: dict[str, list[list[float]]], parse: dict[str, list[float]]) -> Path:
    """Runs in Hydra's order of max_pixels=64tok,256tok seed=0,1,2: em[level][seed] = per-sample field EM."""
    k = 0
    for level in ("64tok", "256tok"):
        for seed, scores in enumerate(em[level]):
            make_run(root / str(k), choices={"max_pixels": level}, overrides=[f"max_pixels={level}", f"seed={seed}"],
                     seed=seed, scores={"content.field_em": scores, "contract.strict_parse_rate": parse[level]})
            k += 1
    return root


def test_the_effect_is_the_reports_256_minus_64_with_its_verdict(tmp_path):
    low = [[0.1, 0.2, 0.1, 0.2], [0.2, 0.1, 0.2, 0.1], [0.1, 0.1, 0.2, 0.2]]  # 0.15 each seed
    high = [[0.6, 0.7, 0.7, 0.7], [0.7, 0.6, 0.6, 0.6], [0.6, 0.6, 0.7, 0.7]]  # 0.675, 0.625, 0.65
    root = _multirun(tmp_path, {"64tok": low, "256tok": high}, {"64tok": [1.0] * 4, "256tok": [1.0] * 4})
    result = budget_effects(root)
    assert (result["baseline"], result["other"], result["effect_is"]) == ("64tok", "256tok", "256tok minus 64tok")
    assert result["seeds"] == ["0", "1", "2"] and result["runs"] == {"64tok": 3, "256tok": 3}
    em = result["metrics"]["content.field_em"]
    assert em["mean"] == pytest.approx({"64tok": 0.15, "256tok": 0.65})
    assert em["effect"] == pytest.approx(0.5) and 0 < em["low"] < em["effect"] < em["high"]
    assert em["verdict"] == "found" and em["n_seeds"] == 3 and em["n_samples"] == 4 and em["mde"] > 0
    parse = result["metrics"]["contract.strict_parse_rate"]  # identical everywhere: a zero-width interval on 0
    assert parse["effect"] == 0 and parse["verdict"] == "no difference: exactly 0 in every paired comparison"
    digits = result["metrics"]["content.digit_acc"]  # in no run's metrics.json
    assert digits["effect"] is None and digits["verdict"].startswith("no value")


def test_reuse_prints_a_table_and_one_json_line(tmp_path, capsys):
    same = [[0.3, 0.4, 0.5, 0.4]] * 3
    root = _multirun(tmp_path / "multirun", {"64tok": same, "256tok": same}, {"64tok": [1.0] * 4, "256tok": [0.0, 1.0, 1.0, 1.0]})
    main(["--reuse", str(root)])
    lines = capsys.readouterr().out.strip().splitlines()
    out = json.loads(lines[-1])
    assert out["reused"] and out["runs_seconds"] is None and out["machine"]["cores"] >= 1
    assert out["metrics"]["content.field_em"]["effect"] == 0
    assert any(line.startswith("content.field_em") and "no difference: exactly 0 in every paired comparison" in line for line in lines)
    with pytest.raises(SystemExit):
        main(["--reuse", str(root), "--out", str(tmp_path / "other")])
