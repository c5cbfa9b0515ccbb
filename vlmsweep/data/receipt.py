"""Shop receipts in English, Korean (영수증) and Chinese (小票): the key-value vocabulary that leaks into prescriptions."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from PIL import Image

from . import vocab
from .canvas import Canvas, digits, list_size, maybe_null

WIDTH = 480  # thermal roll, ~80 mm at 150 dpi
LANGS = ("en", "ko", "zh")


def _money(cents: int) -> str:
    return f"{cents / 100:,.2f}"


def _won(won: int) -> str:
    return f"{won:,}"  # Korean receipts print whole won with thousands separators: 14,000


def _yuan(fen: int) -> str:
    return f"{fen / 100:.2f}"  # Chinese receipts print yuan with two decimals and no separators: 1280.50


def _date(rng: random.Random) -> dt.date:
    return dt.date(2016, 1, 1) + dt.timedelta(days=rng.randrange(9 * 365))


def _time(rng: random.Random) -> str:
    return f"{rng.randint(8, 21):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"


def sample_target(rng: random.Random, lang: str = "en", focus: str | None = None) -> tuple[dict[str, Any], dict]:
    """(target, extras) of a receipt in `lang`; extras carry everything printed besides the target."""
    if lang == "ko":
        return _sample_ko(rng, focus)
    if lang == "zh":
        return _sample_zh(rng, focus)
    if lang != "en":
        raise ValueError(f"receipt lang={lang!r}: expected one of {LANGS}")
    return _sample_en(rng, focus)


def render(target: dict, extras: dict, rng: random.Random) -> Image.Image:
    return {"en": _render_en, "ko": _render_ko, "zh": _render_zh}[extras["lang"]](target, extras, rng)


def _sample_en(rng: random.Random, focus: str | None) -> tuple[dict[str, Any], dict]:
    p_null = 0.45 if focus == "sparse" else 0.05
    store = rng.choice(vocab.STORE_STEMS) + " " + rng.choice(vocab.STORE_KINDS) + rng.choice(vocab.STORE_SUFFIXES)
    if rng.random() < 0.5:
        store = store.upper()
    address = f"No. {rng.randint(1, 188)}, {rng.choice(vocab.STREETS)} {rng.randint(1, 30)}, {rng.choice(vocab.TOWNS)}"
    date = _date(rng)
    date_s = rng.choice([f"{date:%d/%m/%Y}", f"{date:%Y-%m-%d}", f"{date:%d-%m-%Y}", f"{date:%d/%m/%y}"])
    items = []
    subtotal = 0
    for name in rng.sample(vocab.ITEMS, list_size(rng.randint(2, 6), focus)):
        qty = rng.choice([1, 1, 1, 2, 2, 3, 4, 6])
        unit = rng.randint(50, 2500) if focus != "digits" else int(digits(rng, 3, focus))
        unit = max(unit, 10)
        items.append({"name": name, "quantity": qty, "price": _money(qty * unit)})
        subtotal += qty * unit
    tax_label = rng.choice(vocab.RECEIPT_LABELS["tax"])
    rate = int(tax_label.split()[-1].rstrip("%")) / 100
    tax = round(subtotal * rate)
    has_tax = rng.random() > p_null
    has_sub = rng.random() > p_null
    total = subtotal + (tax if has_tax else 0)
    target = {
        "store": maybe_null(rng, store, p_null / 2),
        "date": maybe_null(rng, date_s, p_null),
        "address": maybe_null(rng, address, p_null),
        "items": items,
        "subtotal": _money(subtotal) if has_sub else None,
        "tax": _money(tax) if has_tax else None,
        "total": _money(total),
    }
    cash = (total // 1000 + 1) * 1000 if rng.random() < 0.7 else total
    extras = {
        "lang": "en",
        "tax_label": tax_label,
        "sub_label": rng.choice(vocab.RECEIPT_LABELS["subtotal"]),
        "total_label": rng.choice(vocab.RECEIPT_LABELS["total"]),
        "cash": _money(cash),
        "change": _money(cash - total),
        "receipt_no": digits(rng, 6, focus),
        "time": f"{rng.randint(8, 21):02d}:{rng.randint(0, 59):02d}",
        "tel": f"0{rng.randint(3, 9)}-{digits(rng, 7, focus)}",
        "reg": digits(rng, 12, focus),
        "cashier": f"{rng.randint(1, 20):02d}",
        "paper": rng.choice([(255, 255, 255), (250, 249, 244), (246, 244, 238)]),
        "ink": rng.choice([(20, 20, 24), (45, 45, 50), (60, 58, 70)]),
    }
    return target, extras


def _wrap(c: Canvas, text: str, size: int, width: float) -> list[str]:
    words, lines, cur = text.split(" "), [], ""
    for w in words:
        trial = f"{cur} {w}".strip()
        if c.text_width(trial, size) > width and cur:
            lines.append(cur)
            cur = w
        else:
            cur = trial
    return lines + [cur] if cur else lines


def _render_en(target: dict, extras: dict, rng: random.Random) -> Image.Image:
    t = target
    n_items = len(t["items"])
    height = 720 + 34 * n_items  # generous; cropped to the content at the end
    c = Canvas(WIDTH, height, lang="en", paper=extras["paper"])
    ink = extras["ink"]
    L, R, mid = 28, WIDTH - 28, WIDTH / 2
    y = 40
    if t["store"]:
        for line in _wrap(c, t["store"], 22, R - L):
            c.text((mid, y), line, 22, "Bold", anchor="mm", fill=ink)
            y += 30
    if t["address"]:
        for line in _wrap(c, t["address"], 15, R - L - 20):
            c.text((mid, y), line, 15, anchor="mm", fill=ink)
            y += 22
    c.text((mid, y), f"Tel: {extras['tel']}", 15, anchor="mm", fill=ink)
    y += 22
    c.text((mid, y), f"GST Reg No: {extras['reg']}", 14, anchor="mm", fill=ink)
    y += 30
    c.text((mid, y), "TAX INVOICE", 17, "Bold", anchor="mm", fill=ink)
    y += 24
    c.hline(L, R, y, dash=5, fill=ink)
    y += 22
    c.text((L, y), f"Receipt #: {extras['receipt_no']}", 15, anchor="lm", fill=ink)
    y += 24
    c.text((L, y), f"Date: {t['date'] or ''}", 15, anchor="lm", fill=ink)
    c.text((R, y), extras["time"], 15, anchor="rm", fill=ink)
    y += 24
    c.text((L, y), f"Cashier: {extras['cashier']}", 15, anchor="lm", fill=ink)
    y += 20
    c.hline(L, R, y, dash=5, fill=ink)
    y += 22
    c.text((L, y), "Qty", 15, "Medium", anchor="lm", fill=ink)
    c.text((L + 52, y), "Item", 15, "Medium", anchor="lm", fill=ink)
    c.text((R, y), "Amount", 15, "Medium", anchor="rm", fill=ink)
    y += 30
    for it in t["items"]:
        c.text((L + 6, y), str(it["quantity"]), 17, anchor="lm", fill=ink)
        c.text((L + 52, y), it["name"], 17, anchor="lm", fill=ink)
        c.text((R, y), it["price"], 17, anchor="rm", fill=ink)
        y += 34
    c.hline(L, R, y - 10, dash=5, fill=ink)
    y += 18
    rows = []
    if t["subtotal"] is not None:
        rows.append((extras["sub_label"], t["subtotal"], 17, "Regular"))
    if t["tax"] is not None:
        rows.append((extras["tax_label"], t["tax"], 17, "Regular"))
    rows.append((extras["total_label"], t["total"], 21, "Bold"))
    rows += [("CASH", extras["cash"], 17, "Regular"), ("CHANGE", extras["change"], 17, "Regular")]
    for label, value, size, weight in rows:
        c.text((L + 52, y), label, size, weight, anchor="lm", fill=ink)
        c.text((R, y), value, size, weight, anchor="rm", fill=ink)
        y += size + 14
    y += 8
    c.hline(L, R, y, dash=5, fill=ink)
    y += 30
    c.text((mid, y), "Thank you! Please come again.", 15, anchor="mm", fill=ink)
    y += 34
    return _barcode_and_crop(c, extras["receipt_no"], y, ink)


def _barcode_and_crop(c: Canvas, number: str, y: float, ink) -> Image.Image:
    """A barcode of the receipt number (bars only, nothing to read), then the roll cut below it."""
    x = WIDTH / 2 - 130
    for ch in "".join(ch for ch in number if ch.isdigit())[:6] * 3:
        for bit in f"{int(ch) + 3:04b}":
            w = 3 if bit == "1" else 1
            c.draw.rectangle((x, y, x + w - 1, y + 44), fill=ink)
            x += w + 2
    return c.image.crop((0, 0, WIDTH, min(c.height, int(y + 70))))


def _sample_ko(rng: random.Random, focus: str | None) -> tuple[dict[str, Any], dict]:
    """A Korean card or cash receipt: prices include 10% VAT, printed back out as 과세물품가액 + 부가세 = 합계."""
    p_null = 0.45 if focus == "sparse" else 0.05
    kind = rng.choice(sorted(vocab.KO_STORES))
    province, city, area, districts = rng.choice(vocab.KO_PLACES)
    district = rng.choice(districts)
    # The branch is named after the city or the district of the address (강남구 -> 강남점), never after a
    # place elsewhere; not 북구 -> 북점 or 일산서구 -> 일산서점 (which reads "Ilsan bookshop").
    stem = district[:-1]
    branches = [f"{city}점", "본점"] + ([f"{stem}점"] if len(stem) > 1 and stem[-1] not in "동서남북중" else [])
    branch = rng.choice(branches)
    store = f"{rng.choice(vocab.KO_STORE_STEMS)}{kind} {branch}"
    address = f"{province} {district} {rng.choice(vocab.KO_ROADS)} {rng.randint(1, 299)}"
    date = _date(rng)
    date_s = rng.choice([f"{date:%Y-%m-%d}", f"{date:%Y.%m.%d}", f"{date:%Y/%m/%d}", f"{date:%y-%m-%d}"])
    items, total = [], 0
    for name, price in rng.sample(vocab.KO_STORES[kind], list_size(rng.randint(1, 6), focus)):
        qty = rng.choice([1, 1, 1, 1, 2, 2, 3])
        if focus == "digits":
            price = int(digits(rng, 2, focus)) * 100 or 500
        items.append({"name": name, "quantity": qty, "price": _won(qty * price), "unit": _won(price)})
        total += qty * price
    supply = round(total / 1.1)
    target = {
        "store": maybe_null(rng, store, p_null / 2),
        "date": maybe_null(rng, date_s, p_null),
        "address": maybe_null(rng, address, p_null),
        "items": [{k: it[k] for k in ("name", "quantity", "price")} for it in items],
        "subtotal": maybe_null(rng, _won(supply), p_null),
        "tax": maybe_null(rng, _won(total - supply), p_null),
        "total": _won(total),
    }
    card = rng.random() < 0.75
    step = rng.choice([1000, 10000])  # cash handed over: the next 1,000 or 10,000 won
    paid = total if card else -(-total // step) * step
    labels = vocab.KO_RECEIPT_LABELS
    extras = {
        "lang": "ko",
        "unit_prices": [it["unit"] for it in items],
        "title": rng.choice(labels["title"]),
        "sub_label": rng.choice(labels["subtotal"]),
        "tax_label": rng.choice(labels["tax"]),
        "total_label": rng.choice(labels["total"]),
        "biz_no": f"{digits(rng, 3, focus)}-{digits(rng, 2, focus)}-{digits(rng, 5, focus)}",
        "owner": rng.choice(vocab.KO_SURNAMES) + rng.choice(vocab.KO_GIVEN),
        "tel": f"{area}-{rng.randint(2, 9)}{digits(rng, rng.choice([2, 3]), focus)}-{digits(rng, 4, focus)}",
        "time": _time(rng),
        "pos": f"{rng.randint(1, 4):02d}",
        "receipt_no": f"{date:%Y%m%d}-{digits(rng, 4, focus)}",
        "card": card,
        "issuer": rng.choice(vocab.KO_CARD_ISSUERS),
        "card_no": f"{digits(rng, 4, focus)}-{digits(rng, 2, focus)}**-****-{digits(rng, 4, focus)}",
        "installment": "일시불" if total < 50000 or rng.random() < 0.6 else f"{rng.choice([2, 3, 6]):02d}개월",
        "approval": digits(rng, 8, focus),
        "merchant": digits(rng, 9, focus),
        "paid": _won(paid),
        "change": _won(paid - total),
        "paper": rng.choice([(255, 255, 255), (250, 249, 244), (246, 244, 238)]),
        "ink": rng.choice([(20, 20, 24), (45, 45, 50), (60, 58, 70)]),
    }
    return target, extras


def _sample_zh(rng: random.Random, focus: str | None) -> tuple[dict[str, Any], dict]:
    """A Chinese 小票: 小计, an optional 优惠, 合计 with the VAT inside it (含税), then cash with 找零,
    WeChat/Alipay with a transaction number, or a bank card with 授权号/参考号."""
    p_null = 0.45 if focus == "sparse" else 0.05
    kind = rng.choice(sorted(vocab.ZH_STORES))
    goods, vat = vocab.ZH_STORES[kind]
    province, city, area, districts = rng.choice(vocab.ZH_PLACES)
    road = rng.choice(vocab.ZH_ROADS)
    store = rng.choice(vocab.ZH_STORE_STEMS) + kind + (f"({road}店)" if rng.random() < 0.6 else "")
    where = (province if province != city and rng.random() < 0.3 else "") + city + rng.choice(districts)
    address = f"{where}{road}{rng.randint(1, 399)}号"
    date = _date(rng)
    date_s = rng.choice([f"{date:%Y-%m-%d}", f"{date:%Y/%m/%d}", f"{date.year}年{date:%m}月{date:%d}日", f"{date:%Y.%m.%d}"])
    items, subtotal = [], 0
    for name, price in rng.sample(goods, list_size(rng.randint(1, 6), focus)):
        qty = rng.choice([1, 1, 1, 2, 2, 3, 4])
        if focus == "digits":
            price = int(digits(rng, 3, focus)) * 10 or 500
        items.append({"name": name, "quantity": qty, "price": _yuan(qty * price), "unit": _yuan(price)})
        subtotal += qty * price
    discount = (subtotal % 100 if rng.random() < 0.5 else subtotal // 20) if rng.random() < 0.3 else 0  # 抹零 or 5%
    total = subtotal - discount
    tax = round(total * vat / (100 + vat))
    target = {
        "store": maybe_null(rng, store, p_null / 2),
        "date": maybe_null(rng, date_s, p_null),
        "address": maybe_null(rng, address, p_null),
        "items": [{k: it[k] for k in ("name", "quantity", "price")} for it in items],
        "subtotal": maybe_null(rng, _yuan(subtotal), p_null),
        "tax": maybe_null(rng, _yuan(tax), p_null),
        "total": _yuan(total),
    }
    payment = rng.choice(vocab.ZH_PAYMENTS)
    step = rng.choice([1000, 5000, 10000])  # cash handed over: the next 10, 50 or 100 yuan
    paid = -(-total // step) * step if payment == "现金" else total
    labels = vocab.ZH_RECEIPT_LABELS
    extras = {
        "lang": "zh",
        "unit_prices": [it["unit"] for it in items],
        "title": "结账单" if kind == "餐厅" else rng.choice(labels["title"]),  # a restaurant bill, else a till slip
        "sub_label": rng.choice(labels["subtotal"]),
        "tax_label": rng.choice(labels["tax"]),
        "total_label": rng.choice(labels["total"]),
        "vat": vat,
        "discount": _yuan(discount) if discount else None,
        "tel": f"{area}-{rng.randint(2, 8)}{digits(rng, 7, focus)}",  # 8-digit local numbers in these cities
        "time": _time(rng),
        "cashier": f"{rng.randint(1, 30):03d}",
        "till": f"{rng.randint(1, 8):02d}",
        "receipt_no": f"{date:%Y%m%d}{digits(rng, 6, focus)}",
        "payment": payment,
        "paid": _yuan(paid),
        "change": _yuan(paid - total),
        "txn": digits(rng, 28 if payment == "微信支付" else 24, focus)[:20],
        "card_no": f"{rng.choice(['6222', '6217', '6228', '6259'])} **** **** {digits(rng, 4, focus)}",
        "auth": digits(rng, 6, focus),
        "ref": digits(rng, 12, focus),
        "paper": rng.choice([(255, 255, 255), (250, 249, 244), (246, 244, 238)]),
        "ink": rng.choice([(20, 20, 24), (45, 45, 50), (60, 58, 70)]),
    }
    return target, extras


def _wrap_chars(c: Canvas, text: str, size: int, width: float) -> list[str]:
    """Break text without spaces (Chinese) at any character, text with spaces at a space."""
    if " " in text:
        return _wrap(c, text, size, width)
    lines, cur = [], ""
    for ch in text:
        if cur and c.text_width(cur + ch, size) > width:
            lines.append(cur)
            cur = ch
        else:
            cur += ch
    return lines + [cur] if cur else lines


def _kv(c: Canvas, y: float, label: str, value: str, size: int, ink, weight: str = "Regular", L: int = 28) -> float:
    """A label on the left, its value flush right; returns the next line's y."""
    c.text((L, y), label, size, weight, anchor="lm", fill=ink)
    c.text((WIDTH - 28, y), value, size, weight, anchor="rm", fill=ink)
    return y + size + 11


def _render_ko(target: dict, extras: dict, rng: random.Random) -> Image.Image:
    t, ink = target, extras["ink"]
    c = Canvas(WIDTH, 980 + 34 * len(t["items"]), lang="ko", paper=extras["paper"])
    L, R, mid = 28, WIDTH - 28, WIDTH / 2
    y = 40
    if t["store"]:
        c.text((mid, y), t["store"], 22, "Bold", anchor="mm", fill=ink)
        y += 32
    c.text((L, y), f"사업자번호: {extras['biz_no']}", 14, anchor="lm", fill=ink)
    c.text((R, y), f"대표: {extras['owner']}", 14, anchor="rm", fill=ink)
    y += 22
    if t["address"]:
        for line in _wrap(c, t["address"], 14, R - L):
            c.text((L, y), line, 14, anchor="lm", fill=ink)
            y += 22
    c.text((L, y), f"TEL: {extras['tel']}", 14, anchor="lm", fill=ink)
    y += 34
    c.text((mid, y), extras["title"], 19, "Bold", anchor="mm", fill=ink)
    y += 24
    c.hline(L, R, y, dash=5, fill=ink)
    y += 20
    c.text((L, y), f"판매일시: {(t['date'] + ' ') if t['date'] else ''}{extras['time']}", 15, anchor="lm", fill=ink)
    y += 24
    c.text((L, y), f"영수증번호: {extras['receipt_no']}", 15, anchor="lm", fill=ink)
    c.text((R, y), f"POS: {extras['pos']}", 15, anchor="rm", fill=ink)
    y += 20
    c.hline(L, R, y, dash=5, fill=ink)
    y += 22
    cols = (L, 296, 346, R)  # name left; unit price, quantity and amount flush right
    for x, head, anchor in zip(cols, ("상품명", "단가", "수량", "금액"), ("lm", "rm", "rm", "rm")):
        c.text((x, y), head, 15, "Medium", anchor=anchor, fill=ink)
    y += 30
    for it, unit in zip(t["items"], extras["unit_prices"]):
        c.text((L, y), it["name"], 16, anchor="lm", fill=ink)
        c.text((cols[1], y), unit, 16, anchor="rm", fill=ink)
        c.text((cols[2], y), str(it["quantity"]), 16, anchor="rm", fill=ink)
        c.text((R, y), it["price"], 16, anchor="rm", fill=ink)
        y += 32
    c.hline(L, R, y - 10, dash=5, fill=ink)
    y += 16
    if t["subtotal"] is not None:
        y = _kv(c, y, extras["sub_label"], t["subtotal"], 16, ink)
    if t["tax"] is not None:
        y = _kv(c, y, extras["tax_label"], t["tax"], 16, ink)
    y = _kv(c, y + 4, extras["total_label"], t["total"], 20, ink, "Bold")
    if extras["card"]:
        y = _kv(c, y, "신용카드", t["total"], 16, ink)
    else:
        y = _kv(c, y, "받을금액", t["total"], 16, ink)
        y = _kv(c, y, "현금", extras["paid"], 16, ink)  # handed over
        y = _kv(c, y, "거스름돈", extras["change"], 16, ink)
    c.hline(L, R, y, dash=5, fill=ink)
    y += 22
    if extras["card"]:
        c.text((mid, y), "*** 카드승인 ***", 16, "Medium", anchor="mm", fill=ink)
        y += 28
        for label, value in (("카드종류", extras["issuer"]), ("카드번호", extras["card_no"]),
                             ("할부", extras["installment"]), ("승인번호", extras["approval"]),
                             ("승인금액", t["total"]), ("가맹점번호", extras["merchant"])):
            y = _kv(c, y, label, value, 15, ink)
        c.hline(L, R, y, dash=5, fill=ink)
        y += 24
    c.text((mid, y), "감사합니다. 또 방문해 주세요.", 15, anchor="mm", fill=ink)
    y += 24
    c.text((mid, y), "교환·환불은 영수증 지참 시 7일 이내 가능합니다.", 13, anchor="mm", fill=ink)
    y += 34
    return _barcode_and_crop(c, extras["receipt_no"], y, ink)


def _render_zh(target: dict, extras: dict, rng: random.Random) -> Image.Image:
    t, ink = target, extras["ink"]
    c = Canvas(WIDTH, 980 + 34 * len(t["items"]), lang="zh", paper=extras["paper"])
    L, R, mid = 28, WIDTH - 28, WIDTH / 2
    y = 40
    if t["store"]:
        c.text((mid, y), t["store"], 22, "Bold", anchor="mm", fill=ink)
        y += 32
    if t["address"]:
        for line in _wrap_chars(c, f"地址: {t['address']}", 14, R - L):
            c.text((mid, y), line, 14, anchor="mm", fill=ink)
            y += 22
    c.text((mid, y), f"电话: {extras['tel']}", 14, anchor="mm", fill=ink)
    y += 34
    c.text((mid, y), extras["title"], 19, "Bold", anchor="mm", fill=ink)
    y += 24
    c.hline(L, R, y, dash=5, fill=ink)
    y += 20
    c.text((L, y), f"收银员: {extras['cashier']}", 15, anchor="lm", fill=ink)
    c.text((R, y), f"机号: {extras['till']}", 15, anchor="rm", fill=ink)
    y += 24
    c.text((L, y), f"单号: {extras['receipt_no']}", 15, anchor="lm", fill=ink)
    y += 24
    c.text((L, y), f"日期: {(t['date'] + ' ') if t['date'] else ''}{extras['time']}", 15, anchor="lm", fill=ink)
    y += 20
    c.hline(L, R, y, dash=5, fill=ink)
    y += 22
    cols = (L, 286, 356, R)  # name left; quantity, unit price and amount flush right
    for x, head, anchor in zip(cols, ("品名", "数量", "单价", "金额"), ("lm", "rm", "rm", "rm")):
        c.text((x, y), head, 15, "Medium", anchor=anchor, fill=ink)
    y += 30
    for it, unit in zip(t["items"], extras["unit_prices"]):
        c.text((L, y), it["name"], 16, anchor="lm", fill=ink)
        c.text((cols[1], y), str(it["quantity"]), 16, anchor="rm", fill=ink)
        c.text((cols[2], y), unit, 16, anchor="rm", fill=ink)
        c.text((R, y), it["price"], 16, anchor="rm", fill=ink)
        y += 32
    c.hline(L, R, y - 10, dash=5, fill=ink)
    y += 16
    if t["subtotal"] is not None:
        y = _kv(c, y, f"{extras['sub_label']}:", t["subtotal"], 16, ink)
    if extras["discount"]:
        y = _kv(c, y, "优惠:", f"-{extras['discount']}", 16, ink)
    y = _kv(c, y + 4, f"{extras['total_label']}:", f"¥{t['total']}", 20, ink, "Bold")
    if t["tax"] is not None:
        y = _kv(c, y, f"{extras['tax_label']}(含税{extras['vat']}%):", t["tax"], 15, ink)
    pay = extras["payment"]
    if pay == "现金":
        y = _kv(c, y, "实收(现金):", extras["paid"], 16, ink)
        y = _kv(c, y, "找零:", extras["change"], 16, ink)
    else:
        y = _kv(c, y, f"实收({pay}):", t["total"], 16, ink)
        if pay == "银行卡":
            for label, value in (("卡号", extras["card_no"]), ("授权号", extras["auth"]), ("参考号", extras["ref"])):
                y = _kv(c, y, f"{label}:", value, 15, ink)
        else:
            y = _kv(c, y, "交易单号:", extras["txn"], 15, ink)
    c.hline(L, R, y, dash=5, fill=ink)
    y += 24
    c.text((mid, y), "谢谢惠顾，欢迎再次光临！", 15, anchor="mm", fill=ink)
    y += 24
    c.text((mid, y), "请妥善保管小票，如需发票请当月凭小票开具", 13, anchor="mm", fill=ink)
    y += 34
    return _barcode_and_crop(c, extras["receipt_no"], y, ink)
