"""Real receipts: the SROIE sample loads through the manifest (skipped where the sample is not present)."""

import json
import os
from pathlib import Path

import pytest

from vlmsweep.data import load_image, load_sroie, read_manifest, schema_errors, write_manifest

# The 24-receipt sample lives in the team's shared/ folder beside (or inside) the checkout; override with
# VLMSWEEP_SROIE_SAMPLE. SROIE is research-only, so the project never copies it.
_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("VLMSWEEP_SROIE_SAMPLE") or next(
    (p for p in (_ROOT / "shared/data/sroie-sample", _ROOT.parent / "shared/data/sroie-sample") if p.is_dir()),
    _ROOT / "shared/data/sroie-sample"))
needs_sample = pytest.mark.skipif(not (SAMPLE / "key").is_dir(), reason=f"SROIE sample not present at {SAMPLE} "
                                  "(research-only data, not shipped; set VLMSWEEP_SROIE_SAMPLE)")


@needs_sample
def test_sroie_sample_loads_through_the_manifest(tmp_path):
    recs = load_sroie(SAMPLE)
    assert len(recs) == 24
    first = next(r for r in recs if r.id == "sroie-000")
    assert first.target == {"store": "BOOK TA .K (TAMAN DAYA) SDN BHD", "date": "25/12/2018",
                            "address": "NO.53 55,57 & 59, JALAN SAGU 18, TAMAN DAYA, 81100 JOHOR BAHRU, JOHOR.",
                            "items": None, "subtotal": None, "tax": None, "total": "9.00"}
    assert first.unannotated == ("items", "subtotal", "tax") and first.seed is None
    for r in recs:
        assert schema_errors("receipt", r.target) == []
    write_manifest(recs, tmp_path / "m.jsonl")
    back = read_manifest(tmp_path / "m.jsonl")
    assert list(back) == recs


@needs_sample
def test_huge_sroie_scan_is_loaded_downscaled():
    big = SAMPLE / "img" / "300.jpg"  # 4961 x 7016
    im = load_image(big, max_pixels=4 * 256 * 28 * 28)
    assert im.width * im.height <= 4 * 256 * 28 * 28 and im.mode == "RGB"


def test_sroie_layout_errors_name_the_file(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "key").mkdir()
    (tmp_path / "key" / "001.json").write_text(json.dumps({"company": "A", "total": "1.00"}))
    with pytest.raises(ValueError, match=r"do not pair up for \['001'\]"):
        load_sroie(tmp_path)
    (tmp_path / "img" / "001.jpg").write_bytes(b"")
    (tmp_path / "key" / "001.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"001\.json: not valid JSON"):
        load_sroie(tmp_path)
    (tmp_path / "key" / "001.json").write_text(json.dumps({"company": "A", "total": "1.00"}))
    rec = load_sroie(tmp_path)[0]
    assert rec.target["store"] == "A" and rec.target["date"] is None and rec.target["total"] == "1.00"
    with pytest.raises(FileNotFoundError, match="no SROIE receipts in any layout .* RRC task-3 download"):
        load_sroie(tmp_path / "img")


def test_the_mirror_root_and_the_rrc_download_layouts_load_and_split_from_the_command_line(tmp_path, capsys):
    from PIL import Image

    from vlmsweep.cli.data import main

    key = {"company": "CORNER CAFE", "date": "14/03/2025", "address": "12 MAIN ST", "total": "9.00"}
    rrc = tmp_path / "task3"  # the RRC download: X51005200931.jpg beside X51005200931.txt (JSON text)
    mirror = tmp_path / "ICDAR-2019-SROIE" / "data"  # the mirror's root holds data/img + data/key
    for folder, keys in ((rrc, rrc), (mirror / "img", mirror / "key")):
        folder.mkdir(parents=True)
        keys.mkdir(parents=True, exist_ok=True)
    for i in range(10):
        stem = f"X5100520{i:04d}"
        Image.new("RGB", (40, 80), "white").save(rrc / f"{stem}.jpg")
        (rrc / f"{stem}.txt").write_text(json.dumps({**key, "total": f"{i}.00"}))
        Image.new("RGB", (40, 80), "white").save(mirror / "img" / f"{i:03d}.jpg")
        (mirror / "key" / f"{i:03d}.json").write_text(json.dumps(key))
    assert [r.target["total"] for r in load_sroie(rrc)] == [f"{i}.00" for i in range(10)]
    assert len(load_sroie(tmp_path / "ICDAR-2019-SROIE")) == 10

    assert main(["sroie", "--root", str(rrc), "--out", str(tmp_path / "out"), "--test", "0.2"]) == 0
    train, test = read_manifest(tmp_path / "out" / "train.jsonl"), read_manifest(tmp_path / "out" / "test.jsonl")
    assert [r.id for r in test] == ["sroie-X51005200004", "sroie-X51005200009"]  # every 5th, by sorted id
    assert len(train) == 8 and not {r.id for r in train} & {r.id for r in test}
    assert "8 -> " in capsys.readouterr().out
    assert main(["sroie", "--root", str(rrc), "--out", str(tmp_path / "bad"), "--test", "20"]) == 2
    assert "--test 20.0: give the held-out share as a fraction" in capsys.readouterr().err
