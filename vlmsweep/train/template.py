"""Training chat templates: the checkpoint's template with `{% generation %}` markers, proven token-identical.

A released Qwen2-VL / Qwen2.5-VL template has no generation markers, so the assistant-token mask that
the loss needs comes back all zeros. Training then renders with the family's training template below,
and every sample it encodes is first rendered with the checkpoint's own template too: the token ids
must be identical, and the checkpoint's generation prompt must be a prefix of them. The checkpoint's
template stays on the processor: evaluation, inference and the saved adapter folder use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CONTENT = (
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
)

# The release's Qwen2-VL template (vlmsweep.model.release.CHAT_TEMPLATE) with the assistant turn's
# content and its <|im_end|> inside {% generation %}. The marker cannot open in one {% if %} and close
# in another (jinja), so the message body is branched on the role as a whole; `{{ '\n' }}` because
# transformers renders with trim_blocks, which would eat a newline written after a block tag.
QWEN2_VL_TRAINING_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}" + _CONTENT + "<|im_end|>{% endgeneration %}{{ '\\n' }}"
    "{% else %}" + _CONTENT + "<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2.5-VL's released template renders the same text for image + text turns; the identity check
# proves it for each run's samples rather than trusting this line.
TRAINING_TEMPLATES = {"qwen2_vl": QWEN2_VL_TRAINING_TEMPLATE, "qwen2_5_vl": QWEN2_VL_TRAINING_TEMPLATE}

_MARKER = re.compile(r"{%-?\s*generation\s*-?%}")


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and _MARKER.search(template) is not None


class TemplateMismatch(ValueError):
    """The training template would train on other tokens than the checkpoint's template produces."""


@dataclass
class TemplateCheck:
    source: str  # "checkpoint" (it has markers) or "training:<family>"
    checked: int = 0  # samples proven token-identical so far

    def as_dict(self) -> dict:
        return {"source": self.source, "identity_checked": self.checked}


def training_template(checkpoint_template: str | None, family: str) -> tuple[str, TemplateCheck]:
    """The template that training renders with, and the record of its check."""
    if has_generation_markers(checkpoint_template):
        return checkpoint_template, TemplateCheck("checkpoint")  # type: ignore[return-value]
    if family not in TRAINING_TEMPLATES:
        raise ValueError(
            f"model.family={family}: the checkpoint's chat template has no {{% generation %}} markers and there is "
            f"no training template for this family (known: {sorted(TRAINING_TEMPLATES)})"
        )
    return TRAINING_TEMPLATES[family], TemplateCheck(f"training:{family}")


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def check_identity(tokenizer, sample_id: str, training_ids: list[int], checkpoint_ids: list[int],
                   prompt_ids: list[int], what: str) -> None:
    """`training_ids` must equal `checkpoint_ids`, and `prompt_ids` (the checkpoint's generation
    prompt, what evaluation feeds) must be their prefix. Positions count text tokens, image placeholder
    unexpanded."""

    def show(ids: list[int], at: int) -> str:
        return repr(tokenizer.decode(ids[max(0, at - 3) : at + 1])) + (f" (id {ids[at]})" if at < len(ids) else " (end)")

    at = first_difference(training_ids, checkpoint_ids)
    if at is not None:
        raise TemplateMismatch(
            f"sample {sample_id}: {what} renders other token ids than the checkpoint's chat template, first at "
            f"position {at}: training {show(training_ids, at)} vs checkpoint {show(checkpoint_ids, at)}. Training "
            "would learn a format that evaluation never shows the model; fix the training template "
            "(vlmsweep.train.template) or give the checkpoint a template with {% generation %} markers"
        )
    at = first_difference(prompt_ids, training_ids[: len(prompt_ids)])
    if at is not None:
        raise TemplateMismatch(
            f"sample {sample_id}: the checkpoint's generation prompt differs from the trained prompt at position "
            f"{at}: prompt {show(prompt_ids, at)} vs trained {show(training_ids, at)}"
        )
