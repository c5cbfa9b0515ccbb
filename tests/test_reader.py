"""The shipped reader (`model=tiny_reader`): its files, its card, and a run on real receipts from a hand-written
manifest with the OCR hint, through the command line from a folder outside the checkout."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from safetensors.torch import load_file

from conftest import compose
from test_ocr import needs_tesseract
from userdata import REPO, draw, samples, vlmsweep

SROIE_SAMPLE = REPO.parent / "shared" / "data" / "sroie-sample"


def test_the_shipped_reader_assembles_apart_from_the_warm_model_and_its_card_names_the_mechanism(tmp_path, warm_path):
    from vlmsweep.model.shipped import READER_DIR, check_shipped, ensure_reader_model

    check_shipped(READER_DIR)
    reader = ensure_reader_model(tmp_path)
    assert reader.name.startswith("tiny-reader-") and reader.parent == tmp_path / "models"
    card = (reader / "README.md").read_text(encoding="utf-8")
    assert "own text" in card and "never from the pixels" in card and "tesseract" in card
    recipe = json.loads((reader / "warmup.json").read_text())["recipe"]
    assert recipe["hint_source"] == "layout" and recipe["ocr_hint"] == "tesseract"
    a, b = load_file(reader / "model.safetensors"), load_file(warm_path / "model.safetensors")
    assert a.keys() == b.keys() and any(not a[k].equal(b[k]) for k in a)  # another model in the same layout


def test_the_reader_without_a_hint_is_warned_about(caplog, tmp_path):
    from vlmsweep.pipeline.stages import Pass, hint_stage

    cfg = compose(["model=tiny_reader"])
    assert cfg.model.path == "tiny_reader" and cfg.ocr_hint.engine == "none"
    empty = Pass(out_dir=tmp_path, train=[], evals={}, tracker=None)
    with caplog.at_level(logging.WARNING, logger="vlmsweep.pipeline.stages"):
        p, _ = hint_stage(cfg, empty, tokenizer=None)
    assert "ocr_hint=none gives it none" in caplog.text and p is empty
    caplog.clear()
    hint_stage(compose(["model=tiny_warm"]), empty, tokenizer=None)
    assert "ocr_hint=none" not in caplog.text  # the default model never had a hint


@pytest.mark.slow
@needs_tesseract
def test_the_reader_reads_real_receipts_of_a_hand_written_manifest_with_their_ocr_text(tmp_path, offline_env):
    """Three SROIE receipts (or, without the sample set, receipts typed by hand), listed in a manifest written here,
    evaluated by the reader with Tesseract's text in each prompt: every page gets its hint, the report names the
    mechanism."""
    (tmp_path / "img").mkdir()
    rows = []
    if SROIE_SAMPLE.is_dir():
        for stem in ("000", "003", "007"):
            shutil.copy(SROIE_SAMPLE / "img" / f"{stem}.jpg", tmp_path / "img")
            key = json.loads((SROIE_SAMPLE / "key" / f"{stem}.json").read_text())
            rows.append((stem, {"store": key["company"], "date": key["date"], "address": key["address"],
                                "items": None, "subtotal": None, "tax": None, "total": key["total"]}))
    else:
        for stem, total in (("000", "9.00"), ("003", "12.50"), ("007", "3.20")):
            draw(tmp_path / "img" / f"{stem}.jpg", ["CORNER CAFE", "14/03/2025", f"TOTAL {total}"])
            rows.append((stem, {"store": "CORNER CAFE", "date": "14/03/2025", "address": None, "items": None,
                                "subtotal": None, "tax": None, "total": total}))
    (tmp_path / "receipts.jsonl").write_text("".join(
        json.dumps({"id": f"r{stem}", "image": f"img/{stem}.jpg", "domain": "receipt", "target": target,
                    "unannotated": ["items", "subtotal", "tax"]}) + "\n"
        for stem, target in rows), encoding="utf-8")
    done = vlmsweep(["model=tiny_reader", "ocr_hint=tesseract", "train.enabled=false", "data.test_manifest=receipts.jsonl",
                     "eval.max_new_tokens=96", "eval.batch_size=3", "tracker=none", "hydra.run.dir=run"], tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["ocr_hint.pages"] == 3 and metrics["ocr_hint.failed_pages"] == 0 and done.returncode == 0
    scored = samples(tmp_path / "run")
    assert len(scored) == 3 and all(s["ocr_hint"] for s in scored)
    total = {s["id"]: s["target"]["total"] for s in scored}
    assert all(total[s["id"]] in s["ocr_hint"] for s in scored if SROIE_SAMPLE.is_dir())  # Tesseract read each total
    report = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "**The model is the embedded reader**" in report and "## OCR hint" in report
