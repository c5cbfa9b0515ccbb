"""Perceptual-hash distances behind data.near_duplicate_bits: distinct rendered documents vs copies of one page.

    python benchmarks/bench_leakage_phash.py [--n 24]

Renders N synthetic test documents, then prints the smallest distance (of 256 bits) between two distinct
documents and the distance between a page and its JPEG re-encode (quality 70) and its 2x downscale.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

from vlmsweep.config import DataMixConfig
from vlmsweep.data.build import render_records, split_jobs
from vlmsweep.data.images import load_image
from vlmsweep.data.leakage import PHASH_SIZE, fingerprints


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        records = render_records(split_jobs("test", a.n, DataMixConfig(name="rx_receipt_1_1_1"), 0), out, "scan")
        hashes = [fingerprints(r.image)[1] for r in records]
        distinct = sorted(int(x - y) for x, y in itertools.combinations(hashes, 2))
        page = load_image(records[0].image)
        page.save(out / "reencoded.jpg", quality=70)
        page.resize((page.width // 2, page.height // 2)).save(out / "half.png")
        reenc = int(hashes[0] - fingerprints(out / "reencoded.jpg")[1])
        half = int(hashes[0] - fingerprints(out / "half.png")[1])
    print(f"phash {PHASH_SIZE}x{PHASH_SIZE}: {a.n} distinct documents, smallest distance {distinct[0]} bits "
          f"(5 smallest {distinct[:5]}); same page re-encoded {reenc} bits, downscaled 2x {half} bits")


if __name__ == "__main__":
    main()
