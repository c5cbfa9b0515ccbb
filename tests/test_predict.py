"""predict's inputs and summaries without a model: files, folders, globs and manifests; the summary templates
checked against the JSON. The command line itself runs in tests/test_readme_commands.py (predict steps), and here
on inputs that must never be opened (a FIFO, /proc)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from userdata import KO, RECEIPT, ZH, draw
from vlmsweep.pipeline import summary
from vlmsweep.cli.predict import main
from vlmsweep.pipeline.predict import InputError, collect


def _scans(folder: Path) -> Path:
    for name in ("b.png", "a.jpg"):
        draw(folder / name, [name])
    (folder / "c.png").write_bytes(b"not an image")
    (folder / "readme.txt").write_text("x")
    return folder


def test_folders_globs_and_files_in_order_with_left_out_files_named(tmp_path):
    scans = _scans(tmp_path / "scans")
    os.mkfifo(scans / "d.png")  # listed, so that its line refuses it by name (never opened: test_a_fifo_... below)
    items, left_out = collect([str(scans), str(scans / "a.jpg"), str(tmp_path / "scans" / "*.png"),
                               str(tmp_path / "missing.png")])
    names = [Path(i.image).name for i in items]
    assert names == ["a.jpg", "b.png", "c.png", "d.png", "a.jpg", "b.png", "c.png", "d.png", "missing.png"]  # missing: a line
    assert left_out == [str(scans / "readme.txt")] and all(i.domain is None for i in items)


def test_manifest_without_targets_and_its_errors_name_file_and_line(tmp_path):
    _scans(tmp_path)
    m = tmp_path / "new.jsonl"
    m.write_text('{"image": "a.jpg", "domain": "receipt"}\n\n{"id": "x", "image": "b.png", "target": {}}\n')
    items = collect([str(m)])[0]
    assert [(i.id, i.image, i.domain) for i in items] == [("a.jpg", tmp_path / "a.jpg", "receipt"),
                                                          ("x", tmp_path / "b.png", None)]
    for bad, reason in (('{"id": "a"}', 'needs at least {"image"'), ("{nope", "not valid JSON"),
                        ('{"image": "a.jpg", "domain": "invoice"}', "unknown domain 'invoice'")):
        m.write_text('{"image": "b.png"}\n' + bad + "\n")
        with pytest.raises(InputError, match=re.escape(f"{m}:2: ") + ".*" + re.escape(reason)):
            collect([str(m)])
    with pytest.raises(InputError, match="matches no file"):
        collect([str(tmp_path / "*.tif")])


def test_no_domain_stops_before_the_model_loads(tmp_path, capsys):
    scans = _scans(tmp_path / "scans")
    assert main([str(tmp_path / "no_such_adapter"), str(scans)]) == 2
    err = capsys.readouterr().err
    assert "no domain for 3 image(s)" in err and "--domain" in err and "prescription_ko" in err
    assert "--routing model" in err  # the way for a folder of mixed scans whose domains nobody knows


def _generated_targets() -> list[tuple[str, dict]]:
    """Answers from the project's generators (every domain), besides the hand-written ones."""
    from vlmsweep.data import render_sample

    return [("prescription" if d.startswith("prescription") else "receipt", render_sample(seed, d, noise="none").target)
            for seed, d in enumerate(["prescription_ko", "prescription_zh", "receipt", "receipt_ko", "receipt_zh"] * 2)]


CASES = [("prescription", KO), ("prescription", ZH), ("receipt", RECEIPT),
         ("prescription", {**KO, "patient_name": None, "medications": [{**KO["medications"][0], "strength": None}]})]


def _scalars(obj) -> list[str]:
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _scalars(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _scalars(v)]
    return [] if obj is None else [str(obj)]


@pytest.mark.parametrize("lang", summary.LANGUAGES)
def test_every_number_and_word_of_a_summary_is_the_json_s(lang):
    template_words = set(summary.LABELS[lang].values())
    for schema, obj in CASES + _generated_targets():
        text = summary.render(obj, schema, lang)
        assert text == summary.render(json.loads(json.dumps(obj)), schema, lang)  # deterministic
        assert summary.unsupported(text, obj, lang) == []
        # Independent of the checker: with the template's words removed, every number left is in a JSON value.
        rest = text
        for word in sorted(template_words, key=len, reverse=True):
            rest = rest.replace(word, " ")
        values = " ".join(_scalars(obj))
        assert all(n in values for n in re.findall(r"\d+(?:\.\d+)?", rest)), (rest, values)
        for value in _scalars(obj):  # and every value of the JSON is said
            assert value in text


def test_null_fields_are_said_unreadable_never_filled():
    obj = {**KO, "patient_name": None, "diagnosis_codes": None,
           "medications": [{"name": "Amoxicillin", "strength": None, "dose": 1, "frequency": None, "days": 5}]}
    text = summary.render(obj, "prescription", "ko")
    assert "환자: 판독 불가" in text and "질병분류기호: 판독 불가" in text
    assert "함량: 판독 불가" in text and "1일 투여횟수: 판독 불가" in text and "총 투약일수: 5" in text
    assert "김민준" not in text  # the name KO holds is not carried over from anywhere
    assert "处方笺: 患者: 无法辨认" in summary.render(obj, "prescription", "zh")
    assert "items:\n- unreadable" in summary.render({**RECEIPT, "items": None}, "receipt", "en")


def test_the_check_flags_a_value_the_json_lacks():
    text = summary.render(KO, "prescription", "en")
    assert summary.unsupported(text, {**KO, "patient_name": "박지호"}, "en") == ["김민준"]
    forged = text.replace("500 mg", "250 mg")
    assert summary.unsupported(forged, KO, "en") == ["250 mg"]
    with pytest.raises(ValueError, match="summary language 'fr'"):
        summary.render(KO, "prescription", "fr")


def test_real_receipt_scans_are_read_at_the_budget_through_a_glob():
    """The SROIE sample's phone scans (large JPEGs) through predict's inputs: a glob, decoded for a 256-token budget."""
    from test_data_sroie import SAMPLE, needs_sample  # the sample's location and skip reason live there

    if not (SAMPLE / "key").is_dir():
        pytest.skip(needs_sample.kwargs["reason"])
    from vlmsweep.pipeline.predict import load_or_error

    items, left_out = collect([str(SAMPLE / "img" / "*.jpg")])
    assert len(items) == 24 and not left_out
    from PIL import Image

    budget = 256 * 28 * 28
    for item in items[:6]:
        image = load_or_error(item, budget)
        assert not isinstance(image, str), image
        w, h = Image.open(item.image).size  # decoded whole when small, at reduced scale when over 4x the budget
        assert image.size == (w, h) if w * h <= 4 * budget else image.width * image.height <= 4 * budget


@pytest.mark.slow
def test_a_fifo_and_a_system_file_are_refused_by_name_and_every_good_answer_is_kept(tmp_path, offline_env):
    from userdata import FAST_CLI, vlmsweep

    vlmsweep([*FAST_CLI, "data.train_size=2", "eval.enabled=false", "hydra.run.dir=run"], tmp_path)
    folder = tmp_path / "run" / "adapter"
    for name in ("good.png", "good2.png"):
        draw(tmp_path / "scans" / name, [name])
    os.mkfifo(tmp_path / "scans" / "pipe.png")  # nobody writes to it: opening it would wait forever
    (tmp_path / "new.jsonl").write_text("".join(json.dumps(x) + "\n" for x in (
        {"image": "scans/good2.png"}, {"id": "piped", "image": "scans/pipe.png"},
        {"id": "env", "image": "/proc/self/environ"})))
    proc = vlmsweep([str(folder), "scans/pipe.png", "scans/good.png", "new.jsonl", "--domain", "prescription_ko",
                     "--max-new-tokens", "4", "--out", "p.jsonl"], tmp_path, module="vlmsweep.predict", timeout=180)
    lines = {x["id"]: x for x in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())}
    assert list(lines) == ["scans/pipe.png", "scans/good.png", "scans/good2.png", "piped", "env"]  # input order
    assert all(lines[i]["error"] is None and lines[i]["raw"] is not None for i in ("scans/good.png", "scans/good2.png"))
    assert "pipe.png: a FIFO" in lines["scans/pipe.png"]["error"] and "pipe.png: a FIFO" in lines["piped"]["error"]
    assert "a system file under /proc/" in lines["env"]["error"] and "(3 unreadable" in proc.stderr


def test_a_plain_model_folder_predicts_with_its_own_processor_budget(tmp_path, warm_path):
    """A checkpoint folder with no vlmsweep_adapter.json (a merged export written elsewhere, the release itself):
    the budget comes from its processor's `size`, where transformers 5 keeps it (it has no max_pixels attribute)."""
    from userdata import vlmsweep

    longest = json.loads((warm_path / "preprocessor_config.json").read_text())["max_pixels"]  # the release's layout
    draw(tmp_path / "scans" / "page.png", ["AMOXICILLIN 500 mg", "ID 12345"])
    proc = vlmsweep([str(warm_path), "scans/page.png", "--domain", "receipt", "--max-new-tokens", "4",
                     "--out", "p.jsonl"], tmp_path, module="vlmsweep.predict", timeout=300)
    (line,) = map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())
    assert line["error"] is None and line["raw"] is not None and 0 < line["visual_tokens"] <= longest // (28 * 28)
    assert f"processor budget (max_pixels {longest})" in proc.stderr
