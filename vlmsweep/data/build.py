"""Rendering datasets: one sample from a seed, whole splits and targeted sets, cached on disk by their definition."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import PIL
from PIL import Image

from ..config import DataMixConfig
from ..files import write_json
from . import noise as noise_mod
from . import prescription, receipt
from .canvas import Canvas
from .layout import reading_order
from .manifest import read_manifest, write_manifest
from .mix import assign_domains, domain_weights, sample_seed
from .record import DOMAINS, RECEIPT_DOMAINS, SPLITS, Record
from .schema import empty_target

GENERATOR_VERSION = 1  # bump by hand for changes the source hash below cannot see (e.g. font files)
FOCUSES = ("digits", "units", "near_miss", "hard_negative", "sparse", "short")
LANG_OF_DOMAIN = {"prescription_ko": "ko", "prescription_zh": "zh", "receipt": "en", "receipt_ko": "ko", "receipt_zh": "zh"}
_SOURCES = ("prescription.py", "receipt.py", "canvas.py", "noise.py", "vocab.py", "fonts.py", "build.py")


@lru_cache(maxsize=1)
def generator_fingerprint() -> str:
    """Hash of the generator sources and Pillow's version: any change re-renders, no stale caches."""
    h = hashlib.sha256(f"{GENERATOR_VERSION}/{PIL.__version__}".encode())
    for name in _SOURCES:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Sample:
    image: Image.Image
    jpeg_quality: int
    target: dict
    domain: str
    image_domain: str


def render_sample(seed: int, domain: str, image_domain: str | None = None, focus: str | None = None,
                  noise: str = "scan") -> Sample:
    """One document from one seed; same arguments -> byte-identical JPEG and identical target."""
    image_domain = image_domain or domain
    if image_domain not in DOMAINS:
        raise ValueError(f"image_domain={image_domain!r}: the generators draw {list(DOMAINS)}")
    rng = random.Random(seed)
    lang = LANG_OF_DOMAIN[image_domain]
    if image_domain in RECEIPT_DOMAINS:
        target, extras = receipt.sample_target(rng, lang, focus)
        image = receipt.render(target, extras, rng)
    else:
        target, extras = prescription.sample_target(rng, lang, focus)
        image = (prescription.render_ko if lang == "ko" else prescription.render_zh)(target, extras, rng)
    image, quality = noise_mod.apply(image, rng, noise)
    if domain != image_domain:
        if domain in RECEIPT_DOMAINS or image_domain not in RECEIPT_DOMAINS:
            raise ValueError(f"hard negatives ask a receipt image as a prescription; got {domain=} {image_domain=}")
        target = empty_target("prescription")  # nothing on a receipt answers a prescription field
    return Sample(image, quality, target, domain, image_domain)


def page_text(seed: int, domain: str, image_domain: str | None = None, focus: str | None = None,
              noise: str = "scan") -> tuple[Sample, str]:
    """The document `render_sample` draws from these arguments, and every string drawn on it in reading order
    (vlmsweep.data.layout): what a perfect OCR engine would return, one text line a line."""
    saved, Canvas.drawn_boxes = Canvas.drawn_boxes, []
    try:
        sample = render_sample(seed, domain, image_domain, focus, noise)
        boxes = Canvas.drawn_boxes
    finally:
        Canvas.drawn_boxes = saved
    return sample, "\n".join(line for line in reading_order(boxes) if line.strip())


def encode_jpeg(sample: Sample) -> bytes:
    buf = io.BytesIO()
    sample.image.save(buf, "JPEG", quality=sample.jpeg_quality, optimize=False)
    return buf.getvalue()


def _render_one(job: tuple) -> tuple[str, tuple[dict, str | None]]:
    rid, seed, domain, image_domain, focus, noise, out, text = job
    s, drawn = page_text(seed, domain, image_domain, focus, noise) if text else (render_sample(seed, domain, image_domain, focus, noise), None)
    Path(out).write_bytes(encode_jpeg(s))
    return rid, (s.target, drawn)


def render_records(jobs: list[tuple[str, int, str, str, str | None]], folder: Path, noise: str,
                   workers: int | None = None, origin: str = "base", text: bool = False) -> list[Record]:
    """Render (id, seed, domain, image_domain, focus) jobs into folder/images/ and return their records; with `text`,
    each record's `hint` is its page's own text in reading order (`page_text`), for a reader's warm-up to corrupt."""
    img_dir = folder / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    full = [(rid, seed, d, idom, focus, noise, str(img_dir / f"{rid}.jpg"), text) for rid, seed, d, idom, focus in jobs]
    workers = workers if workers is not None else (min(os.cpu_count() or 1, 8) if len(full) >= 48 else 1)
    if workers > 1:
        import multiprocessing as mp

        # spawn, not fork: the caller may hold torch/OpenMP threads, which fork can deadlock.
        with mp.get_context("spawn").Pool(workers) as pool:
            results = pool.map(_render_one, full, chunksize=max(1, len(full) // (workers * 4)))
    else:
        results = [_render_one(j) for j in full]
    rendered = dict(results)
    return [Record(id=rid, image=(img_dir / f"{rid}.jpg").resolve(), domain=d, target=rendered[rid][0],
                   image_domain=idom, origin=origin, seed=seed, hint=rendered[rid][1]) for rid, seed, d, idom, _ in jobs]


def _cached(cache_dir: Path, name: str, key: dict, jobs: list, noise: str) -> list[Record]:
    """Render jobs once per key: into a temp folder, then one atomic rename, so a crashed or concurrent
    run never sees half a dataset; the loser of a race discards its copy and uses the winner's."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    root = Path(cache_dir).expanduser() / "datasets"
    final = root / f"{name}-{digest}"
    manifest = final / "manifest.jsonl"
    if manifest.is_file():
        return list(read_manifest(manifest))
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        records = render_records(jobs, tmp, noise)
        write_manifest(records, tmp / "manifest.jsonl")
        write_json(tmp / "key.json", key, indent=1, sort_keys=True, ensure_ascii=True, end="")
        try:
            os.rename(tmp, final)
        except OSError:
            if not manifest.is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return list(read_manifest(manifest))


def split_jobs(split: str, n: int, mix: DataMixConfig, seed: int) -> list[tuple]:
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    if n <= 0:
        raise ValueError(f"{split}: n={n}: a split needs at least one sample")
    pairs = assign_domains(n, mix, seed, split)
    return [(f"{split}-{i:05d}", sample_seed(seed, split, i), d, idom, None) for i, (d, idom) in enumerate(pairs)]


def build_split(split: str, n: int, mix: DataMixConfig, seed: int, cache_dir: Path,
                noise: str = "scan") -> list[Record]:
    """n rendered samples of a split (train, mining, test, regression), reused from the cache when
    the same definition was rendered before. Each split draws seeds from its own stream, so splits
    never share a document."""
    if noise not in noise_mod.NOISE_LEVELS:
        raise ValueError(f"noise={noise!r}: expected one of {noise_mod.NOISE_LEVELS}")
    jobs = split_jobs(split, n, mix, seed)
    key = {"kind": "split", "generator": generator_fingerprint(), "split": split, "n": n, "seed": seed,
           "weights": {d: round(w, 9) for d, w in domain_weights(mix).items()},
           "hard_negatives": round(float(mix.hard_negatives), 9), "noise": noise}
    return _cached(cache_dir, split, key, jobs, noise)


def targeted_jobs(focus: str, n: int, seed: int, domains) -> list[tuple]:
    if focus not in FOCUSES:
        raise ValueError(f"focus={focus!r}: expected one of {FOCUSES}")
    if n <= 0:
        raise ValueError(f"targeted {focus}: n={n}: need at least one sample")
    domains = tuple(domains)
    bad = [d for d in domains if d not in DOMAINS]
    if bad or not domains:
        raise ValueError(f"domains={domains}: choose from {DOMAINS}")
    stream = f"targeted/{focus}"  # never one of SPLITS, so never a split's seed
    jobs = []
    for i in range(n):
        s = sample_seed(seed, stream, i)
        d = domains[i % len(domains)]
        if focus == "hard_negative":
            # Receipts of every language, in turn, asked as the given prescription domains.
            asked = d if d not in RECEIPT_DOMAINS else ("prescription_ko", "prescription_zh")[i % 2]
            jobs.append((f"targeted-{focus}-{seed}-{i:05d}", s, asked, RECEIPT_DOMAINS[i % len(RECEIPT_DOMAINS)], None))
        else:
            jobs.append((f"targeted-{focus}-{seed}-{i:05d}", s, d, d, focus))
    return jobs


def generate_targeted(focus: str, n: int, seed: int, cache_dir: Path, noise: str = "scan",
                      domains=("prescription_ko", "prescription_zh")) -> list[Record]:
    """n samples rich in one failure mode, for the retrain loop.

    focus: digits (confusable 5/8, 6/0, 1/7 in ids, strengths, doses), units (μg, IU, mL, g),
    near_miss (look-alike drug names on one form), hard_negative (receipt images asked as the
    given prescription domains, all-null target; the receipt's language cycles en, ko, zh), sparse (many blank fields). `seed` names the
    stream (e.g. the cycle number): seeds come from "targeted/<focus>", disjoint from every split.
    Domains cycle in the given order. origin is "base"; the loop sets its own lineage.
    """
    if noise not in noise_mod.NOISE_LEVELS:
        raise ValueError(f"noise={noise!r}: expected one of {noise_mod.NOISE_LEVELS}")
    jobs = targeted_jobs(focus, n, seed, domains)
    key = {"kind": "targeted", "generator": generator_fingerprint(), "focus": focus, "n": n, "seed": seed,
           "domains": list(domains), "noise": noise}
    return _cached(cache_dir, f"targeted-{focus}", key, jobs, noise)
