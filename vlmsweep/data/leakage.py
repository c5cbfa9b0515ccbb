"""The leakage guard: no test or regression sample (same id, generator seed, image file, image bytes or a
near-duplicate image) ever enters a training set, whether it is synthetic or the user's own."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import imagehash

from ..files import not_a_regular_file
from .images import ImageLoadError, load_image
from .record import Record

REPEAT_MARK = "#rep"  # id suffix of the oversampled copies of a hard-set record: ids stay unique per manifest
# Perceptual hash (DCT, 16x16 = 256 bits) of the image decoded at <= 1 MP. Measured on 24 rendered documents of
# the same layouts (benchmarks/bench_leakage_phash.py): distinct documents differ in >= 28 bits, a JPEG re-encode
# (quality 70) or a 2x downscale of the same document in 2. data.near_duplicate_bits (default 8) is the distance at or below which two images are one document.
PHASH_SIZE = 16


class LeakageError(RuntimeError):
    """A held-out sample (same id, seed, image file, bytes or a near-duplicate image) would enter training."""


def base_id(record_id: str) -> str:
    return record_id.split(REPEAT_MARK, 1)[0]


@lru_cache(maxsize=8192)
def _fingerprints(path: str, mtime_ns: int) -> tuple[str, imagehash.ImageHash] | None:
    if not_a_regular_file(Path(path)):  # a FIFO would block read_bytes(); whoever reads it reports it
        return None
    try:
        data = Path(path).read_bytes()
        return hashlib.sha256(data).hexdigest(), imagehash.phash(load_image(Path(path), max_pixels=1 << 20), PHASH_SIZE)
    except (OSError, ImageLoadError):
        return None  # an unreadable image is reported by whoever reads it; it cannot leak content


def fingerprints(path: Path) -> tuple[str, imagehash.ImageHash] | None:
    """(sha256 of the file's bytes, perceptual hash) of an image; None when it cannot be read."""
    p = Path(path).resolve()
    try:
        return _fingerprints(str(p), p.stat().st_mtime_ns)
    except OSError:
        return None


def check_no_leak(train: Sequence[Record], held_out: dict[str, Sequence[Record]], where: str,
                  near_duplicate_bits: int = 8, role: str = "training") -> None:
    """Raise LeakageError naming every training record that shares an id, a generator seed, an image file,
    the image's bytes or a near-duplicate image (perceptual hashes at most `near_duplicate_bits` apart; -1: no
    near-duplicate check) with a held-out record (test, regression). `where` starts the message (e.g. "cycle 2").
    `role` names what `train` is: "validation" for the set that selects checkpoints, held out from the test set."""
    by_id, by_seed, by_image, by_bytes, phashes = {}, {}, {}, {}, []
    for split, records in held_out.items():
        for r in records:
            by_id[r.id] = (split, r.id)
            if r.seed is not None:
                by_seed[r.seed] = (split, r.id)
            by_image[str(Path(r.image).resolve())] = (split, r.id)
            fp = fingerprints(r.image)
            if fp is not None:
                by_bytes[fp[0]] = (split, r.id)
                phashes.append((fp[1], (split, r.id)))
    offending = []
    for r in train:
        hit = by_id.get(base_id(r.id))
        why = "same id"
        if hit is None and r.seed is not None and r.seed in by_seed:
            hit, why = by_seed[r.seed], f"same generator seed {r.seed}"
        if hit is None and str(Path(r.image).resolve()) in by_image:
            hit, why = by_image[str(Path(r.image).resolve())], "same image file"
        fp = fingerprints(r.image) if hit is None else None
        if hit is None and fp is not None and fp[0] in by_bytes:
            hit, why = by_bytes[fp[0]], "same image bytes"
        if hit is None and fp is not None and near_duplicate_bits >= 0:
            near = min(((fp[1] - h, ref) for h, ref in phashes), default=None, key=lambda x: x[0])
            if near is not None and near[0] <= near_duplicate_bits:
                hit, why = near[1], f"near-duplicate image, perceptual hash {near[0]} bits apart"
        if hit is not None:
            offending.append(f"{r.id} (origin {r.origin}) = {hit[0]} id {hit[1]} ({why})")
    if offending:
        shown = "; ".join(offending[:10]) + (f"; ... {len(offending) - 10} more" if len(offending) > 10 else "")
        raise LeakageError(
            f"{where}: {len(offending)} {role} sample(s) would leak a held-out set into {role}: {shown}. "
            "Test and regression samples are never trained on nor used to select a checkpoint: remove them from "
            "data.train_manifest, data.val_manifest (or the mining pool), or use disjoint data.test_manifest / "
            "data.regression_manifest (data.near_duplicate_bits sets how alike two images must be to count as one "
            "document)."
        )
