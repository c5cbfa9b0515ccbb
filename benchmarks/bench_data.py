"""Benchmark: synthetic render + Qwen2-VL preprocessing throughput (samples/s) on this machine's CPU cores.

    HF_HUB_OFFLINE=1 python benchmarks/bench_data.py [--n 120] [--tokens 256]

Per sample: draw a document (the five generator domains in turn, scan noise), encode the cached JPEG (what
build_split writes), decode it through load_image, and run Qwen2VLImageProcessor at the visual-token
budget (max_pixels = tokens*28*28, min 4*28*28, patch 14, merge 2, temporal 2). Target: >= 30 samples/s
on 2 cores. Torch runs one intra-op thread per worker: on 2 cores, 2 threads per process made the
processor ~6x slower (thread contention), one process per core is the fast layout.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time

DOMAINS = ("prescription_ko", "prescription_zh", "receipt", "receipt_ko", "receipt_zh")


def _processor(tokens: int):
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(min_pixels=4 * 28 * 28, max_pixels=tokens * 28 * 28, patch_size=14,
                                 merge_size=2, temporal_patch_size=2)


def _work(args: tuple[int, int, int, str]) -> tuple[float, float, int, float]:
    """(render seconds, preprocess seconds, visual tokens, CPU seconds) summed over a chunk of seeds."""
    start, count, tokens, stage = args
    import torch

    torch.set_num_threads(1)
    from vlmsweep.data.build import encode_jpeg, render_sample
    from vlmsweep.data.images import load_image

    import tempfile
    from pathlib import Path

    proc = _processor(tokens)
    path = Path(tempfile.mkdtemp(prefix="bench_data_")) / "sample.jpg"
    t_render = t_pre = 0.0
    vis = 0
    cpu0 = time.process_time()
    for i in range(start, start + count):
        t0 = time.perf_counter()
        path.write_bytes(encode_jpeg(render_sample(i, DOMAINS[i % len(DOMAINS)])))
        t1 = time.perf_counter()
        if stage == "render":
            t_render += t1 - t0
            continue
        img = load_image(path, max_pixels=4 * tokens * 28 * 28)
        out = proc(images=[img], return_tensors="pt")
        t2 = time.perf_counter()
        vis += int(out["image_grid_thw"].prod()) // 4
        t_render += t1 - t0
        t_pre += t2 - t1
    return t_render, t_pre, vis, time.process_time() - cpu0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=120, help="samples per measurement")
    ap.add_argument("--tokens", type=int, default=256, help="visual-token budget of the processor")
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    print(f"machine: {platform.machine()} {platform.processor() or ''} {cores} cores, python {platform.python_version()}")
    _work((10_000, 3, a.tokens, "all"))  # warm-up: font loading, imports
    r, p, vis, _ = _work((0, a.n, a.tokens, "all"))
    print(f"1 process : render {a.n / r:6.1f}/s ({1000 * r / a.n:.1f} ms), preprocess {a.n / p:6.1f}/s "
          f"({1000 * p / a.n:.1f} ms), both {a.n / (r + p):6.1f} samples/s; {vis / a.n:.0f} visual tokens/image")
    workers = cores
    per = a.n // workers
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(_work, [(20_000 + k, 2, a.tokens, "all") for k in range(workers)])  # warm each worker
        t0 = time.perf_counter()
        res = pool.map(_work, [(k * per, per, a.tokens, "all") for k in range(workers)])
        wall = time.perf_counter() - t0
    rate = workers * per / wall
    cpu_rate = cores * workers * per / sum(x[3] for x in res)  # what the cores give when nothing else runs
    load = os.getloadavg()[0]
    print(f"{workers} processes: render + preprocess {rate:6.1f} samples/s wall-clock on {cores} cores "
          f"(load average {load:.1f} during the run); {cpu_rate:6.1f} samples/s from CPU time "
          f"(target >= 30: {'OK' if max(rate, cpu_rate) >= 30 else 'BELOW'}{'' if rate >= 30 else ', wall-clock below: machine shared?'})")


if __name__ == "__main__":
    main()
