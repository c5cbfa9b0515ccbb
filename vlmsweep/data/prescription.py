"""Korean 처방전 and Chinese 处方笺 generators: a seeded target, then a page that prints exactly it."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from PIL import Image

from . import vocab
from .canvas import Canvas, as_number, digits, fmt_num, list_size, maybe_null

PAGE = (840, 1188)  # A4 portrait at ~100 dpi: the size a phone scan is usually downscaled to
TABLET_DOSES = [1, 1, 1, 1, 2, 0.5, 1.5]  # scored tablets split in halves
WHOLE_DOSES = [1, 1, 1, 1, 2]  # capsules, sachets: never split
WHOLE_UNITS = ("캡슐", "C", "粒", "袋")
LIQUID_DOSES = [5, 10, 7.5, 3, 2.5, 15]
IU_DOSES = [6, 8, 10, 12, 16, 18]
DIGIT_DOSES = [0.5, 1.5, 8, 6, 5, 1, 7]  # doses whose digits are the confusable ones
DAYS = [3, 3, 5, 5, 7, 7, 10, 14]  # acute courses
LONG_DAYS = [14, 28, 30, 30, 60, 90]  # once-daily maintenance drugs (blood pressure, statins, thyroid)
DIGIT_DAYS = [5, 6, 7, 8, 10, 15, 16, 17, 18, 28, 60, 70, 80]


def _date(rng: random.Random) -> dt.date:
    return dt.date(2019, 1, 1) + dt.timedelta(days=rng.randrange(7 * 365))


def _pick_drugs(rng: random.Random, drugs, lasa, focus: str | None, k: int) -> list[tuple]:
    by_name = {d[0]: d for d in drugs}
    chosen: list[tuple] = []
    if focus == "near_miss":
        group = rng.choice(lasa)
        chosen = [by_name[n] for n in rng.sample(group, min(len(group), max(2, k)))][:k]
    pool = [d for d in drugs if d not in chosen]
    if focus == "units":
        rich = [d for d in pool if any(s.split(" ")[-1] in vocab.UNIT_RICH for s in d[1])]
        pool = rich if rng.random() < 0.8 and len(rich) >= k - len(chosen) else pool
    chosen += rng.sample(pool, k - len(chosen))
    rng.shuffle(chosen)
    return chosen


def _schedule(rng: random.Random, lang: str, name: str, unit: str) -> tuple[int, str]:
    """(times a day, timing) drawn together so they never contradict ("每日 4 次 睡前口服" cannot occur);
    once-daily drugs keep their labelled time, and the dosage form decides the route."""
    if unit == "喷":
        return rng.choice([1, 2]), "喷鼻"
    if unit == "IU":
        return 1, "皮下注射"
    if name in vocab.ONCE_DAILY:
        return 1, vocab.ONCE_DAILY[name]
    freq = rng.choice(vocab.FREQUENCIES)
    return freq, rng.choice((vocab.KO_TIMINGS if lang == "ko" else vocab.ZH_TIMINGS)[freq])


def _phone(rng: random.Random, area: str, focus: str | None) -> str:
    """A Korean landline of that area code; exchanges never start with 0 or 1 (those are prefixes)."""
    return f"{area}-{rng.randint(2, 9)}{digits(rng, rng.choice([2, 3]), focus)}-{digits(rng, 4, focus)}"


def _dose(rng: random.Random, unit: str, focus: str | None) -> float | int:
    if focus == "digits":
        return as_number(rng.choice(DIGIT_DOSES))
    if unit in ("mL",):
        return as_number(rng.choice(LIQUID_DOSES))
    if unit == "IU":
        return rng.choice(IU_DOSES)
    return as_number(rng.choice(WHOLE_DOSES if unit in WHOLE_UNITS else TABLET_DOSES))


def sample_target(rng: random.Random, lang: str, focus: str | None = None) -> tuple[dict[str, Any], dict]:
    """(target, extras): the target is the schema object, extras what the page prints besides it."""
    p_null = 0.45 if focus == "sparse" else 0.04
    p_null_med = 0.3 if focus == "sparse" else 0.03
    drugs, lasa = (vocab.KO_DRUGS, vocab.KO_LASA) if lang == "ko" else (vocab.ZH_DRUGS, vocab.ZH_LASA)
    k = list_size(rng.choice([1, 2, 2, 3, 3, 4]) if focus != "near_miss" else rng.choice([2, 3, 4]), focus)
    # A child's form holds only drugs that suit a child (and children's products only go to children);
    # the diagnoses and the clinic or ward follow below.
    child = rng.random() < 0.2
    allowed = (lambda n: n in vocab.CHILD_DRUGS) if child else (lambda n: n not in vocab.CHILD_ONLY_DRUGS)
    drugs = [d for d in drugs if allowed(d[0])]
    lasa = [g for g in ([n for n in group if allowed(n)] for group in lasa) if len(g) >= 2]
    meds, units, usage = [], [], []
    for name, strengths, unit in _pick_drugs(rng, drugs, lasa, focus, k):
        strength = rng.choice(strengths)
        if focus == "digits" and rng.random() < 0.5:
            # Confusable strengths, still in the drug's own unit (50 vs 80 mg, 0.6 vs 0.8 g).
            strength = rng.choice(["5", "8", "50", "80", "60", "160", "100", "0.5", "1.5", "750"]) + " " + strength.split(" ")[1]
        freq, timing = _schedule(rng, lang, name, unit)
        days = rng.choice(DIGIT_DAYS if focus == "digits" else LONG_DAYS if name in vocab.ONCE_DAILY else DAYS)
        meds.append({
            "name": name,
            "strength": maybe_null(rng, strength, p_null_med),
            "dose": maybe_null(rng, _dose(rng, unit, focus), p_null_med),
            "frequency": maybe_null(rng, freq, p_null_med),
            "days": maybe_null(rng, days, p_null_med),
        })
        units.append(unit)
        usage.append(timing)
    age = rng.randint(1, 14 if lang == "zh" else 18) if child else rng.randint(19, 88)
    dx_pool = [d for d in vocab.DIAGNOSES if d[0] in vocab.PEDIATRIC_CODES] if child else vocab.DIAGNOSES
    dx = rng.sample(dx_pool, list_size(rng.choice([1, 1, 2, 2, 3]), focus))
    date = _date(rng)
    if lang == "ko":
        province, city, area, districts = rng.choice(vocab.KO_PLACES)
        name = rng.choice(vocab.KO_SURNAMES) + rng.choice(vocab.KO_GIVEN)
        # Born `age` full years before the issue date; the 주민등록번호 starts with that birth date.
        birth = date - dt.timedelta(days=round(365.25 * age) + rng.randrange(0, 360))
        sex = rng.choice("12") if birth.year < 2000 else rng.choice("34")
        pid = f"{birth:%y%m%d}-{sex}******"  # 주민등록번호, masked after the sex digit as issued
        if focus == "digits":
            pid = digits(rng, 6, focus) + "-" + rng.choice("1234") + "******"
        codes = {d[0] for d in dx}
        kinds = [k for k in vocab.KO_CLINIC_KINDS if (child or k != vocab.KO_PEDIATRIC_KIND)
                 and (vocab.KO_CODES_OF_KIND[k] is None or codes <= vocab.KO_CODES_OF_KIND[k])]
        kind = vocab.KO_PEDIATRIC_KIND if child and rng.random() < 0.6 else rng.choice(kinds)
        stem = rng.choice(vocab.KO_CLINIC_STEMS) + kind
        institution = (city + stem) if rng.random() < 0.3 else stem
        date_s = rng.choice([f"{date:%Y-%m-%d}", f"{date.year}년 {date:%m}월 {date:%d}일", f"{date:%Y.%m.%d}"])
        prescriber = rng.choice(vocab.KO_SURNAMES) + rng.choice(vocab.KO_GIVEN)
        sex_zh, form_kind, dept, address, phone = None, None, None, None, _phone(rng, area, focus)
    else:
        province, city, area, districts = rng.choice(vocab.ZH_PLACES)
        name = rng.choice(vocab.ZH_SURNAMES) + rng.choice(vocab.ZH_GIVEN)
        pid = rng.choice(["", "MZ"]) + digits(rng, rng.choice([8, 10]), focus)  # 门诊号
        sex_zh = rng.choice(["男", "女"])
        # A 妇幼保健院 (maternal and child health hospital) sees women and children only.
        kinds = [k for k in vocab.ZH_HOSPITAL_KINDS if child or sex_zh == "女" or k != "妇幼保健院"]
        kind = rng.choice(kinds)
        district = rng.choice(districts)
        if kind == "社区卫生服务中心":  # named after its district and 街道
            institution = city + district + rng.choice(vocab.ZH_SUBDISTRICTS) + "街道" + kind
        else:
            institution = city + (district if rng.random() < 0.5 else "") + kind
        # Children's prescriptions are written on the 儿科 form by the paediatric ward (or the ER).
        if child:
            form_kind = rng.choice(["儿科"] * 4 + ["急诊"])
        else:
            form_kind = rng.choice(["普通"] * 5 + ["急诊"])
        if form_kind == "急诊":
            dept = "急诊科"
        elif child:
            dept = "儿科"
        else:
            dept = vocab.ZH_DEPT_OF_CODE[dx[0][0]]
        date_s = rng.choice([f"{date:%Y-%m-%d}", f"{date.year}年{date:%m}月{date:%d}日", f"{date.year}.{date.month}.{date.day}"])
        prescriber = rng.choice(vocab.ZH_SURNAMES) + rng.choice(vocab.ZH_GIVEN)
        # The patient lives in the hospital's city: same districts, that city's area code or a mobile.
        address = f"{city}{rng.choice(districts)}{rng.choice(vocab.ZH_ROADS)}{rng.randint(1, 399)}号"
        phone = (f"1{rng.choice('3578')}{digits(rng, 9, focus)}" if rng.random() < 0.6
                 else f"{area}-{rng.randint(2, 8)}{digits(rng, 7, focus)}")
    target = {
        "patient_name": maybe_null(rng, name, p_null / 2),
        "patient_id": maybe_null(rng, pid, p_null),
        "institution": maybe_null(rng, institution, p_null / 2),
        "issue_date": maybe_null(rng, date_s, p_null),
        "diagnosis_codes": [] if rng.random() < (p_null + 0.06) else [d[0] for d in dx],
        "medications": meds,
        "prescriber": maybe_null(rng, prescriber, p_null),
    }
    extras = {
        "dx_names": [d[1 if lang == "ko" else 2] for d in dx],
        "units": units,
        "usage": usage,
        "serial": digits(rng, 5, focus),
        "code": digits(rng, 8, focus),
        "phone": phone,
        "fax": _phone(rng, area, focus),
        "address": address,
        "license": digits(rng, 5, focus),
        "sex": sex_zh,
        "age": age,
        "dept": dept,
        "fee": rng.choice(["自费", "医保", "公费"]),
        "kind": form_kind,
        "amount": f"{rng.randint(8, 480)}.{rng.randint(0, 99):02d}",
        "pharmacist": rng.choice(vocab.ZH_SURNAMES) + rng.choice(vocab.ZH_GIVEN),
        "stamp": rng.random() < 0.85,
        "paper": rng.choice([(255, 255, 255), (252, 251, 246), (248, 248, 244), (253, 250, 240)]),
    }
    return target, extras


def render_ko(target: dict, extras: dict, rng: random.Random) -> Image.Image:
    """The standard outpatient form (의료법 시행규칙 별지 제9호서식), drawn as a grid."""
    c = Canvas(*PAGE, lang="ko", paper=extras["paper"])
    L, R = 36, PAGE[0] - 36
    c.text((L, 22), "의료법 시행규칙 [별지 제9호서식]", 12)
    c.text((PAGE[0] / 2, 62), "처 방 전", 38, "Bold", anchor="mm")
    ins = "[ ]건강보험 [ ]의료급여 [ ]산업재해보험 [ ]자동차보험 [ ]기타( )"
    c.text((L, 104), ins.replace("[ ]", "[V]", 1), 13, anchor="lm")
    c.text((R, 104), f"요양기관기호: {extras['code']}", 13, anchor="rm")
    t = target
    y0 = 122
    # Left block: issue date + number, patient.
    c.cell(L, y0, 146, y0 + 64, "교부 연월일\n및 번호", 14)
    c.box(146, y0, 430, y0 + 64)
    c.text((158, y0 + 22), t["issue_date"] or "", 17, anchor="lm")
    c.text((158, y0 + 46), f"제 {extras['serial']} 호", 15, anchor="lm")
    c.cell(L, y0 + 64, 76, y0 + 144, "환\n자", 14)
    c.cell(76, y0 + 64, 176, y0 + 104, "성명", 14)
    c.cell(176, y0 + 64, 430, y0 + 104, t["patient_name"], 17, align="left", pad=12)
    c.cell(76, y0 + 104, 176, y0 + 144, "주민등록번호", 13)
    c.cell(176, y0 + 104, 430, y0 + 144, t["patient_id"], 17, align="left", pad=12)
    # Right block: institution.
    c.cell(430, y0, 476, y0 + 144, "의\n료\n기\n관", 14)
    rows = [("명칭", t["institution"]), ("전화번호", extras["phone"]), ("팩스번호", extras["fax"]), ("e-mail 주소", "")]
    for i, (label, value) in enumerate(rows):
        ya, yb = y0 + i * 36, y0 + (i + 1) * 36
        c.cell(476, ya, 576, yb, label, 13)
        c.cell(576, ya, R, yb, value, 17 if i == 0 else 15, align="left")
    # Diagnosis codes and prescriber.
    y1 = y0 + 144
    c.cell(L, y1, 146, y1 + 84, "질병분류\n기호", 14)
    c.box(146, y1, 300, y1 + 84)
    codes = t["diagnosis_codes"] or []
    for i, code in enumerate(codes):
        c.text((160, y1 + 84 / 2 + (i - (len(codes) - 1) / 2) * 24), code, 17, anchor="lm")
    c.cell(300, y1, 390, y1 + 84, "처방\n의료인의\n성명", 13)
    c.box(390, y1, 604, y1 + 84)
    if t["prescriber"]:
        c.text((404, y1 + 32), t["prescriber"], 18, anchor="lm")
    c.text((404, y1 + 62), "(서명 또는 날인)", 12, anchor="lm")
    c.cell(604, y1, 690, y1 + 42, "면허종별", 13)
    c.cell(690, y1, R, y1 + 42, "의사", 15)
    c.cell(604, y1 + 42, 690, y1 + 84, "면허번호", 13)
    c.cell(690, y1 + 42, R, y1 + 84, extras["license"], 15)
    c.box(L, y0, R, y1 + 84, width=2)
    c.text((L, y1 + 100), "※ 환자의 요구가 있는 때에는 질병분류기호를 기재하지 않습니다.", 12, anchor="lm")
    # Medication table.
    y2 = y1 + 116
    cols = [L, 400, 496, 592, 688, R]
    heads = ["처방 의약품의 명칭", "1회 투약량", "1일 투여횟수", "총 투약일수", "용법"]
    for i, h in enumerate(heads):
        c.cell(cols[i], y2, cols[i + 1], y2 + 40, h, 14, "Medium", fill=(236, 236, 236))
    row_h = 38
    for r in range(8):
        ya, yb = y2 + 40 + r * row_h, y2 + 40 + (r + 1) * row_h
        m = t["medications"][r] if r < len(t["medications"]) else None
        if m is None:
            for i in range(5):
                c.box(cols[i], ya, cols[i + 1], yb)
            continue
        name = m["name"] + (f" {m['strength']}" if m["strength"] else "")
        c.cell(cols[0], ya, cols[1], yb, name, 16, align="left")
        for i, v in enumerate((m["dose"], m["frequency"], m["days"]), start=1):
            c.cell(cols[i], ya, cols[i + 1], yb, None if v is None else fmt_num(v), 16)
        c.cell(cols[4], ya, cols[5], yb, extras["usage"][r], 13)
    y3 = y2 + 40 + 8 * row_h
    c.box(L, y2, R, y3, width=2)
    # Lower blocks: injections, validity, dispensing record (left blank, as handed to the patient).
    y4 = y3 + 14
    c.cell(L, y4, 430, y4 + 30, "주사제 처방내역 (원내조제 [ ], 원외처방 [ ])", 13)
    c.cell(430, y4, R, y4 + 30, "조제 시 참고사항", 13)
    c.box(L, y4 + 30, 430, y4 + 110)
    c.box(430, y4 + 30, R, y4 + 110)
    y5 = y4 + 122
    c.cell(L, y5, 146, y5 + 36, "사용기간", 14)
    c.cell(146, y5, 430, y5 + 36, "교부일부터 ( 3 )일간", 14)
    c.cell(430, y5, R, y5 + 36, "사용기간 내에 약국에 제출하여야 합니다.", 13)
    y6 = y5 + 48
    c.cell(L, y6, 146, y6 + 4 * 40, "의약품\n조제내역", 14)
    for i, label in enumerate(["조제기관의 명칭", "조제약사", "조제량(조제일수)", "조제연월일"]):
        c.cell(146, y6 + i * 40, 300, y6 + (i + 1) * 40, label, 13)
        c.box(300, y6 + i * 40, R, y6 + (i + 1) * 40)
    c.box(L, y6, R, y6 + 160, width=2)
    if extras["stamp"]:
        c.square_seal(rng.uniform(745, 790), y0 + rng.uniform(12, 40), rng.randint(58, 72), "의원직인", rng)
        if t["prescriber"]:
            c.square_seal(rng.uniform(540, 580), y1 + rng.uniform(30, 52), rng.randint(40, 48), "인", rng)
    return c.image


def render_zh(target: dict, extras: dict, rng: random.Random) -> Image.Image:
    """A 处方笺 as Chinese outpatient departments print it: header fields, Rp block, signatures."""
    c = Canvas(*PAGE, lang="zh", paper=extras["paper"])
    t = target
    L, R = 48, PAGE[0] - 48
    c.box(28, 24, PAGE[0] - 28, PAGE[1] - 24, width=2)
    c.cell(R - 86, 44, R, 84, extras["kind"], 18, "Bold")
    c.text((L, 64), f"No. {extras['serial']}", 15, anchor="lm")
    c.text((PAGE[0] / 2, 118), t["institution"] or "医院", 30, "Bold", anchor="mm")
    c.text((PAGE[0] / 2, 168), "处 方 笺", 34, "Bold", anchor="mm")
    y = 222
    c.text((L, y), f"费别: {extras['fee']}", 18, anchor="lm")
    c.text((300, y), f"门诊号: {t['patient_id'] or ''}", 18, anchor="lm")
    c.text((600, y), f"科别: {extras['dept']}", 18, anchor="lm")
    c.hline(L, R, y + 22, dash=4)
    y += 46
    c.text((L, y), f"姓名: {t['patient_name'] or ''}", 18, anchor="lm")
    c.text((300, y), f"性别: {extras['sex']}", 18, anchor="lm")
    c.text((430, y), f"年龄: {extras['age']}岁", 18, anchor="lm")
    c.text((600, y), f"日期: {t['issue_date'] or ''}", 18, anchor="lm")
    c.hline(L, R, y + 22, dash=4)
    y += 46
    parts = [f"{n} ({code})" for n, code in zip(extras["dx_names"], t["diagnosis_codes"] or [])]
    line = "临床诊断: " + "、".join(parts)
    if c.text_width(line, 18) > R - L and len(parts) > 1:
        c.text((L, y), "临床诊断: " + "、".join(parts[:2]), 18, anchor="lm")
        y += 30
        c.text((L + 90, y), "、".join(parts[2:]), 18, anchor="lm")
    else:
        c.text((L, y), line, 18, anchor="lm")
    c.hline(L, R, y + 22, dash=4)
    y += 46
    c.text((L, y), f"住址/电话: {extras['address']}  {extras['phone']}", 16, anchor="lm")
    c.hline(L, R, y + 24, width=3)
    y += 62
    c.text((L, y), "Rp", 40, "Bold", anchor="lm")
    y += 56
    for i, m in enumerate(t["medications"]):
        unit = extras["units"][i]
        qty = (m["dose"] or 1) * (m["frequency"] or 1) * (m["days"] or 1)
        head = f"{i + 1}. {m['name']}"
        c.text((L + 30, y), head, 22, anchor="lm")
        x = L + 40 + c.text_width(head, 22)
        if m["strength"]:
            tail = f"{m['strength']} × {fmt_num(round(qty)) if unit not in ('mL', 'IU') else 1}{'' if unit in ('mL', 'IU') else unit}"
            c.text((max(x + 20, 420), y), tail, 22, anchor="lm")
        y += 36
        use = ["用法:"]
        if m["dose"] is not None:
            use.append(f"每次 {fmt_num(m['dose'])} {unit}")
        if m["frequency"] is not None:
            use.append(f"每日 {m['frequency']} 次")
        use.append(extras["usage"][i])
        if m["days"] is not None:
            use.append(f"共 {m['days']} 天")
        c.text((L + 64, y), "   ".join(use), 18, anchor="lm")
        y += 52
    c.text((R - 40, y + 10), "(以下空白)", 16, anchor="rm")
    yb = PAGE[1] - 190
    c.hline(L, R, yb, width=2)
    c.text((L, yb + 36), f"医师: {t['prescriber'] or ''}", 20, anchor="lm")
    c.text((300, yb + 36), "(签章)", 14, anchor="lm")
    c.text((R, yb + 36), f"药品金额: ¥ {extras['amount']} 元", 18, anchor="rm")
    c.text((L, yb + 86), f"审核药师: {extras['pharmacist']}", 18, anchor="lm")
    c.text((340, yb + 86), "调配药师/士:", 18, anchor="lm")
    c.text((580, yb + 86), "核对、发药药师:", 18, anchor="lm")
    c.text((PAGE[0] / 2, PAGE[1] - 56), "本处方当日有效", 14, anchor="mm")
    if extras["stamp"]:
        top = (t["institution"] or "医院")[-8:]
        c.round_seal(rng.uniform(560, 700), yb + rng.uniform(-40, 10), rng.randint(64, 76), top, "处方专用章", rng)
    return c.image
