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
    with pytest.raises(FileNotFoundError, match="expected the SROIE layout"):
        load_sroie(tmp_path / "img")
