"""Named evaluation slices: the records of `synthetic`, `numeric_challenge` and the user's manifest slices."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from ..config import DataConfig, DataMixConfig, EvalConfig
from .build import encode_jpeg, generator_fingerprint, render_sample
from .manifest import read_manifest, write_manifest
from .mix import sample_seed
from .record import DOMAINS, Record
from .splits import load_splits

BUILT_IN = ("synthetic", "numeric_challenge")

# The numeric challenge: pages drawn with the generators' "digits" focus (digits of ids, strengths, doses, days and
# amounts mostly from data.canvas.CONFUSABLE_DIGITS, the pairs 5/8, 6/0, 1/7; 8-10 digit 门诊号, 12-digit GST numbers,
# card and approval numbers), scan
# noise, then printed small and faded: the page is shrunk to CHALLENGE_SCALE (the 16-18 px text of a form
# becomes ~10 px) and its contrast squeezed into CHALLENGE_INK..CHALLENGE_PAPER of 0..255.
CHALLENGE_SCALE = 0.6
CHALLENGE_INK = (85, 110)  # darkest ink level, drawn per page
CHALLENGE_PAPER = (185, 210)  # paper level


def slice_names(cfg_eval: EvalConfig) -> list[str]:
    """eval.slices in order, then every eval.slice_manifests name not listed; unknown names are errors."""
    names = list(dict.fromkeys([*cfg_eval.slices, *cfg_eval.slice_manifests]))
    unknown = [n for n in names if n not in BUILT_IN and n not in cfg_eval.slice_manifests]
    if unknown:
        raise ValueError(f"eval.slices={list(cfg_eval.slices)}: {unknown} is neither a built-in slice {list(BUILT_IN)} "
                         f"nor given a manifest: add eval.slice_manifests.{unknown[0]}=PATH (a JSONL manifest)")
    bad = [n for n in names if not n.replace("_", "").replace("-", "").isalnum()]
    if bad:
        raise ValueError(f"slice names {bad}: use letters, digits, _ and - (they name metrics slice/<name>/... and folders)")
    return names


def slice_records(name: str, cfg_eval: EvalConfig, data: DataConfig, mix: DataMixConfig, cache_dir: Path) -> list[Record]:
    """One slice's records: a user manifest (validated like the test manifest), the synthetic test split
    (data.test_size pages of the mix, as a run without data.test_manifest evaluates) or the numeric challenge."""
    if name in cfg_eval.slice_manifests:
        return list(read_manifest(Path(cfg_eval.slice_manifests[name]).expanduser(), skip_bad_lines=data.skip_bad_lines))
    if name == "synthetic":
        synthetic = DataConfig(**{**data.__dict__, "test_manifest": None})
        return load_splits(synthetic, mix, cache_dir, ("test",))["test"]
    return numeric_challenge(cfg_eval.slice_size, data.seed, cache_dir)


def _challenge_page(seed: int, domain: str):
    page = render_sample(seed, domain, focus="digits", noise="scan")
    rng = random.Random(seed ^ 0x5EED)  # its own stream: the page itself stays the generator's
    w, h = page.image.size
    image = page.image.resize((round(w * CHALLENGE_SCALE), round(h * CHALLENGE_SCALE)), resample=3)  # bicubic
    lo, hi = rng.uniform(*CHALLENGE_INK), rng.uniform(*CHALLENGE_PAPER)
    image = image.point([int(lo + v * (hi - lo) / 255) for v in range(256)] * 3)
    return dataclasses.replace(page, image=image)


def numeric_challenge(n: int, seed: int, cache_dir: Path) -> list[Record]:
    """n challenge pages, the five domains in turn, seeds from the stream "slice/numeric_challenge" (never a
    split's); rendered once into the cache (temporary folder, then one rename) like the splits."""
    if n <= 0:
        raise ValueError(f"eval.slice_size={n}: a rendered slice needs at least one page")
    key = {"kind": "numeric_challenge", "generator": generator_fingerprint(), "n": n, "seed": seed,
           "recipe": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    root = Path(cache_dir).expanduser() / "datasets"
    final = root / f"slice-numeric_challenge-{digest}"
    if (final / "manifest.jsonl").is_file():
        return list(read_manifest(final / "manifest.jsonl"))
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-slice-", dir=root))
    try:
        records = []
        for i in range(n):
            s, domain = sample_seed(seed, "slice/numeric_challenge", i), DOMAINS[i % len(DOMAINS)]
            rid = f"numeric-{i:05d}"
            (tmp / "images").mkdir(exist_ok=True)
            page = _challenge_page(s, domain)
            (tmp / "images" / f"{rid}.jpg").write_bytes(encode_jpeg(page))
            records.append(Record(id=rid, image=(tmp / "images" / f"{rid}.jpg").resolve(), domain=domain,
                                  target=page.target, image_domain=domain, origin="base", seed=s))
        write_manifest(records, tmp / "manifest.jsonl")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "manifest.jsonl").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return list(read_manifest(final / "manifest.jsonl"))
