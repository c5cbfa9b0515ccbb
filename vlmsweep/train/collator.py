"""The `loss` axis: chat template -> input ids, labels and their verification, one batch at a time.

What a batch holds (all tensors):
  input_ids, attention_mask, mm_token_type_ids   (batch, seq), right-padded
  pixel_values, image_grid_thw                    the images, concatenated as Qwen2-VL expects
  logits_to_keep                                  (batch, seq) bool: positions whose next token is
                                                  supervised; the model computes logits only there
                                                  (the 151k-vocab output layer dominates a step)
  labels                                          (n_supervised,) the next tokens at those positions
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from vlmsweep import prompts
from vlmsweep.config import Config, pixel_budget
from vlmsweep.data import Record, load_image
from vlmsweep.train.template import check_identity, training_template

log = logging.getLogger(__name__)
IGNORE = -100


class MaskError(ValueError):
    """A sample the loss would silently skip or half-train: always a hard error."""


@dataclass
class Encoded:
    id: str
    input_ids: torch.Tensor  # (seq,)
    labels: torch.Tensor  # (seq,) target of each position itself (-100 = not supervised)
    mm_token_type_ids: torch.Tensor
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor

    @property
    def supervised(self) -> int:
        return int((self.labels != IGNORE).sum())


@dataclass
class Collator:
    processor: Any
    domain_tag: bool
    assistant_only: bool  # False: loss on every text token (reproduces instruction echoing)
    min_pixels: int
    max_pixels: int
    max_seq_len: int
    family: str = "qwen2_vl"  # model.family: picks the training template when the checkpoint's has no markers
    stats: dict[str, float] = field(default_factory=lambda: {"supervised": 0, "tokens": 0, "samples": 0})

    def __post_init__(self) -> None:
        # The processor keeps the checkpoint's template (evaluation, inference, the adapter folder);
        # training renders with `self.template`, proven token-identical to it on every sample.
        self.template, self.template_check = training_template(self.processor.chat_template, self.family)

    def check_template(self, sample_id: str, conversation: list[dict]) -> None:
        """The training template's ids equal the checkpoint template's, whose generation prompt prefixes them."""
        if self.template_check.source == "checkpoint":
            return
        render = self.processor.apply_chat_template
        ids = lambda text: self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        check_identity(
            self.processor.tokenizer,
            sample_id,
            training_ids=ids(render(conversation, tokenize=False, chat_template=self.template)),
            checkpoint_ids=ids(render(conversation, tokenize=False)),
            prompt_ids=ids(render(conversation[:-1], tokenize=False, add_generation_prompt=True)),
            what=f"the training template ({self.template_check.source})",
        )
        self.template_check.checked += 1

    def encode(self, record: Record) -> Encoded:
        tok = self.processor.tokenizer
        image = load_image(record.image, max_pixels=4 * self.max_pixels)
        conversation = prompts.messages(record.domain, self.domain_tag, answer=record.target, hint=record.hint)
        self.check_template(record.id, conversation)
        out = self.processor.apply_chat_template(
            [conversation],
            chat_template=self.template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            return_tensors="pt",
            processor_kwargs={
                "images": [[image]],
                "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            },
        )
        ids = out["input_ids"][0]
        answer = out["assistant_masks"][0].bool()
        if not answer.any():
            raise MaskError(
                f"sample {record.id}: the chat template marked no assistant token; the template needs "
                "{% generation %} ... {% endgeneration %} around the assistant answer and its <|im_end|>"
            )
        last = int(answer.nonzero().max())
        if int(ids[last]) != tok.convert_tokens_to_ids("<|im_end|>"):
            raise MaskError(f"sample {record.id}: the assistant's <|im_end|> is not supervised")
        if self.assistant_only:
            keep = answer
        else:  # every text token: the image placeholders are inputs, never targets
            keep = ids != self.processor.image_token_id
        labels = torch.where(keep, ids, torch.full_like(ids, IGNORE))
        return Encoded(record.id, ids, labels, out["mm_token_type_ids"][0], out["pixel_values"], out["image_grid_thw"])

    def check_length(self, encoded: Encoded) -> str | None:
        """None if the sample fits; else why not. A cut answer would be trained on half."""
        if len(encoded.input_ids) > self.max_seq_len:
            return (
                f"sample {encoded.id}: {len(encoded.input_ids)} tokens exceed train.max_seq_len="
                f"{self.max_seq_len}; raise it or lower max_pixels (the answer would be cut)"
            )
        return None

    def __call__(self, records: list[Record]) -> dict[str, torch.Tensor]:
        encoded = [self.encode(r) for r in records]
        for e in encoded:
            if (reason := self.check_length(e)) is not None:
                raise MaskError(reason)
        pad_id = self.processor.tokenizer.pad_token_id
        length = max(len(e.input_ids) for e in encoded)
        batch = len(encoded)
        input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
        attention = torch.zeros((batch, length), dtype=torch.long)
        mm_types = torch.zeros((batch, length), dtype=encoded[0].mm_token_type_ids.dtype)
        labels = torch.full((batch, length), IGNORE, dtype=torch.long)
        for i, e in enumerate(encoded):
            n = len(e.input_ids)
            input_ids[i, :n] = e.input_ids
            attention[i, :n] = 1
            mm_types[i, :n] = e.mm_token_type_ids
            labels[i, :n] = e.labels
        # Position t predicts token t+1: keep the logits of every position whose successor is a target.
        keep = torch.zeros((batch, length), dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != IGNORE
        per_sample = keep.sum(dim=1)
        if (per_sample == 0).any():
            bad = [encoded[i].id for i in (per_sample == 0).nonzero().flatten().tolist()]
            raise MaskError(f"samples {bad}: no supervised token in the batch; the loss would be silently zero")
        self.stats["supervised"] += int(per_sample.sum())
        self.stats["tokens"] += int(attention.sum())
        self.stats["samples"] += batch
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "mm_token_type_ids": mm_types,
            "pixel_values": torch.cat([e.pixel_values for e in encoded]),
            "image_grid_thw": torch.cat([e.image_grid_thw for e in encoded]),
            "logits_to_keep": keep,
            "labels": labels[:, 1:][keep[:, :-1]],
        }

    def supervised_fraction(self) -> float:
        return self.stats["supervised"] / max(1, self.stats["tokens"])


def masked_lm_loss(outputs, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None):
    """Cross-entropy over the kept positions (logits arrive flattened to (n_kept, vocab))."""
    logits = outputs.logits.float().reshape(-1, outputs.logits.shape[-1])
    total = torch.nn.functional.cross_entropy(logits, labels.to(logits.device), reduction="sum")
    denom = num_items_in_batch if num_items_in_batch is not None else labels.numel()
    return total / denom


def make_collator(cfg: Config, processor) -> Collator:
    """The collator of a run's config: its prompt, loss mask, pixel budget and sequence limit."""
    min_pixels, max_pixels = pixel_budget(cfg)
    return Collator(
        processor=processor,
        domain_tag=cfg.domain_tag.in_prompt,
        assistant_only=cfg.loss.assistant_only,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        max_seq_len=cfg.train.max_seq_len,
        family=cfg.model.family,
    )
