"""Benchmark: training batches collated per second (image processing, chat template, tokenization, masks) with the
collation on the main process (train.num_workers=0) and in DataLoader worker processes.

    HF_HUB_OFFLINE=1 python benchmarks/bench_collate.py [--n 48] [--tokens 1024] [--workers 0 2]

The collator and processor are the run's (the embedded replica's files are the release's), the samples the
synthetic training split at the visual-token budget. A GPU step of Qwen2-VL-2B takes well under the time one core
needs to collate its batch at 1,024 visual tokens, so this rate bounds the training rate on a fast card.
"""

from __future__ import annotations

import argparse
import os
import time


def rate(records, collator, workers: int, batch: int) -> float:
    from torch.utils.data import DataLoader

    from vlmsweep.train.trainer import Records

    loader = DataLoader(Records(records), batch_size=batch, collate_fn=collator, num_workers=workers)
    start = time.perf_counter()
    n = sum(len(b["image_grid_thw"]) for b in loader)  # worker start-up included, as a run pays it once per epoch
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=48, help="training samples collated per setting")
    parser.add_argument("--tokens", type=int, default=1024, help="visual-token budget (max_pixels)")
    parser.add_argument("--batch", type=int, default=4, help="samples per batch")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker processes")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from vlmsweep.model.load import load_processor, resolve_path
    from vlmsweep.config.compose import compose
    from vlmsweep.pipeline.stages import datasets
    from vlmsweep.train.collator import make_collator

    cfg = compose(["model=tiny", f"max_pixels={args.tokens}tok", f"data.train_size={args.n}", "data.test_size=1",
                   "tracker=none"], "unused")
    records = datasets(cfg)["train"]
    collator = make_collator(cfg, load_processor(resolve_path(cfg.model, cfg.cache_dir)))
    collator(records[: args.batch])  # warm: the template identity check, lazy imports
    print(f"{len(records)} samples, {args.tokens} visual tokens, batch {args.batch}, {os.cpu_count()} CPU cores")
    for workers in args.workers:
        print(f"train.num_workers={workers}: {rate(records, collator, workers, args.batch):.1f} samples/s collated",
              flush=True)


if __name__ == "__main__":
    main()
