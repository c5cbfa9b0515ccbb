"""ocr_hint: the page's OCR text after the instruction in training, evaluation and predict. The cut at a line
boundary and the token budget by hand; the hint in the prompt and out of the loss; the cache by image hash; and
through the command line, a missing Tesseract, a page the engine cannot read and hints longer than the sequence
limit (docs/ocr-hint.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import FAST, compose, share_warm_model
from helpers import REPO
from test_ocr import NO_TESSERACT, needs_tesseract
from vlmsweep import prompts
from vlmsweep.config.schema import HINT_PROMPT_TOKENS, hint_token_budget
from vlmsweep.data import Record
from vlmsweep.ocr import hint as hint_mod

words = lambda text: len(text.split())  # noqa: E731 - a token counter whose counts a reader can check by eye


def test_a_long_hint_is_cut_at_the_last_line_boundary_that_fits():
    text = "a b c\nd e\nf g h i\nj"  # lines of 3, 2, 4 and 1 words: prefixes of 3, 5, 9 and 10
    assert hint_mod.cut_to_tokens(text, 10, words) == (text, False)
    assert hint_mod.cut_to_tokens(text, 9, words) == ("a b c\nd e\nf g h i", True)
    assert hint_mod.cut_to_tokens(text, 8, words) == ("a b c\nd e", True)
    assert hint_mod.cut_to_tokens(text, 2, words) == ("", True)  # not even the first line: no text, still counted


def test_the_budget_leaves_room_for_image_prompt_and_answer():
    cfg = compose(["ocr_hint=tesseract"])  # 2048 tokens, 256 visual, answers of 384: 1312 left, max_tokens 1024
    assert hint_token_budget(cfg) == 1024
    cfg = compose(["ocr_hint=tesseract", "train.max_seq_len=900", "max_pixels=64tok", "eval.max_new_tokens=300"])
    assert hint_token_budget(cfg) == 900 - 64 - 300 - HINT_PROMPT_TOKENS == 440
    exp3 = compose(["+experiment=exp3", "model.path=/models/Qwen2-VL-2B-Instruct", "ocr_hint=tesseract",
                    "max_pixels=1024tok"])  # the 2B recipe with the hint: 2048 - 1024 - 384 - 96
    assert exp3.model.name == "qwen2_vl_2b" and hint_token_budget(exp3) == 544
    with pytest.raises(ValueError, match="leaves no room for the hint: train.max_seq_len=600"):
        compose(["ocr_hint=tesseract", "train.max_seq_len=600"])
    with pytest.raises(ValueError, match="the OCR baseline reads the page itself"):
        compose(["ocr_hint=tesseract", "model=ocr_tesseract"])


def test_the_hint_follows_the_instruction_and_is_never_trained_on(tiny_path, tmp_path):
    from transformers import AutoProcessor

    from vlmsweep.train.collator import make_collator

    hint = "门诊号: MZ53513933\n姓名: 胡晓东"
    user = prompts.messages("prescription_zh", False, hint=hint)[0]["content"][1]["text"]
    assert user == prompts.instruction("prescription_zh", False) + "\n" + prompts.HINT_HEADER + "\n" + hint
    assert prompts.messages("prescription_zh", False)[0]["content"][1]["text"] == prompts.instruction("prescription_zh", False)

    processor = AutoProcessor.from_pretrained(str(tiny_path))
    collator = make_collator(compose(FAST + ["model=tiny", "max_pixels=64tok"]), processor)
    page = tmp_path / "page.png"
    Image.new("RGB", (224, 280), "white").save(page)
    target = {"patient": {"name": "胡晓东", "id": "MZ53513933"}}
    plain = collator.encode(Record("p", page, "prescription_zh", target, "prescription_zh"))
    hinted = collator.encode(Record("p", page, "prescription_zh", target, "prescription_zh", hint=hint))
    tok = processor.tokenizer
    extra = len(tok("\n" + prompts.HINT_HEADER + "\n" + hint)["input_ids"])
    assert len(hinted.input_ids) - len(plain.input_ids) == pytest.approx(extra, abs=2)  # BPE merges at the seam
    assert hinted.supervised == plain.supervised > 0  # the same answer tokens, the hint's none of them
    text = tok.decode(hinted.input_ids)
    assert "MZ53513933" in text.split("<|im_start|>assistant")[0]  # the id is read in the prompt...
    supervised = tok.decode([i for i, label in zip(hinted.input_ids, hinted.labels) if label != -100])
    assert prompts.HINT_HEADER not in supervised and "门诊号" not in supervised  # ... and only the answer is learned


@needs_tesseract
def test_hints_are_cached_by_image_and_budget_with_the_seconds_they_took(tmp_path):
    from vlmsweep.data.build import render_records

    records = render_records([("p0", 11, "receipt", "receipt", None), ("p1", 12, "prescription_zh", "prescription_zh", None)],
                             tmp_path / "pages", "none", origin="base")
    version = hint_mod.engine_version("tesseract", {"receipt", "prescription_zh"})
    make = lambda resolution, pixels=(3136, 256 * 784): hint_mod.Hinter(  # noqa: E731
        "tesseract", resolution, tmp_path / "cache", 1024, words, pixels, version)
    first = make("page")
    hinted = first.attach(records)
    assert first.stats.read == 2 and first.stats.pages == 2 and first.stats.seconds > 0
    assert all(r.hint for r in hinted) and hinted[0].target == records[0].target
    again = make("page")
    assert [r.hint for r in again.attach(records)] == [r.hint for r in hinted]
    assert again.stats.read == 0 and again.stats.seconds == pytest.approx(first.stats.seconds)  # the recorded cost
    small = make("budget", (3136, 64 * 784))  # another resolution is another cache entry, OCR'd again
    small.attach(records[:1])
    assert small.stats.read == 1
    with Image.open(records[0].image) as im:
        resized = hint_mod.budget_image(im, 3136, 64 * 784)
    assert resized.width % 28 == 0 and resized.height % 28 == 0 and resized.width * resized.height <= 64 * 784


def _run(args: list[str], cwd: Path, env: dict[str, str], module: str = "vlmsweep") -> subprocess.CompletedProcess:
    env = {**os.environ, **env, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_a_missing_tesseract_is_one_line_naming_the_packages(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = _run(FAST + ["ocr_hint=tesseract", "hydra.run.dir=run"], tmp_path, {"PATH": str(empty)})
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: ocr_hint=tesseract needs the tesseract program, which is not on PATH: apt-get install "
                      "tesseract-ocr tesseract-ocr-kor tesseract-ocr-chi-sim (Debian/Ubuntu)"], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["status"] == "failed" and "OcrUnavailable" in info["error"]


# A tesseract that fails on its second page, as on an image it cannot decode; its version and languages are the real one's.
FLAKY_TESSERACT = """#!/bin/sh
case "$1" in --version|--list-langs) exec "{real}" "$@";; esac
n=$(cat "{counter}" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "{counter}"
if [ "$n" = 2 ]; then echo "Error in pixReadStream: Unknown format: no pix returned" >&2; exit 1; fi
exec "{real}" "$@"
"""


@pytest.mark.slow
@needs_tesseract
def test_an_unreadable_page_and_hints_over_the_limit_cost_hints_not_the_run(tmp_path):
    import shutil

    cache = tmp_path / "cache"
    share_warm_model(cache)  # a cache of its own: every page is OCR'd, so the second call is a page's first
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "tesseract"
    shim.write_text(FLAKY_TESSERACT.format(real=shutil.which("tesseract"), counter=tmp_path / "calls"))
    shim.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "VLMSWEEP_CACHE": str(cache)}
    # 460 tokens less 64 visual, the longest training answer (191 tokens) and the prompt's 96 leave the hint 109 tokens:
    # less than most pages' text
    args = FAST + ["ocr_hint=tesseract", "max_pixels=64tok", "train.max_seq_len=460", "hydra.run.dir=run"]
    proc = _run(args, tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    pages = 4 + 2  # data.train_size + data.test_size of FAST
    assert metrics["ocr_hint.failed_pages"] == 1 and metrics["ocr_hint.pages"] == pages - 1
    assert metrics["cost.ocr_seconds_per_image"] > 0 and metrics["train.skipped_too_long"] == 0
    info = json.loads((run / "run_info.json").read_text())
    failed, budget, cut = info["ocr_hint_pages"]["failed"], info["ocr_hint_pages"]["budget_tokens"], info["ocr_hint_pages"]["cut"]
    assert len(failed) == 1 and "TesseractError" in failed[0]["reason"]
    assert 0 < budget < 150 and metrics["ocr_hint.cut_pages"] == len(cut) >= 1
    report = (run / "report.md").read_text()
    assert "## OCR hint" in report and "1 page(s) had no hint" in report
    assert f"{len(cut)} hint(s) were cut at a line boundary to {budget} tokens" in report
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(run / "adapter"))
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    hinted = [s for s in samples if "ocr_hint" in s]
    assert hinted and all(len(tok(s["ocr_hint"])["input_ids"]) <= budget for s in hinted)
    assert json.loads((run / "adapter" / "vlmsweep_adapter.json").read_text())["ocr_hint"] == {
        "engine": "tesseract", "resolution": "page", "max_tokens": budget}
    # predict asks the adapter's question: the page's OCR text after the instruction, cut to the same budget
    page = hinted[0]
    test_image = next(iter(sorted((cache / "data").rglob("test-*.jpg"))))
    proc = _run([str(run / "adapter"), str(test_image), "--domain", page["domain"], "--max-new-tokens", "24"],
                tmp_path, env, module="vlmsweep.predict")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = json.loads(proc.stdout.splitlines()[0])
    assert line["ocr_hint"] and len(tok(line["ocr_hint"])["input_ids"]) <= budget


def test_rapidocr_reads_a_chinese_prescription_in_reading_order(tmp_path):
    """PP-OCRv4 from the rapidocr-onnxruntime wheel (a test requirement): the patient's name and outpatient number of
    a rendered 处方笺 are in its text, on the line after the hospital's name."""
    from vlmsweep.data.build import render_records

    hint_mod.engine_version("rapidocr", {"prescription_zh"})  # installed with the test extra: no skip
    record = render_records([("zh", 21, "prescription_zh", "prescription_zh", None)], tmp_path, "none")[0]
    with Image.open(record.image) as im:
        text = hint_mod.read_page("rapidocr", im, "prescription_zh")
    lines = text.split("\n")
    t = record.target
    assert t["patient_name"] in text and t["patient_id"] in text
    institution = next(i for i, line in enumerate(lines) if t["institution"] in line.replace(" ", ""))
    assert any(t["patient_name"] in line for line in lines[institution + 1:])  # top to bottom


def test_korean_pages_under_rapidocr_are_counted_and_named_in_the_report(tmp_path):
    page = tmp_path / "p.png"
    Image.new("RGB", (112, 112), "white").save(page)
    hinter = hint_mod.Hinter("rapidocr", "page", tmp_path / "cache", 64, words, (3136, 200704), "rapidocr-test")
    hinter.attach([Record("ko", page, "prescription_ko", {}, "prescription_ko"), Record("zh", page, "receipt_zh", {}, "receipt_zh")])
    assert hinter.stats.unread_script == ["ko"] and hinter.stats.pages == 2
    assert "1 page(s) are Korean, which rapidocr does not read" in hint_mod.section(hinter.stats, "rapidocr", "page", 64)


def test_a_missing_rapidocr_names_the_package_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # what `import` sees where it is not installed
    hint_mod._engine_version.cache_clear()  # whatever this worker asked before, installed or not
    with pytest.raises(hint_mod.OcrUnavailable, match=r"pip install 'vlmsweep\[rapidocr\]'"):
        hint_mod.engine_version("rapidocr", {"receipt"})
