"""Real receipts: the ICDAR 2019 SROIE layout (img/NNN.jpg + key/NNN.json) as receipt Records.

Get the full set (626 training receipts with labels) from the ICDAR 2019 Robust Reading Challenge
on Scanned Receipts OCR and Information Extraction (https://rrc.cvc.uab.es/?ch=13, research use
only), or from a mirror with corrected labels such as github.com/zzzDavid/ICDAR-2019-SROIE (folder
data/: img/ and key/) or the Kaggle copies ("ICDAR 2019 SROIE"). This project ships none of it.

Mapping onto the receipt schema: company -> store, date -> date, address -> address,
total -> total, each the string as annotated (amounts stay strings as printed, e.g. "9.00", like
the synthetic receipts). SROIE does not label items, subtotal or tax: they are written as null and
listed in Record.unannotated (manifest key "unannotated"), so scoring must skip them rather than
reward or punish a model that reads them.
"""

from __future__ import annotations

import json
from pathlib import Path

from .record import Record

FIELD_MAP = {"company": "store", "date": "date", "address": "address", "total": "total"}
UNANNOTATED = ("items", "subtotal", "tax")


def load_sroie(root: Path) -> list[Record]:
    """Records for every img/NNN.jpg that has a key/NNN.json; a key without its image (or the reverse)
    and a malformed key file are errors naming the file."""
    root = Path(root)
    img_dir, key_dir = root / "img", root / "key"
    if not img_dir.is_dir() or not key_dir.is_dir():
        raise FileNotFoundError(f"{root}: expected the SROIE layout img/NNN.jpg + key/NNN.json")
    images = {p.stem: p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    keys = {p.stem: p for p in key_dir.glob("*.json")}
    orphans = sorted(set(images) ^ set(keys))
    if orphans:
        raise ValueError(f"{root}: image and key files do not pair up for {orphans[:10]} "
                         "(every img/NNN.jpg needs key/NNN.json)")
    records = []
    for stem in sorted(keys):
        try:
            raw = json.loads(keys[stem].read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{keys[stem]}: not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{keys[stem]}: expected an object with company, date, address, total")
        target = {"store": None, "date": None, "address": None, "items": None, "subtotal": None, "tax": None, "total": None}
        for src, dst in FIELD_MAP.items():
            v = raw.get(src)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"{keys[stem]}: {src} must be a string, got {v!r}")
            target[dst] = v.strip() if isinstance(v, str) and v.strip() else None
        records.append(Record(id=f"sroie-{stem}", image=images[stem].resolve(), domain="receipt", target=target,
                              image_domain="receipt", origin="manifest", seed=None, unannotated=UNANNOTATED))
    if not records:
        raise ValueError(f"{root}: no receipts found under img/ and key/")
    return records
