"""The per-domain router on synthetic test pages: how often it picks the page's own group, and its cost per page.

    python benchmarks/bench_routing.py [--n 24] [OVERRIDES...]      e.g. model=qwen2_vl_2b model.path=DIR

Renders N pages of the default mix (prescriptions ko/zh, receipts en/ko/zh), asks the base model of the
composed config (default: the embedded tiny one, which reads nothing) which group each page is
(vlmsweep/pipeline/routing.py, the default adapters=per_domain grouping) and prints accuracy per group, the answers'
spread and seconds per page.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

from vlmsweep.pipeline import routing
from vlmsweep.config import DataMixConfig, visual_tokens_to_pixels
from vlmsweep.data.build import render_records, split_jobs
from vlmsweep.data.images import load_image
from vlmsweep.model import load as model_load
from vlmsweep.config.compose import compose


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    cfg = compose(["adapters=per_domain", *a.overrides])
    groups = {g: list(d) for g, d in cfg.adapters.groups.items()}
    base, processor, _ = model_load.load(cfg)
    base.eval()
    lo, hi = visual_tokens_to_pixels(cfg.max_pixels.min_visual_tokens), visual_tokens_to_pixels(cfg.max_pixels.visual_tokens)
    with tempfile.TemporaryDirectory() as d:
        records = render_records(split_jobs("test", a.n, DataMixConfig(name="rx_receipt_1_1_1"), 0), Path(d), "scan")
        images = [load_image(r.image, max_pixels=4 * hi) for r in records]
        routing.route_images(base, processor, images[:1], list(groups), min_pixels=lo, max_pixels=hi)  # warm-up
        start = time.perf_counter()
        routes = routing.route_images(base, processor, images, list(groups), min_pixels=lo, max_pixels=hi)
        seconds = (time.perf_counter() - start) / len(images)
    known = [routing.group_of(r.domain, groups) for r in records]
    right = collections.Counter(k for k, r in zip(known, routes) if r.group == k)
    total = collections.Counter(known)
    print(f"router ({cfg.model.name}, {cfg.max_pixels.visual_tokens} visual tokens): accuracy "
          f"{sum(right.values()) / len(records):.3f} on {len(records)} pages; "
          + ", ".join(f"{g} {right[g]}/{total[g]}" for g in groups)
          + f"; answers {dict(collections.Counter(r.group for r in routes))}; {seconds:.2f} s per page")


if __name__ == "__main__":
    main()
