"""Does an answer depend on its page? The chance baseline of the content metrics (pure, no torch).

A model that ignores the image still scores: a guessed institution, a common strength or a date format matches
some targets. So each answer is also scored against the targets of other pages of the same kind (same asked and
image domain), up to PEERS of them: their mean is what the answer scores by chance, and

    margin = score against its own page's target - mean score against the other pages' targets

is the part of the score that comes from this page. A model that answers the same whatever the page has a field EM
margin of exactly 0 over a set whose groups have at most PEERS + 1 pages (each target is then one page's own and
every other page's peer); a model that reads has a margin near its score. `randomization_test` asks whether the observed mean beats chance: each page's
own score is, if the answer does not depend on the page, one more draw from its peers' scores.

Written by hand: a within-group permutation baseline over structured field scores is no library's function; the
field scoring itself is vlmsweep.evaluate.fields, as for the page's own target.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vlmsweep.evaluate import fields
from vlmsweep.evaluate.metrics import annotated
from vlmsweep.prompts import schema_name

PEERS = 32  # other pages an answer is scored against: 32 x n pair scores (0.6 ms each), whatever the set's size
DRAWS = 999  # randomizations of the test: p has a resolution of 1/1000
LEVEL = 0.05  # p below this: the answers depend on the page
# Metrics with a chance baseline: the per-sample score of each, and the name of its margin in metrics.json.
MARGINS = {"content.field_em": "content.field_em_margin", "content.digit_acc": "content.digit_acc_margin"}


def _group(sample: dict) -> tuple[str, str]:
    return sample["domain"], sample.get("image_domain") or sample["domain"]


def peers_of(samples: Sequence[dict], limit: int = PEERS) -> list[list[int]]:
    """For each sample, the indices of up to `limit` other samples of its group (asked and image domain): all of
    them in a small set, else a draw seeded by the sample's id (the same peers on every machine and rerun)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(_group(s), []).append(i)
    out = []
    for i, s in enumerate(samples):
        others = [j for j in groups[_group(s)] if j != i]
        if len(others) > limit:
            rng = np.random.default_rng(zlib.crc32(str(s["id"]).encode("utf-8")))
            others = sorted(rng.choice(others, size=limit, replace=False).tolist())
        out.append(others)
    return out


def _scores(answer: dict, target: dict, unannotated: Sequence[str], domain: str) -> dict[str, float | None]:
    pairs = fields.pair_fields(annotated(answer, unannotated), annotated(target, unannotated))
    fs = fields.score_fields(pairs, schema_name(domain))
    return {"content.field_em": fs.field_em, "content.digit_acc": fs.digit_acc}


def add_chance(samples: Sequence[dict], limit: int = PEERS) -> None:
    """Per sample with an answer object and peers: `chance` (metric -> its scores against the peers' targets, None
    where the pair has no such field) and, in `scores`, each metric's margin over the mean of those."""
    for s, peers in zip(samples, peers_of(samples, limit)):
        for name in MARGINS.values():
            s["scores"][name] = None
        if s.get("parsed") is None or not isinstance(s["parsed"], dict) or not peers:
            continue
        against = [_scores(s["parsed"], samples[j]["target"], samples[j].get("unannotated") or (), s["domain"])
                   for j in peers]
        s["chance"] = {m: [a[m] for a in against] for m in MARGINS}
        for metric, margin in MARGINS.items():
            own, chance = s["scores"].get(metric), [v for v in s["chance"][metric] if v is not None]
            if own is not None and chance:
                s["scores"][margin] = own - float(np.mean(chance))


@dataclass(frozen=True)
class ChanceTest:
    metric: str
    samples: int  # samples with their own score and at least one peer score
    observed: float  # mean score against their own targets
    chance: float  # mean of each sample's mean score against its peers' targets
    p_value: float  # share of randomizations whose mean reaches the observed one ((1 + k) / (1 + draws))
    draws: int

    @property
    def margin(self) -> float:
        return self.observed - self.chance

    @property
    def depends_on_page(self) -> bool:
        return self.p_value < LEVEL


def randomization_test(samples: Sequence[dict], metric: str = "content.field_em", draws: int = DRAWS,
                       seed: int = 0) -> ChanceTest | None:
    """One-sided Monte Carlo test that answers match their own page better than chance: each draw replaces every
    sample's own score by the score against one of its peers' targets, drawn uniformly; p = (1 + draws reaching
    the observed mean) / (1 + draws). None when no sample has both an own and a peer score."""
    own, peer_sets = [], []
    for s in samples:
        value = (s.get("scores") or {}).get(metric)
        chance = [v for v in (s.get("chance") or {}).get(metric, []) if v is not None]
        if value is not None and chance:
            own.append(value)
            peer_sets.append(np.asarray(chance, dtype=float))
    if not own:
        return None
    rng = np.random.default_rng(seed)
    observed = float(np.mean(own))
    null = np.zeros(draws)
    for peers in peer_sets:
        null += peers[rng.integers(len(peers), size=draws)]
    null /= len(own)
    reached = int(np.sum(null >= observed - 1e-12))
    return ChanceTest(metric, len(own), observed, float(np.mean([p.mean() for p in peer_sets])),
                      (1 + reached) / (1 + draws), draws)


def chance_summary(samples: Sequence[dict], metric: str = "content.field_em") -> dict | None:
    """The test as JSON (a loop's cycle.json keeps its test set's), with the set's distinct outputs."""
    t = randomization_test(samples, metric)
    if t is None:
        return None
    return {"metric": metric, "own": t.observed, "chance": t.chance, "margin": t.margin, "p_value": t.p_value,
            "samples": t.samples, "distinct_outputs": distinct_answers(samples), "pages": len(samples)}


def distinct_answers(samples: Sequence[dict]) -> int:
    """Different outputs (raw text) over the set: a model that reads writes about one per page."""
    return len({s.get("raw", "") for s in samples})


def summary_lines(samples: Sequence[dict]) -> list[str]:
    """report.md's section: the chance baseline of each metric, the test, and what it means."""
    tests = [t for t in (randomization_test(samples, m) for m in MARGINS) if t is not None]
    if not tests:
        return []
    lines = ["## Does the answer depend on the page?", "",
             f"Each answer is also scored against the targets of up to {PEERS} other pages of its domain: what it "
             "scores by chance. The margin is the part of the score that comes from its own page "
             f"({', '.join(f'`{m}`' for m in MARGINS.values())}); p is a randomization test ({DRAWS} draws). "
             f"{distinct_answers(samples)} distinct outputs for {len(samples)} pages.", "",
             "| metric | own page | other pages (chance) | margin | p | samples |", "|---|---|---|---|---|---|"]
    for t in tests:
        lines.append(f"| {t.metric} | {t.observed:.3f} | {t.chance:.3f} | {t.margin:+.3f} | {t.p_value:.3f} | {t.samples} |")
    main = tests[0]
    lines += ["", ("**The answers depend on the page**: they match their own page's target better than other pages' "
                   f"(p = {main.p_value:.3f})." if main.depends_on_page else
                   f"**The answers do not depend on the page** (p = {main.p_value:.3f}): they match other pages' "
                   "targets as well as their own, so the content metrics above are what a model that ignores the "
                   "image scores: guessing, not reading."), ""]
    return lines
