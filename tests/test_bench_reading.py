"""benchmarks/bench_reading.py's lines without training: what each spacing puts in which visual token, as the
manual's table of probes describes them."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_reading  # noqa: E402 - a script beside the others
from bench_reading import CANVAS, line  # noqa: E402

BLANK = 10


@pytest.mark.parametrize("seed", range(4))
def test_token_spacing_puts_one_digit_in_each_column_in_order(seed):
    image, text, labels = line(random.Random(seed), 1.0, "token")
    assert image.size == CANVAS and 4 <= len(text) <= 9
    row = next(r for r in labels.tolist() if any(v != BLANK for v in r))
    assert row[1:1 + len(text)] == [int(c) for c in text] and row[0] == BLANK


@pytest.mark.parametrize("seed", range(4))
def test_half_spacing_puts_two_digits_in_each_column_and_labels_the_left_one(seed):
    _, text, labels = line(random.Random(seed), 1.0, "half")
    assert 8 <= len(text) <= 14
    row = next(r for r in labels.tolist() if any(v != BLANK for v in r))
    left = [int(c) for c in text[0::2]]
    assert row[1:1 + len(left)] == left and all(v == BLANK for v in row[1 + len(left):])


def test_print_spacing_is_the_fonts_own_and_shrinks_with_the_page_scale():
    _, text, labels = line(random.Random(0), 1.0, "print")
    labelled = sum(v != BLANK for r in labels.tolist() for v in r)
    assert 8 <= len(text) <= 14 and 0 < labelled < len(text)  # about three digits to a token: most are unlabelled


def test_slot_labels_hold_every_digit_of_a_print_line_in_reading_order(monkeypatch):
    monkeypatch.setattr(bench_reading, "SLOTS", 3)
    _, text, labels = line(random.Random(1), 1.0, "print")
    assert labels.shape == (CANVAS[1] // 28, CANVAS[0] // 28, 3)
    read = [v for v in labels.reshape(-1).tolist() if v != BLANK]  # row by row, token by token, slot by slot
    assert read == [int(c) for c in text]


def test_page_probe_answers_the_patient_id_the_generated_page_prints():
    from vlmsweep.data.build import render_sample

    rng = random.Random(3)
    image, text, _ = bench_reading.page(rng)
    replay = random.Random(3)
    while True:  # the same draws as page(): a seed, a form; pages with a null id are redrawn
        sample = render_sample(replay.randrange(1 << 30), replay.choice(["prescription_ko", "prescription_zh"]))
        if sample.target["patient_id"]:
            break
    assert text == sample.target["patient_id"] and image.tobytes() == sample.image.tobytes()
    ids = {bench_reading.page(random.Random(s))[1] for s in range(12)}
    assert len(ids) == 12 and all(set(i) <= set(bench_reading.PAGE_CHARS) for i in ids)
    assert any(i.startswith("MZ") or "-" not in i for i in ids) and any("-" in i for i in ids)  # both forms
