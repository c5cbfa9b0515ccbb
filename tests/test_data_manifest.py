"""Manifest I/O and image loading: round trip, every bad-input case with its message, image modes."""

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmsweep.data import (ImageLoadError, ManifestError, Record, empty_target, load_image, read_manifest,
                           write_manifest)

RX = empty_target("prescription") | {"patient_name": "김민준", "diagnosis_codes": ["J06.9"]}


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (20, 30), "white").save(tmp_path / "img" / "a.jpg")
    return tmp_path


def _line(**kw):
    base = {"id": "a", "image": "img/a.jpg", "domain": "prescription_ko", "target": RX}
    base.update(kw)
    return json.dumps({k: v for k, v in base.items() if v is not ...}, ensure_ascii=False)


def test_round_trip_keeps_records_and_writes_relative_paths(folder):
    recs = [Record("a", folder / "img" / "a.jpg", "prescription_ko", RX, "prescription_ko", seed=7),
            Record("b", folder / "img" / "a.jpg", "prescription_zh", empty_target("prescription"), "receipt"),
            Record("c", folder / "img" / "a.jpg", "receipt", empty_target("receipt") | {"items": None}, "receipt",
                   origin="manifest", unannotated=("items",)),
            Record("d", folder / "img" / "a.jpg", "prescription_ko", RX, "prescription_ko", origin="synth:0:digit_flip",
                   parents=("a", "b"))]
    write_manifest(recs, folder / "sub" / "m.jsonl")
    first = json.loads((folder / "sub" / "m.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["image"] == "../img/a.jpg" and "image_domain" not in first
    back = read_manifest(folder / "sub" / "m.jsonl")
    assert list(back) == recs and back.skipped == []


@pytest.mark.parametrize("line, reason", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "expected a JSON object, got list"),
    (_line(target=...), "missing key(s) ['target']"),
    (_line(image="img/missing.jpg"), "image 'img/missing.jpg' not found"),
    (_line(domain="invoice"), "unknown domain 'invoice'"),
    (_line(image_domain="invoice"), "unknown image_domain 'invoice'"),
    (_line(target=RX | {"patient_id": 12345}), "target breaks the prescription schema: patient_id: 12345 is not of type"),
    (_line(target={"patient_name": None}), "target breaks the prescription schema"),
    (_line(extra=1), "unknown key(s) ['extra']"),
    (_line(id=""), "id must be a non-empty string"),
])
def test_bad_line_is_an_error_naming_file_line_and_reason(folder, line, reason):
    m = folder / "m.jsonl"
    m.write_text(_line(id="ok") + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    assert f"{m}:3: " in str(e.value) and reason in str(e.value)


def test_duplicate_id_is_an_error(folder):
    m = folder / "m.jsonl"
    m.write_text(_line() + "\n" + _line() + "\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"m.jsonl:2: duplicate id 'a'"):
        read_manifest(m)


def test_skip_bad_lines_counts_and_reports(folder, caplog):
    m = folder / "m.jsonl"
    m.write_text("\n".join([_line(id="1"), "{oops", _line(id="2", domain="x"), _line(id="3")]) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        res = read_manifest(m, skip_bad_lines=True)
    assert [r.id for r in res] == ["1", "3"]
    assert [n for n, _ in res.skipped] == [2, 3] and "unknown domain 'x'" in res.skipped[1][1]
    assert "skipped 2 bad line(s) of 4" in caplog.text


def test_empty_after_filtering_is_an_error(folder):
    m = folder / "m.jsonl"
    m.write_text("{oops\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"no usable records \(1 bad line\(s\) skipped\)"):
        read_manifest(m, skip_bad_lines=True)
    m.write_text("\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="empty file"):
        read_manifest(m)
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(folder / "nope.jsonl")


def test_write_refuses_invalid_targets_and_duplicate_ids(folder):
    r = Record("a", folder / "img" / "a.jpg", "receipt", {"store": 1}, "receipt")
    with pytest.raises(ValueError, match="record 'a': target breaks the schema"):
        write_manifest([r], folder / "m.jsonl")
    ok = Record("a", folder / "img" / "a.jpg", "receipt", empty_target("receipt"), "receipt")
    with pytest.raises(ValueError, match="duplicate record id 'a'"):
        write_manifest([ok, ok], folder / "m.jsonl")


# --- images ---------------------------------------------------------------------------------

def test_modes_become_rgb(tmp_path):
    cases = {
        "cmyk.jpg": Image.new("CMYK", (8, 8), (0, 0, 0, 0)),  # no ink: white
        "grey.png": Image.new("L", (8, 8), 255),
        "pal.png": Image.new("RGB", (8, 8), "white").convert("P"),
        "alpha.png": Image.new("RGBA", (8, 8), (0, 0, 0, 0)),  # transparent: composited on white
        "la.png": Image.new("LA", (8, 8), (0, 0)),
        "bilevel.png": Image.new("1", (8, 8), 1),
    }
    for name, im in cases.items():
        im.save(tmp_path / name)
        out = load_image(tmp_path / name)
        assert out.mode == "RGB" and out.getpixel((3, 3)) == (255, 255, 255), name


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    arr = np.full((4, 4), 32768, dtype=np.uint16)  # mid grey in 16 bits
    Image.fromarray(arr).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    assert load_image(tmp_path / "g16.png").getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    im.save(tmp_path / "o.jpg", exif=exif)
    assert load_image(tmp_path / "o.jpg").size == (20, 40)


def test_huge_jpeg_is_downscaled_early(tmp_path):
    Image.new("RGB", (4961, 7016), "white").save(tmp_path / "big.jpg", quality=50)
    out = load_image(tmp_path / "big.jpg", max_pixels=4 * 256 * 28 * 28)
    assert out.width * out.height <= 4 * 256 * 28 * 28
    assert abs(out.width / out.height - 4961 / 7016) < 0.01
    png = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000), "white").save(png)
    assert load_image(png, max_pixels=20000).size == (200, 100)


def test_truncated_and_corrupt_images_name_the_file(tmp_path):
    Image.new("RGB", (300, 300), "red").save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"t\.jpg: truncated or corrupt image"):
        load_image(tmp_path / "t.jpg")
    (tmp_path / "c.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match=r"c\.png: truncated or corrupt image"):
        load_image(tmp_path / "c.png")
    with pytest.raises(ImageLoadError, match=r"none\.jpg: image file not found"):
        load_image(tmp_path / "none.jpg")


def test_a_byte_order_mark_is_accepted_and_a_non_utf8_line_names_its_byte_offset(folder):
    m = folder / "m.jsonl"
    good = _line(id="a").encode("utf-8")
    latin = _line(id="b", target=RX | {"prescriber": "José"}).encode("utf-8").replace("José".encode(), "José".encode("latin-1"))
    m.write_bytes(b"\xef\xbb\xbf" + good + b"\n" + latin + b"\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(m)
    offset = len(b"\xef\xbb\xbf" + good + b"\n") + latin.index(b"\xe9")
    assert f"m.jsonl:2: not UTF-8 (byte 0xe9 at byte offset {offset} of the file" in str(err.value)
    res = read_manifest(m, skip_bad_lines=True)
    assert [r.id for r in res] == ["a"] and res.skipped[0][0] == 2  # the BOM did not spoil line 1


def test_check_images_turns_unusable_images_into_bad_lines_naming_file_and_id(folder):
    Image.new("RGB", (1, 3000), "white").save(folder / "img" / "sliver.png")
    Image.new("RGB", (300, 200), "white").save(folder / "img" / "whole.jpg")
    data = (folder / "img" / "whole.jpg").read_bytes()
    (folder / "img" / "cut.jpg").write_bytes(data[: len(data) // 2])
    m = folder / "m.jsonl"
    m.write_text("\n".join([_line(id="a"), _line(id="s", image="img/sliver.png"), _line(id="c", image="img/cut.jpg")]),
                 encoding="utf-8")
    assert len(read_manifest(m)) == 3  # without the image check only presence is checked
    with pytest.raises(ManifestError, match=r"m.jsonl:2: id 's': unusable image: .*sliver.png: aspect ratio 3000:1"):
        read_manifest(m, check_images=True)
    res = read_manifest(m, skip_bad_lines=True, check_images=True)
    assert [r.id for r in res] == ["a"]
    assert [n for n, _ in res.skipped] == [2, 3] and "truncated or corrupt image" in res.skipped[1][1]


def test_a_missing_manifest_fails_before_any_model_is_loaded(tmp_path, monkeypatch):
    from conftest import FAST, compose
    from vlmsweep import run as run_mod
    from vlmsweep.model import load as model_load

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the manifest was checked")

    monkeypatch.setattr(model_load, "load", no_model)
    with pytest.raises(ManifestError, match="nope.jsonl: manifest not found"):
        run_mod.run(compose(FAST + [f"data.train_manifest={tmp_path / 'nope.jsonl'}"], output_dir=tmp_path / "r"))
    with pytest.raises(ManifestError, match="nope.jsonl: manifest not found"):  # the loop checks its manifests first too
        run_mod.run(compose(FAST + ["loop.cycles=1", f"data.mining_manifest={tmp_path / 'nope.jsonl'}"],
                            output_dir=tmp_path / "l"))


def test_a_missing_leakage_keyword_file_fails_before_any_model_is_loaded(tmp_path, monkeypatch):
    from conftest import FAST, compose
    from vlmsweep import run as run_mod
    from vlmsweep.model import load as model_load

    monkeypatch.setattr(model_load, "load", lambda *a, **k: pytest.fail("the model was loaded first"))
    with pytest.raises(ValueError, match="eval.leakage_keywords: '@nope.txt': no such file"):
        run_mod.run(compose(FAST + ["eval.leakage_keywords=[@en,@nope.txt]"], output_dir=tmp_path / "r"))


def test_image_paths_are_relative_within_a_tree_and_absolute_across_the_root(tmp_path):
    from vlmsweep.data.manifest import manifest_path

    assert manifest_path(tmp_path / "img" / "a.jpg", tmp_path / "sub") == "../img/a.jpg"
    assert manifest_path(tmp_path / "sub" / "a.jpg", tmp_path / "sub") == "a.jpg"
    # a manifest under the temporary folder naming an image elsewhere: only the root in common
    elsewhere = Path("/opt/data/a.jpg") if not str(tmp_path).startswith("/opt") else Path("/srv/data/a.jpg")
    assert manifest_path(elsewhere, tmp_path / "sub") == elsewhere.as_posix()


def test_check_refuses_a_fifo_and_system_files_by_name_without_opening_them(folder):
    from userdata import vlmsweep

    os.mkfifo(folder / "img" / "pipe.jpg")  # nobody writes to it: opening it would wait forever
    lines = [_line(), _line(id="b", image="img/pipe.jpg"), _line(id="c", image="/proc/self/environ"),
             _line(id="d", image="/dev/zero")]
    (folder / "m.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    checked = vlmsweep(["check", "m.jsonl"], folder, module="vlmsweep.data", check=False, timeout=120)
    problems = {x.split(":")[1]: x for x in checked.stdout.splitlines() if x.startswith("m.jsonl:")}
    assert checked.returncode == 1 and sorted(problems) == ["2", "3", "4"]
    assert "is a FIFO" in problems["2"] and "pipe.jpg" in problems["2"]
    assert "a system file under /proc/" in problems["3"] and "a system file under /dev/" in problems["4"]
    os.mkfifo(folder / "pipe.jsonl")  # a manifest that is a FIFO: named, never opened
    piped = vlmsweep(["check", "pipe.jsonl"], folder, module="vlmsweep.data", check=False, timeout=120)
    assert piped.returncode != 0 and "pipe.jsonl: the manifest is a FIFO" in piped.stdout + piped.stderr


def test_check_warns_about_a_target_training_would_refuse_as_too_long(folder):
    from userdata import vlmsweep

    lines = [_line(), _line(id="long", target={**RX, "institution": "서울내과의원" * 900})]  # 5,400 characters
    (folder / "m.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    checked = vlmsweep(["check", "m.jsonl"], folder, module="vlmsweep.data", timeout=120)
    warnings = [x for x in checked.stdout.splitlines() if ": warning: " in x]
    assert len(warnings) == 1 and warnings[0].startswith("m.jsonl:2: warning: the answer alone is ")
    assert "train.max_seq_len=2048" in warnings[0] and "2 usable records" in checked.stdout
    roomy = vlmsweep(["check", "m.jsonl", "--max-seq-len", "16384"], folder, module="vlmsweep.data", timeout=120)
    assert ": warning: " not in roomy.stdout
