"""Real receipts: ICDAR 2019 SROIE (img/NNN.jpg + key/NNN.json, or the layouts in LAYOUTS) as receipt Records.

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


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LAYOUTS = ("ROOT/img/NAME.jpg + ROOT/key/NAME.json (the sample layout)",
           "ROOT/data/img/ + ROOT/data/key/ (the root of the zzzDavid/ICDAR-2019-SROIE mirror)",
           "NAME.jpg + NAME.txt side by side in ROOT, the .txt holding the JSON key (the RRC task-3 download)")


def _pairs(root: Path) -> tuple[dict[str, Path], dict[str, Path], str]:
    """(stem -> image, stem -> key file, how the pair is described in errors) for whichever layout root has."""
    for base in (root, root / "data"):
        if (base / "img").is_dir() and (base / "key").is_dir():
            images = {p.stem: p for p in (base / "img").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
            return images, {p.stem: p for p in (base / "key").glob("*.json")}, "img/NAME.jpg needs key/NAME.json"
    if root.is_dir():
        images = {p.stem: p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        keys = {p.stem: p for p in root.iterdir() if p.suffix.lower() in (".txt", ".json")}
        if images and keys:
            return images, keys, "NAME.jpg needs NAME.txt (or NAME.json) beside it"
    raise FileNotFoundError(f"{root}: no SROIE receipts in any layout this converter reads: " + "; ".join(LAYOUTS))


def load_sroie(root: Path) -> list[Record]:
    """Records for every receipt image that has its key (LAYOUTS); a key without its image (or the reverse)
    and a malformed key file are errors naming the file."""
    root = Path(root)
    images, keys, rule = _pairs(root)
    orphans = sorted(set(images) ^ set(keys))
    if orphans:
        raise ValueError(f"{root}: image and key files do not pair up for {orphans[:10]} (every {rule})")
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
        raise ValueError(f"{root}: no receipts found (" + "; ".join(LAYOUTS) + ")")
    return records
