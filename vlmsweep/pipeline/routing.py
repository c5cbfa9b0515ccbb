"""Which per-domain adapter answers a page: the domain grouping, and the router that classifies an unknown page.

The router is the base model itself (adapters off), asked "what kind of document is this?" with the group names
as the only allowed answers: each name (plus the end-of-turn token) is scored by its log-probability after the
image and question, and the most probable complete answer wins. That is constrained decoding over the group
names, done exactly (every whole answer scored) instead of token by token. Chosen over a classifier on pooled
vision features because it needs no training data, no saved weights and no second model: an Instruct checkpoint
tells a prescription from a receipt zero-shot, predict can route with nothing but the adapters folder, and one
forward pass per page (no generation) costs little beside the extraction itself. The embedded tiny model is
random, so its routing accuracy is chance-level by construction; a real checkpoint's is what the metric is for.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from vlmsweep.files import write_json

log = logging.getLogger(__name__)

ROUTING_FILE = "routing.json"  # in a per-domain run's adapters/ folder: groups, their domains and the question
QUESTION = "What kind of document is this? Answer with one word: {choices}."


def domain_groups(groups: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """domain -> its group (adapters.groups, checked in vlmsweep.config: each domain in one group)."""
    return {domain: group for group, domains in groups.items() for domain in domains}


def group_of(domain: str, groups: Mapping[str, Sequence[str]], where: str = "") -> str:
    found = domain_groups(groups).get(domain)
    if found is None:
        raise ValueError(
            f"{where + ': ' if where else ''}domain {domain!r} is in no adapter group "
            f"({', '.join(f'{g}: {list(d)}' for g, d in groups.items())}); add it to one, e.g. "
            f"adapters.groups.{next(iter(groups), 'GROUP')}=[...,{domain}]"
        )
    return found


def split_by_group(records: Sequence[Any], groups: Mapping[str, Sequence[str]], what: str) -> dict[str, list]:
    """Records per group, in group order; a record whose domain is in no group is an error naming it, and so is a
    group with no record (its adapter would be trained on nothing)."""
    out: dict[str, list] = {g: [] for g in groups}
    for r in records:
        out[group_of(r.domain, groups, f"{what} record {r.id!r}")].append(r)
    empty = [g for g, rs in out.items() if not rs]
    if empty:
        present = sorted({r.domain for r in records})
        raise ValueError(
            f"adapters=per_domain: the {what} set has no sample of group(s) {', '.join(empty)} "
            f"({'; '.join(f'{g}: {list(groups[g])}' for g in empty)}); it holds {present}. Use a data_mix (or a "
            "manifest) with every group, or adapters.groups without the empty one(s)"
        )
    return out


def write_routing(folder: Path, groups: Mapping[str, Sequence[str]]) -> None:
    """adapters/routing.json: which subfolder answers which domains, and the router's question."""
    info = {"groups": {g: list(d) for g, d in groups.items()}, "question": QUESTION,
            "adapters": {g: g for g in groups}}  # group -> its adapter folder, relative to this one
    write_json(folder / ROUTING_FILE, info)


def read_routing(folder: Path) -> dict | None:
    path = Path(folder) / ROUTING_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@dataclass(frozen=True)
class Route:
    group: str  # the most probable group name
    scores: dict[str, float]  # group -> log-probability of the whole answer (name + end of turn)


def question(groups: Sequence[str]) -> str:
    return QUESTION.format(choices=", ".join(groups))


def _base_only(model):
    """The model with its LoRA adapters switched off (a peft model), or as it is."""
    import contextlib

    disable = getattr(model, "disable_adapter", None)
    return disable() if callable(disable) and hasattr(model, "peft_config") else contextlib.nullcontext()


def route_images(model, processor, images: Sequence[Any], groups: Sequence[str], *, min_pixels: int,
                 max_pixels: int) -> list[Route]:
    """One Route per image (PIL images ready for the processor): one forward pass per image, its G candidate
    answers as G left-padded rows, logits kept only at the answer positions."""
    import torch

    tok = processor.tokenizer
    groups = list(groups)
    end = tok.eos_token or "<|im_end|>"
    answers = [tok(g + end, add_special_tokens=False)["input_ids"] for g in groups]
    keep = max(len(a) for a in answers) + 1
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question(groups)}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    size = {"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)}
    device = next(model.parameters()).device
    routes = []
    with _base_only(model), torch.inference_mode():
        for image in images:
            inputs = processor(text=[prompt + g + end for g in groups], images=[image] * len(groups), padding=True,
                               padding_side="left", return_tensors="pt", size=size).to(device)
            logits = model(**inputs, logits_to_keep=keep).logits.float()  # (G, keep, vocab): positions L-keep..L-1
            logp = torch.log_softmax(logits, dim=-1)
            ids = inputs["input_ids"]
            scores = {}
            for row, (g, ans) in enumerate(zip(groups, answers)):
                k = len(ans)
                if ids[row, -k:].tolist() != ans:  # the answer must tokenize the same after the prompt
                    raise RuntimeError(f"router: the answer {g!r} tokenizes differently after the chat prompt")
                # token at position L-k+j is predicted by the logits at L-k+j-1, i.e. row index keep-k-1+j
                picked = logp[row, keep - k - 1: keep - 1].gather(-1, ids[row, -k:].unsqueeze(-1))
                scores[g] = float(picked.sum())
            routes.append(Route(group=max(groups, key=lambda g: scores[g]), scores=scores))
    return routes
