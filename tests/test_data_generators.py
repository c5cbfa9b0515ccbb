"""Generators: deterministic bytes, printed text equal to the target, glyph coverage, focus behaviour."""

import datetime as dt
import random
import re
import string

import pytest
from PIL import Image

from vlmsweep.data import vocab
from vlmsweep.data.build import encode_jpeg, render_sample
from vlmsweep.data.canvas import CONFUSABLE_DIGITS, Canvas, fmt_num
from vlmsweep.data.fonts import cmap, font
from vlmsweep.data import prescription

GEN_DOMAINS = ["prescription_ko", "prescription_zh", "receipt", "receipt_ko", "receipt_zh"]


@pytest.mark.parametrize("domain", GEN_DOMAINS)
def test_same_seed_gives_byte_identical_image_and_target(domain):
    a, b = render_sample(123, domain), render_sample(123, domain)
    assert encode_jpeg(a) == encode_jpeg(b) and a.target == b.target
    c = render_sample(124, domain)
    assert encode_jpeg(c) != encode_jpeg(a) and c.target != a.target


def test_sizes_are_a4_portrait_and_narrow_receipts():
    assert render_sample(1, "prescription_ko", noise="none").image.size == (840, 1188)
    assert render_sample(1, "prescription_zh", noise="none").image.size == (840, 1188)
    for domain in ("receipt", "receipt_ko", "receipt_zh"):
        w, h = render_sample(1, domain, noise="none").image.size
        assert w == 480 and 600 <= h <= 1300, domain


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



def test_page_text_lays_the_drawn_strings_out_in_reading_order():
    from vlmsweep.data.build import page_text
    from vlmsweep.data.layout import reading_order

    # hand-made boxes: two rows whose strings were drawn right to left, a taller box whose centre is within half
    # its height of the first row's, and a row below
    boxes = [(10.0, 8.0, 50.0, "b"), (30.0, 8.0, 0.0, "c"), (11.0, 12.0, 0.0, "a"), (12.0, 8.0, 90.0, "a2")]
    assert reading_order(boxes) == ["a b a2", "c"]
    sample, text = page_text(3, "prescription_zh", noise="none")
    assert sample.image.tobytes() == render_sample(3, "prescription_zh", noise="none").image.tobytes()
    assert Canvas.drawn_boxes is None  # the trace is off again
    line = next(line for line in text.splitlines() if sample.target["patient_id"] in line)
    assert "门诊号" in line  # the id sits on the line of its label, after it
    assert line.index("门诊号") < line.index(sample.target["patient_id"])
    for v in _scalars(sample.target):
        assert (fmt_num(v) if isinstance(v, (int, float)) else v) in text, v

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
    places = {lang: [w for row in rows for w in (*row[:-1], *row[-1])] for lang, rows in
              (("ko", vocab.KO_PLACES), ("zh", vocab.ZH_PLACES))}
    for lang, lists in (("ko", [vocab.KO_SURNAMES, vocab.KO_GIVEN, places["ko"], vocab.KO_ROADS, vocab.KO_CLINIC_STEMS,
                                vocab.KO_CLINIC_KINDS, *vocab.KO_TIMINGS.values(), vocab.KO_LABELS,
                                vocab.KO_STORE_STEMS, vocab.KO_STORES, [n for items in vocab.KO_STORES.values() for n, _ in items],
                                vocab.KO_CARD_ISSUERS, *vocab.KO_RECEIPT_LABELS.values()]),
                        ("zh", [vocab.ZH_SURNAMES, vocab.ZH_GIVEN, places["zh"], vocab.ZH_ROADS, vocab.ZH_SUBDISTRICTS,
                                vocab.ZH_HOSPITAL_KINDS, vocab.ZH_DEPARTMENTS, *vocab.ZH_TIMINGS.values(), vocab.ZH_LABELS,
                                vocab.ZH_STORE_STEMS, vocab.ZH_STORES, [n for items, _ in vocab.ZH_STORES.values() for n, _ in items],
                                vocab.ZH_PAYMENTS, *vocab.ZH_RECEIPT_LABELS.values()])):
        for words in lists:
            static[lang].update("".join(words))
    static["ko"].update("".join(v for v in vocab.ONCE_DAILY.values()))
    static["zh"].update("".join(v for v in vocab.ONCE_DAILY.values()))
    for words in [vocab.STORE_STEMS, vocab.STORE_KINDS, vocab.STORE_SUFFIXES, vocab.STREETS, vocab.TOWNS, vocab.ITEMS,
                  *vocab.RECEIPT_LABELS.values()]:
        static["en"].update("".join(words))
    # Plus everything actually drawn over a spread of renders (catches strings built in code).
    Canvas.drawn = {}
    try:
        for seed in range(16):
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


# Words a native reader expects on every receipt of a kind, and words that must show up across a few
# of them (VAT, card approval, change: each only on some payments).
RECEIPT_WORDS = {
    "receipt": ({"INVOICE", "CASH", "CHANGE", "Qty"}, {"Subtotal", "GST", "SST"}),
    "receipt_ko": ({"영수증", "합계", "상품명", "수량", "금액", "판매일시"}, {"부가세", "카드승인", "승인번호", "거스름돈", "과세물품가액"}),
    "receipt_zh": ({"合计", "品名", "数量", "单价", "实收"}, {"小计", "找零", "税额", "授权号", "微信支付", "支付宝"}),
}


@pytest.mark.parametrize("domain", sorted(RECEIPT_WORDS))
def test_receipts_by_language_print_their_vocabulary_with_no_missing_glyph(domain):
    always, somewhere = RECEIPT_WORDS[domain]
    lang = {"receipt": "en", "receipt_ko": "ko", "receipt_zh": "zh"}[domain]
    seen = ""
    Canvas.drawn, Canvas.drawn_strings = {}, []
    try:
        for seed in range(30):
            Canvas.drawn_strings.clear()
            render_sample(seed, domain, noise="none")
            printed = "\n".join(Canvas.drawn_strings)
            missing = [w for w in always if w not in printed]
            assert missing == [], (seed, missing)
            seen += printed
        drawn = Canvas.drawn
    finally:
        Canvas.drawn, Canvas.drawn_strings = None, None
    assert [w for w in somewhere if w not in seen] == []
    assert set(drawn) == {lang}
    # No character renders as the missing-glyph box (.notdef), checked on the rendered masks.
    notdef = _notdef_mask(lang)
    boxes = sorted(ch for ch in drawn[lang] - {" "} if bytes(font(lang, 24).getmask(ch)) == notdef)
    assert boxes == []


def test_cli_render_30_draws_english_korean_and_chinese_receipts(tmp_path):
    from vlmsweep.cli.data import main as cli
    from vlmsweep.data import read_manifest
    assert cli(["render", "--out", str(tmp_path), "--n", "30", "--noise", "none"]) == 0
    domains = [r.image_domain for r in read_manifest(tmp_path / "manifest.jsonl")]
    counts = [domains.count(d) for d in ("receipt", "receipt_ko", "receipt_zh")]
    assert sum(counts) == 10 and min(counts) == 3  # a third of 30 are receipts, a third of those per language


def _city_district(text, table):
    """(city, district) named at the start of an institution or address, or None; city alone -> (city, None)."""
    for province, city, _, districts in table:
        rest = text[len(province):] if text.startswith(province) and province != city else text
        if rest.startswith(city):
            rest = rest[len(city):]
            m = re.match(r"[^区县]{1,3}(?:新区|区|县)", rest)
            return city, m.group(0) if m else None
    return None


def _implied_times(timing: str) -> set[int]:
    """How many times a day a timing can mean, read from its words alone (the test's own rules)."""
    if m := re.search(r"(\d+)시간마다|每(\d+)小时", timing):
        return {24 // int(m.group(1) or m.group(2))}
    bedtime = "취침" in timing or "睡前" in timing
    meals = any(w in timing for w in ("식후", "식전", "饭后", "饭前", "早晚"))
    if re.search(r"^(아침|저녁) |^(早饭|晨起)", timing) or (bedtime and not meals):
        return {1}
    if "아침·저녁" in timing or "早晚" in timing:
        return {2}
    if bedtime and meals:
        return {4}
    if meals:
        return {1, 2, 3}
    return {1, 2, 3, 4}  # 口服, 필요시: no time of day named


def test_1000_prescriptions_have_coherent_places_dosing_ages_and_institutions():
    zh_pairs = {(city, d) for _, city, _, districts in vocab.ZH_PLACES for d in districts}
    area = {city: code for _, city, code, _ in vocab.ZH_PLACES} | {city: code for _, city, code, _ in vocab.KO_PLACES}
    seen_district = 0
    for seed in range(1000):
        lang = "ko" if seed % 2 else "zh"
        t, ex = prescription.sample_target(random.Random(seed), lang)
        names = {m["name"] for m in t["medications"]}
        for m, timing in zip(t["medications"], ex["usage"]):
            if m["frequency"] is not None and timing not in ("喷鼻", "皮下注射"):
                assert m["frequency"] in _implied_times(timing), (seed, m, timing)
            if m["name"] in vocab.ONCE_DAILY and m["frequency"] is not None:
                assert m["frequency"] == 1, (seed, m)
        if lang == "zh":
            for text in filter(None, (t["institution"], ex["address"])):
                city, district = _city_district(text, vocab.ZH_PLACES)
                if district is not None:
                    seen_district += 1
                    assert (city, district) in zh_pairs, (seed, text)
            if t["institution"] and not ex["phone"].startswith("1"):
                assert ex["phone"].startswith(area[_city_district(t["institution"], vocab.ZH_PLACES)[0]] + "-"), seed
            child = ex["age"] <= 14
            assert (ex["kind"] == "儿科") <= child and (ex["dept"] == "儿科") <= child, (seed, ex["age"], ex["kind"])
            if t["institution"] and "妇幼保健院" in t["institution"]:
                assert child or ex["sex"] == "女", seed
        else:
            city = next((c for c in vocab.KO_CITIES if (t["institution"] or "").startswith(c)), None)
            if city is not None:
                assert ex["phone"].startswith(area[city] + "-"), (seed, t["institution"], ex["phone"])
            if t["patient_id"] and t["issue_date"]:
                born = dt.date(int(("19" if t["patient_id"][7] in "12" else "20") + t["patient_id"][:2]),
                               int(t["patient_id"][2:4]), int(t["patient_id"][4:6]))
                issued = dt.date(*map(int, re.findall(r"\d+", t["issue_date"])))
                age = issued.year - born.year - ((issued.month, issued.day) < (born.month, born.day))
                assert 0 <= age <= 90, (seed, t["patient_id"], t["issue_date"])
                if t["institution"] and "소아청소년과" in t["institution"]:
                    assert age < 19, (seed, age)
        if ex["age"] <= 14 and lang == "zh" or names & vocab.CHILD_ONLY_DRUGS:
            assert names <= vocab.CHILD_DRUGS and set(t["diagnosis_codes"]) <= vocab.PEDIATRIC_CODES, seed
    assert seen_district > 300  # the check above ran on hundreds of Chinese addresses


@pytest.mark.parametrize("bad, times", [("睡前口服", 4), ("취침 전", 3), ("아침·저녁 식후 30분", 3), ("식후 30분", 4),
                                        ("饭后口服", 4), ("6시간마다", 2)])
def test_the_coherence_rules_catch_the_contradictions_they_name(bad, times):
    assert times not in _implied_times(bad)
    assert _city_district("南京市武侯区人民医院", vocab.ZH_PLACES) not in {
        (city, d) for _, city, _, districts in vocab.ZH_PLACES for d in districts}
