"""The report's intervals hold their level (simulated A/A designs), the A/A command and its errors, the positive control."""

from __future__ import annotations

import json

import numpy as np
import pytest

from report_fakes import make_run
from vlmsweep.evaluate.perturb import flip_digits
from vlmsweep.report import build_report, load_runs
from vlmsweep.cli.calibrate import main as calibrate_main
from vlmsweep.report.effects import COMPARISON_WEIGHTS, FACTORIAL_WEIGHTS, contrast_estimate, interval
from vlmsweep.cli.report import main as report_main


def _false_positive_rate(kind: str, seeds: int, samples: int, cells: int, seed_sd: float, reps: int = 300) -> float:
    """Null data from the crossed model the report assumes (sample, cell x sample, seed and residual noise; no
    effect), normal or Bernoulli (a strict-parse-like 0/1 score): the share of 95% intervals excluding 0."""
    rng = np.random.default_rng(11)
    weights = FACTORIAL_WEIGHTS if cells == 4 else COMPARISON_WEIGHTS[None]
    hits = total = 0
    for _ in range(reps):
        b = rng.normal(0, 0.2, samples)
        g = rng.normal(0, 0.05, (cells, 1, samples))
        u = rng.normal(0, seed_sd, (cells, seeds, 1))
        if kind == "normal":
            x = 0.5 + b + g + u + rng.normal(0, 0.1, (cells, seeds, samples))
        else:
            p = 1 / (1 + np.exp(-(1.0 + 3 * (b + g + u))))
            x = (rng.random((cells, seeds, samples)) < p).astype(float)
        for w in weights:
            low, high = interval(contrast_estimate(x, w))
            hits += not (low <= 0.0 <= high)
            total += 1
    return hits / total


@pytest.mark.parametrize("kind", ["normal", "binary"])
@pytest.mark.parametrize("seeds,samples,cells,seed_sd", [(3, 40, 4, 0.05), (3, 8, 4, 0.3), (2, 40, 2, 0.3), (4, 64, 4, 0.0)])
def test_intervals_hold_their_level_under_the_null(kind, seeds, samples, cells, seed_sd):
    # 300 null datasets: a calibrated 95% interval excludes 0 in about 5% of them (binomial sd ~1.3% for the 2x2's 900)
    assert _false_positive_rate(kind, seeds, samples, cells, seed_sd) <= 0.08


def test_seed_noise_widens_intervals_a_one_seed_design_cannot_see():
    """Two seeds per cell with large seed noise: the interval's width follows the seed spread."""
    rng = np.random.default_rng(2)
    x = rng.normal(0, 0.01, (4, 2, 30)) + rng.normal(0, 0.3, (4, 2, 1))
    est = contrast_estimate(x, FACTORIAL_WEIGHTS[0])
    one_seed = contrast_estimate(x[:, :1], FACTORIAL_WEIGHTS[0])
    assert est.noise == "seeds and samples" and one_seed.noise == "samples only"
    assert est.se > 10 * one_seed.se  # the one-seed interval is narrow and blind to the seeds


def _aa_folder(root, n: int, seeds=None, differ: str | None = None, ids: int = 6):
    rng = np.random.default_rng(0)
    for k in range(n):
        seed = k if seeds is None else seeds[k]
        overrides = [f"seed={seed}"] + ([f"{differ}={k % 2}"] if differ else [])
        make_run(root / str(k), overrides=overrides, seed=seed,
                 scores={"content.field_em": list(rng.uniform(0, 1, ids)), "contract.strict_parse_rate": [1.0] * ids})
    return root


def test_aa_command_counts_every_split_and_writes_calibration_json(tmp_path, capsys):
    root = _aa_folder(tmp_path / "aa", 4)
    assert calibrate_main([str(root)]) == 0
    cal = json.loads((root / "calibration.json").read_text())
    # 4 runs into two arms of 2: the 3 distinct splits, one interval each; no 2x2 below 8 runs
    em = [m for m in cal["metrics"] if m["metric"] == "content.field_em"]
    assert len(em) == 1 and em[0]["tests"] == 3 and em[0]["design"] == "2 arms x 2 seeds"
    parse = next(m for m in cal["metrics"] if m["metric"] == "contract.strict_parse_rate")
    assert parse["false_positives"] == 0 and parse["median_half_width"] == 0  # identical runs: no spread, no effect
    assert 0 <= cal["fpr"] <= 1 and "false-positive rate" in capsys.readouterr().out


def test_aa_command_rejects_one_seed_and_differing_configs(tmp_path, capsys):
    assert calibrate_main([str(_aa_folder(tmp_path / "one", 1))]) == 2
    err = capsys.readouterr().err
    assert "an A/A needs at least 4 seeds of one config, found 1" in err and "run 0 (seed 0)" in err
    assert calibrate_main([str(_aa_folder(tmp_path / "two", 4, differ="quant"))]) == 2
    err = capsys.readouterr().err
    assert "the runs differ in quant" in err and "run 1: quant=1" in err


def test_report_refuses_cells_evaluated_on_different_test_sets(tmp_path, capsys):
    root = tmp_path / "sweep"
    k = 0
    for quant in ("nf4", "bf16"):
        for scope in ("llm", "all"):
            n = 5 if (quant, scope) == ("bf16", "all") else 4
            make_run(root / str(k), choices={"quant": quant, "scope": scope}, scores={"content.field_em": [0.5] * n})
            k += 1
    assert report_main([str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cells quant=nf4 scope=llm (run 0) and quant=bf16 scope=all (run 3) were evaluated on different test sets" in err


def test_flip_digits_changes_digits_only_and_keeps_json_valid():
    text = '{"patient_id": "12345", "dose": 10, "days": 7, "strength": "0.5 mg", "ratio": -0.25, "e": 1e-05}'
    for seed in range(20):
        out = flip_digits(text, 1.0, np.random.default_rng(seed))
        assert out.digits == out.flipped == sum(ch.isdigit() for ch in text)
        parsed = json.loads(out.text)  # a leading zero would make the number invalid JSON
        assert set(parsed) == set(json.loads(text))
        assert all(a != b for a, b in zip(text, out.text) if a.isdigit())
        assert [a for a in text if not a.isdigit()] == [b for b in out.text if not b.isdigit()]
    none = flip_digits(text, 0.0, np.random.default_rng(0))
    assert none.text == text and none.flipped == 0


def _control_arm(root, k: int, flip: float, seed: int, clean: list[float], injected: float):
    """A run of arm `flip`: digit accuracy per sample as scored (clean - injected share), with its run_info record."""
    folder = make_run(root / str(k), overrides=[f"eval.perturb.digit_flip={flip}", f"seed={seed}"], seed=seed,
                      scores={"content.digit_acc": [v - injected * v for v in clean]})
    info = json.loads((folder / "run_info.json").read_text())
    if flip:
        info["perturb"] = {"digit_flip": flip, "injected": {"content.digit_acc": -injected * float(np.mean(clean))}}
    (folder / "run_info.json").write_text(json.dumps(info))


def test_report_finds_a_positive_control_with_its_sign_and_covers_its_size(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "control"
    k = 0
    for flip in (0.0, 0.5):
        for seed in range(3):
            clean = list(np.clip(rng.uniform(0.3, 0.9, 12) + rng.normal(0, 0.05), 0, 1))
            _control_arm(root, k, flip, seed, clean, 0.5 if flip else 0.0)
            k += 1
    build_report(root, quiet=True, metrics=["content.digit_acc"])
    md = (root / "report" / "summary.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("- positive control:"))
    assert "eval.perturb.digit_flip on content.digit_acc: injected -0.3" in line
    assert line.endswith("found, sign right, interval covers it")
    runs = load_runs(root)
    assert {r.axes["eval.perturb.digit_flip"] for r in runs} == {"0.0", "0.5"}
