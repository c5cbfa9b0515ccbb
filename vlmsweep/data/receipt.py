"""Shop receipt generator: the key-value vocabulary (Subtotal, Cheese Tart, GST) that leaks into prescriptions."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from PIL import Image

from . import vocab
from .canvas import Canvas, digits, maybe_null

WIDTH = 480  # thermal roll, ~80 mm at 150 dpi


def _money(cents: int) -> str:
    return f"{cents / 100:,.2f}"


def sample_target(rng: random.Random, focus: str | None = None) -> tuple[dict[str, Any], dict]:
    p_null = 0.45 if focus == "sparse" else 0.05
    store = rng.choice(vocab.STORE_STEMS) + " " + rng.choice(vocab.STORE_KINDS) + rng.choice(vocab.STORE_SUFFIXES)
    if rng.random() < 0.5:
        store = store.upper()
    address = f"No. {rng.randint(1, 188)}, {rng.choice(vocab.STREETS)} {rng.randint(1, 30)}, {rng.choice(vocab.TOWNS)}"
    date = dt.date(2016, 1, 1) + dt.timedelta(days=rng.randrange(9 * 365))
    date_s = rng.choice([f"{date:%d/%m/%Y}", f"{date:%Y-%m-%d}", f"{date:%d-%m-%Y}", f"{date:%d/%m/%y}"])
    items = []
    subtotal = 0
    for name in rng.sample(vocab.ITEMS, rng.randint(2, 6)):
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


def render(target: dict, extras: dict, rng: random.Random) -> Image.Image:
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
    # A barcode of the receipt number: bars only, no text (nothing to read, just realism).
    x = mid - 130
    for ch in extras["receipt_no"] * 3:
        for bit in f"{int(ch) + 3:04b}":
            w = 3 if bit == "1" else 1
            c.draw.rectangle((x, y, x + w - 1, y + 44), fill=ink)
            x += w + 2
    return c.image.crop((0, 0, WIDTH, min(height, int(y + 70))))
