"""Named evaluation slices (eval.slices): configuration errors, metric directions, the report table, and the
numeric challenge measured against the clean synthetic set with the OCR baseline."""

from __future__ import annotations

import json

import pytest

from conftest import compose
from test_ocr import needs_tesseract
from vlmsweep.metrics import direction_of, is_wall_clock


def test_an_unknown_slice_names_the_option_that_fixes_it(tmp_path):
    from vlmsweep.data.slices import slice_names

    cfg = compose(["eval.slices=[synthetic,real_receipts]"])
    with pytest.raises(ValueError, match=r"eval.slice_manifests.real_receipts=PATH"):
        slice_names(cfg.eval)
    cfg = compose(["eval.slices=[synthetic]", f"+eval.slice_manifests.real_receipts={tmp_path}/r.jsonl"])
    assert slice_names(cfg.eval) == ["synthetic", "real_receipts"]  # a manifest slice needs no second mention


def test_the_sweep_objective_can_name_a_slice_it_evaluates():
    cfg = compose(["eval.slices=[numeric_challenge]", "sweep.objective=slice/numeric_challenge/content.e2e_field_em"])
    assert cfg.sweep.objective == "slice/numeric_challenge/content.e2e_field_em"
    assert direction_of(cfg.sweep.objective) == "maximize"
    assert direction_of("slice/numeric_challenge/by_domain.receipt.content.cer") == "minimize"
    assert is_wall_clock("slice/x/cost.eval_seconds_per_sample")
    with pytest.raises(ValueError, match=r"slice 'real_receipts' is not evaluated"):
        compose(["sweep.objective=slice/real_receipts/content.field_em"])
    with pytest.raises(ValueError, match=r"retrain loop does not evaluate slices"):
        compose(["eval.slices=[numeric_challenge]", "loop.cycles=1"])


def test_slice_table_puts_slices_side_by_side():
    from vlmsweep.evaluate.slices import slice_table

    metrics = {"slice/a/samples": 4.0, "slice/a/content.field_em": 0.5, "slice/b/samples": 2.0,
               "slice/b/content.field_em": 0.25, "slice/b/tags.digit_flip": 1.0}
    table = slice_table(metrics, ["a", "b"])
    assert "| metric | better | a | b |" in table
    assert "| content.field_em | ↑ | 0.500 | 0.250 |" in table
    assert "| tags.digit_flip | ↓ | – | 1 |" in table and "| samples | | 4 | 2 |" in table
    assert "content.anls" not in table  # a metric no slice has is left out, not printed as a row of dashes


@needs_tesseract
@pytest.mark.slow
def test_numeric_challenge_is_harder_for_the_ocr_baseline_than_the_clean_set(tmp_path):
    """Measured, not assumed: five pages of each (one per domain), read by Tesseract + the rules."""
    from vlmsweep.run import run

    cfg = compose(["model=ocr_tesseract", "data.test_size=5", "eval.slice_size=5", "tracker=none",
                   "eval.slices=[synthetic,numeric_challenge]"], output_dir=tmp_path)
    metrics = run(cfg)
    clean, hard = "slice/synthetic/", "slice/numeric_challenge/"
    assert metrics[clean + "samples"] == metrics[hard + "samples"] == 5
    assert metrics[clean + "content.e2e_field_em"] == metrics["content.e2e_field_em"]  # synthetic = the test set here
    for m in ("content.e2e_field_em", "content.digit_acc", "content.anls"):
        assert metrics[hard + m] < metrics[clean + m] - 0.1, m
    assert json.loads((tmp_path / "metrics.json").read_text())[hard + "content.digit_acc"] == metrics[hard + "content.digit_acc"]
    hard_samples = (tmp_path / "slices" / "numeric_challenge" / "samples.jsonl").read_text().splitlines()
    assert sorted(json.loads(s)["domain"] for s in hard_samples) == sorted(
        ["prescription_ko", "prescription_zh", "receipt", "receipt_ko", "receipt_zh"])
    assert "## Slices" in (tmp_path / "report.md").read_text()
    hard_report = (tmp_path / "slices" / "numeric_challenge" / "report.md").read_text()
    assert "- data: slice numeric_challenge: 5 rendered pages" in hard_report  # says which set it scored
