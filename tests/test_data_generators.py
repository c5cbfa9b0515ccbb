"""Generators: deterministic bytes, printed text equal to the target, glyph coverage, focus behaviour."""

import random
import string

import pytest
from PIL import Image

from vlmsweep.data import vocab
from vlmsweep.data.build import encode_jpeg, render_sample
from vlmsweep.data.canvas import CONFUSABLE_DIGITS, Canvas, fmt_num
from vlmsweep.data.fonts import cmap, font
from vlmsweep.data import prescription

GEN_DOMAINS = ["prescription_ko", "prescription_zh", "receipt"]


@pytest.mark.parametrize("domain", GEN_DOMAINS)
def test_same_seed_gives_byte_identical_image_and_target(domain):
    a, b = render_sample(123, domain), render_sample(123, domain)
    assert encode_jpeg(a) == encode_jpeg(b) and a.target == b.target
    c = render_sample(124, domain)
    assert encode_jpeg(c) != encode_jpeg(a) and c.target != a.target


def test_sizes_are_a4_portrait_and_narrow_receipts():
    assert render_sample(1, "prescription_ko", noise="none").image.size == (840, 1188)
    assert render_sample(1, "prescription_zh", noise="none").image.size == (840, 1188)
    w, h = render_sample(1, "receipt", noise="none").image.size
    assert w == 480 and 600 <= h <= 1100


def _scalars(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _scalars(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _scalars(v)
    elif obj is not None:
        yield obj


@pytest.mark.parametrize("domain", GEN_DOMAINS)
def test_every_target_value_is_printed_on_the_page(domain):
    for seed in range(15):
        Canvas.drawn_strings = []
        try:
            s = render_sample(seed, domain, noise="none", focus=["digits", None, "sparse"][seed % 3])
            printed = "\n".join(Canvas.drawn_strings)
        finally:
            Canvas.drawn_strings = None
        for v in _scalars(s.target):
            text = fmt_num(v) if isinstance(v, (int, float)) else v
            assert text in printed, (seed, v)


def _notdef_mask(lang):
    return bytes(font(lang, 24).getmask("\U000F0000"))  # private-use plane: surely .notdef


def test_coverage_check_detects_a_missing_glyph():
    # Sanity of the method: a character the font lacks is reported missing, and renders as .notdef.
    assert ord("☑") not in cmap("ko")
    assert bytes(font("ko", 24).getmask("☑")) == _notdef_mask("ko")
    assert bytes(font("ko", 24).getmask("처")) != _notdef_mask("ko")


def test_every_character_the_generators_emit_has_a_glyph():
    static = {"ko": set(), "zh": set(), "en": set(string.printable.strip())}
    for name, strengths, unit in vocab.KO_DRUGS:
        static["ko"].update(name + unit + "".join(strengths))
    for name, strengths, unit in vocab.ZH_DRUGS:
        static["zh"].update(name + unit + "".join(strengths))
    for code, ko, zh in vocab.DIAGNOSES:
        static["ko"].update(code + ko)
        static["zh"].update(code + zh)
    for lang, lists in (("ko", [vocab.KO_SURNAMES, vocab.KO_GIVEN, vocab.KO_CITIES, vocab.KO_CLINIC_STEMS,
                                vocab.KO_CLINIC_KINDS, vocab.KO_USAGE, vocab.KO_LABELS]),
                        ("zh", [vocab.ZH_SURNAMES, vocab.ZH_GIVEN, vocab.ZH_CITIES, vocab.ZH_DISTRICTS,
                                vocab.ZH_HOSPITAL_KINDS, vocab.ZH_DEPARTMENTS, vocab.ZH_ROUTE_ORAL, vocab.ZH_LABELS])):
        for words in lists:
            static[lang].update("".join(words))
    for words in [vocab.STORE_STEMS, vocab.STORE_KINDS, vocab.STORE_SUFFIXES, vocab.STREETS, vocab.TOWNS, vocab.ITEMS,
                  *vocab.RECEIPT_LABELS.values()]:
        static["en"].update("".join(words))
    # Plus everything actually drawn over a spread of renders (catches strings built in code).
    Canvas.drawn = {}
    try:
        for seed in range(24):
            for domain in GEN_DOMAINS:
                render_sample(seed, domain, noise="none", focus=[None, "digits", "units", "near_miss"][seed % 4])
        drawn = Canvas.drawn
    finally:
        Canvas.drawn = None
    assert {"ko", "zh", "en"} <= set(drawn)
    for lang in ("ko", "zh", "en"):
        chars = (static[lang] | drawn.get(lang, set())) - {" ", "\n"}
        missing = sorted(ch for ch in chars if ord(ch) not in cmap(lang))
        assert missing == [], f"{lang}: no glyph for {missing}"
    # And the two characters most likely to fall back, checked by their rendered mask too.
    for ch in "μ₩":
        assert bytes(font("ko", 24).getmask(ch)) != _notdef_mask("ko")


def test_fonts_are_regular_weight_not_the_variable_default_thin():
    f = font("ko", 24)
    assert f.font.family == "Noto Sans CJK KR"
    thin = Image.new("L", (60, 40))
    from PIL import ImageDraw, ImageFont
    raw = ImageFont.truetype(f.path, 24, index=1)  # default instance: Thin
    ImageDraw.Draw(thin).text((5, 5), "방", font=raw, fill=255)
    regular = Image.new("L", (60, 40))
    ImageDraw.Draw(regular).text((5, 5), "방", font=f, fill=255)
    ink = lambda im: sum(im.getdata())  # noqa: E731
    assert ink(regular) > 1.5 * ink(thin)


def test_focus_digits_uses_confusable_digits():
    def share(focus):
        total = conf = 0
        for seed in range(100):
            t, _ = prescription.sample_target(random.Random(seed), "zh", focus)
            ds = [ch for ch in (t["patient_id"] or "") if ch.isdigit()]
            total += len(ds)
            conf += sum(ch in CONFUSABLE_DIGITS for ch in ds)
        return conf / total
    assert share(None) < 0.7 < 0.85 < share("digits")  # uniform digits: 6/10 of them are in 0,1,5,6,7,8


def test_focus_units_and_near_miss():
    rich = lambda t: sum(m["strength"] is not None and m["strength"].split(" ")[-1] in vocab.UNIT_RICH for m in t["medications"])  # noqa: E731
    base = sum(rich(prescription.sample_target(random.Random(s), "ko")[0]) for s in range(200))
    units = sum(rich(prescription.sample_target(random.Random(s), "ko", "units")[0]) for s in range(200))
    assert units > 2 * base
    groups = [set(g) for g in vocab.KO_LASA]
    for seed in range(50):
        names = {m["name"] for m in prescription.sample_target(random.Random(seed), "ko", "near_miss")[0]["medications"]}
        assert any(len(names & g) >= 2 for g in groups), names


def test_focus_sparse_leaves_more_fields_blank():
    def nulls(focus):
        return sum(v is None for s in range(200)
                   for v in prescription.sample_target(random.Random(s), "ko", focus)[0].values())
    assert nulls("sparse") > 4 * nulls(None)


def test_receipt_image_asked_as_prescription_has_all_null_target():
    s = render_sample(5, "prescription_zh", image_domain="receipt")
    assert s.image.size[0] == 480
    assert s.target["medications"] == [] and s.target["patient_name"] is None
    with pytest.raises(ValueError, match="hard negatives"):
        render_sample(5, "receipt", image_domain="prescription_ko")
