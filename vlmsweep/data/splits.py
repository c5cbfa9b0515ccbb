"""Where each split of a run comes from: the user's manifest, the synthetic mix, or both on purpose."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DataConfig, DataMixConfig
from .build import build_split
from .manifest import read_manifest
from .record import Record

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "test", "mining", "regression", "validation")


def needed_splits(train: bool, evaluate: bool, loop: bool, validate: bool = False) -> tuple[str, ...]:
    """The splits a run reads: a loop also needs its mining pool and regression set, evaluation during training
    (train.eval_every) its validation set; nothing else is built."""
    names = [n for n, used in (("train", train or loop), ("test", evaluate or loop)) if used]
    return tuple(names + (["mining", "regression"] if loop else []) + (["validation"] if validate else []))


@dataclass
class Splits:
    records: dict[str, list[Record]]
    # split -> {"manifest": path or None, "from_manifest": n, "skipped": [[line, reason], ...], "synthetic": n,
    #           "nfc_normalized": [line, ...] (targets normalised to Unicode NFC on load)}
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getitem__(self, split: str) -> list[Record]:
        return self.records.get(split, [])


def load_splits(data: DataConfig, mix: DataMixConfig, cache_dir: Path, names: tuple[str, ...]) -> Splits:
    """Each named split from data.<split>_manifest, else `data.<split>_size` synthetic samples from the mix.

    With data.add_synthetic=true a split that has a manifest also gets its synthetic samples (data_mix
    applies to that share); every record keeps its origin (manifest or base) so the run can tell them
    apart. Manifests are validated here, before any model is loaded; a training manifest's images are
    also decoded and checked against the processor's limits (an unusable one is a bad line).
    """
    options = {  # split -> (manifest, synthetic size)
        "train": (data.train_manifest, data.train_size),
        "test": (data.test_manifest, data.test_size),
        "mining": (data.mining_manifest, data.mining_size),
        "regression": (data.regression_manifest, data.regression_size),
        "validation": (data.val_manifest, data.val_size),
    }
    splits = Splits(records={})
    for split in SPLIT_NAMES:
        manifest, size = options[split]
        if split not in names:
            if manifest:
                log.warning("data.%s_manifest=%s is not read: this run does not use a %s split", split, manifest, split)
            continue
        records: list[Record] = []
        source: dict[str, Any] = {"manifest": None, "from_manifest": 0, "skipped": [], "synthetic": 0,
                                  "nfc_normalized": []}
        if manifest:
            result = read_manifest(Path(manifest).expanduser(), skip_bad_lines=data.skip_bad_lines,
                                   check_images=split == "train")
            records += result
            source |= {"manifest": str(result.path.resolve()), "from_manifest": len(result),
                       "skipped": [[n, r] for n, r in result.skipped], "nfc_normalized": result.normalized}
        if (not manifest or data.add_synthetic) and size > 0:
            synthetic = build_split(split, size, mix, data.seed, cache_dir, noise=data.noise)
            records += synthetic
            source["synthetic"] = len(synthetic)
        _check_unique_ids(records, split, manifest)
        splits.records[split] = records
        splits.sources[split] = source
        log.info("data: %s = %d from %s + %d synthetic%s", split, source["from_manifest"], manifest or "no manifest",
                 source["synthetic"], f" ({len(source['skipped'])} bad lines skipped)" if source["skipped"] else "")
    return splits


def _check_unique_ids(records: list[Record], split: str, manifest: str | None) -> None:
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise ValueError(f"{split} split: id {r.id!r} appears twice (manifest {manifest} and the synthetic share "
                             "share ids); rename it in the manifest")
        seen.add(r.id)
