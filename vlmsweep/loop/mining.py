"""The hard set: failures mined from the mining pool, targeted synthesis for their tags, and the oversampling
that puts it into the next cycle's training set. Each record keeps its lineage (origin, parents)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vlmsweep import data as data_mod
from vlmsweep.data import Record
from vlmsweep.data.leakage import REPEAT_MARK
from vlmsweep.evaluate.metrics import TAGS
from vlmsweep.evaluate.remedies import DOMAINS_OF_FOCUS, FOCUS_OF_TAG, PRESCRIPTION_DOMAINS, UNFIXABLE_TAGS
from vlmsweep.metrics import worst_first


def tag_counts(samples: Sequence[dict]) -> dict[str, int]:
    return {tag: sum(tag in s.get("tags", ()) for s in samples) for tag in TAGS}


def mine_failures(samples: Sequence[dict], pool: Sequence[Record], per_tag: int, cycle: int) -> dict[str, list[Record]]:
    """Top `per_tag` mining-pool records per data-fixable tag, worst first (vlmsweep.metrics.worst_first).

    A record carrying several tags is mined once, under the first of its tags (TAGS order) that picks
    it; its origin becomes mined:<cycle>:<tag>. Tags data cannot fix (UNFIXABLE_TAGS) mine nothing:
    they are reported with the config change that addresses them.
    """
    by_id = {r.id: r for r in pool}
    unknown = sorted({str(s["id"]) for s in samples} - set(by_id))
    if unknown:
        raise ValueError(f"mine_failures: sample id(s) {unknown[:5]} are not in the mining pool; "
                         "mine only the mining pool's own samples")
    taken: set[str] = set()
    out: dict[str, list[Record]] = {}
    for tag in FOCUS_OF_TAG:
        ranked = sorted((s for s in samples if tag in s.get("tags", ())), key=worst_first)
        picked = []
        for s in ranked:
            if len(picked) >= per_tag:
                break
            if s["id"] in taken:
                continue
            taken.add(s["id"])
            picked.append(dataclasses.replace(by_id[s["id"]], origin=f"mined:{cycle}:{tag}"))
        if picked:
            out[tag] = picked
    return out


def synth_seed(data_seed: int, cycle: int, tag: str) -> int:
    """Names the generator stream of one (cycle, tag): distinct per cycle and tag, readable in the ids."""
    return data_seed * 100_000 + cycle * 100 + TAGS.index(tag)


def synth_domains(tag: str, asked: Sequence[str]) -> tuple[str, ...]:
    """Generator domains for a tag's synthetic samples: the asked domains where it failed, if the focus can draw them."""
    allowed = DOMAINS_OF_FOCUS[FOCUS_OF_TAG[tag]]
    picked = tuple(d for d in allowed if d in set(asked))
    return picked or PRESCRIPTION_DOMAINS


def synthesize(failing: dict[str, Sequence[str]], per_tag: int, cycle: int, data_seed: int, cache_dir: Path,
               noise: str, parents: dict[str, Sequence[str]] | None = None) -> dict[str, list[Record]]:
    """`per_tag` targeted samples for each data-fixable tag in `failing` (tag -> asked domains of its
    failures), rendered through data.generate_targeted; origin synth:<cycle>:<tag>, and as parents the ids
    of the records mined for that tag (`parents`: tag -> ids), so each one traces back to the failures it targets."""
    parents = parents or {}
    out: dict[str, list[Record]] = {}
    if per_tag <= 0:
        return out
    for tag, asked in failing.items():
        if tag not in FOCUS_OF_TAG:
            raise ValueError(f"synthesize: tag {tag!r} is not data-fixable; fixable tags: {list(FOCUS_OF_TAG)}")
        records = data_mod.generate_targeted(FOCUS_OF_TAG[tag], per_tag, synth_seed(data_seed, cycle, tag), cache_dir,
                                             noise=noise, domains=synth_domains(tag, asked))
        out[tag] = [dataclasses.replace(r, origin=f"synth:{cycle}:{tag}", parents=tuple(parents.get(tag, ())))
                    for r in records]
    return out


@dataclass
class HardSet:
    records: list[Record]  # mined, then synthesised; unique ids
    counts: dict[str, int]  # tag -> samples of the mining pool carrying it
    mined: dict[str, int]  # tag -> mined records
    synthesised: dict[str, int]  # tag -> synthetic records
    unfixable: dict[str, int] = field(default_factory=dict)  # tag -> count, for tags data cannot fix

    def summary(self) -> dict[str, Any]:
        return {"size": len(self.records), "counts": self.counts, "mined": self.mined,
                "synthesised": self.synthesised, "unfixable": self.unfixable}


def build_hard_set(samples: Sequence[dict], pool: Sequence[Record], cycle: int, mine_per_tag: int, synth_per_tag: int,
                   data_seed: int, cache_dir: Path, noise: str) -> HardSet:
    """The next cycle's hard set from one cycle's mining-pool evaluation: mined failures plus targeted synthesis."""
    counts = tag_counts(samples)
    mined = mine_failures(samples, pool, mine_per_tag, cycle)
    failing = {tag: sorted({s["domain"] for s in samples if tag in s.get("tags", ())})
               for tag in FOCUS_OF_TAG if counts[tag] > 0}
    # A synthetic record's parents: the mined records whose samples carry its tag (mined under that tag or an earlier one).
    mined_ids = {r.id for records in mined.values() for r in records}
    parents = {tag: [str(s["id"]) for s in samples if tag in s.get("tags", ()) and s["id"] in mined_ids] for tag in failing}
    synth = synthesize(failing, synth_per_tag, cycle, data_seed, cache_dir, noise, parents=parents)
    records = [r for tag in FOCUS_OF_TAG for r in mined.get(tag, [])] + [r for tag in FOCUS_OF_TAG for r in synth.get(tag, [])]
    return HardSet(
        records=records,
        counts=counts,
        mined={t: len(v) for t, v in mined.items()},
        synthesised={t: len(v) for t, v in synth.items()},
        unfixable={t: counts[t] for t in UNFIXABLE_TAGS if counts[t] > 0},
    )




def training_set(base: Sequence[Record], hard: Sequence[Record], oversample: int) -> list[Record]:
    """The base training records plus `oversample` copies of the hard set (copies 2.. get an id suffix)."""
    if oversample < 1:
        raise ValueError(f"loop.oversample={oversample}: expected 1 or more copies of the hard set")
    out = list(base)
    for k in range(oversample):
        out += [r if k == 0 else dataclasses.replace(r, id=f"{r.id}{REPEAT_MARK}{k}") for r in hard]
    return out


def origin_counts(records: Sequence[Record]) -> dict[str, int]:
    """base / mined / synth counts (the lineage kind before the first ':')."""
    c = Counter(r.origin.split(":", 1)[0] for r in records)
    return dict(sorted(c.items()))
