"""The `loss` axis: exactly the answer and its <|im_end|> are supervised, verified on every batch, through a
training template proven token-identical to the checkpoint's own."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

from vlmsweep import prompts
from vlmsweep.data import Record
from vlmsweep.model import release
from vlmsweep.train.template import TRAINING_TEMPLATES, TemplateMismatch, has_generation_markers
from vlmsweep.train.collator import IGNORE, Collator, MaskError, masked_lm_loss
from vlmsweep.train.trainer import check_lengths

TARGET = {"patient_name": "홍길동", "patient_id": "12345", "medications": [{"name": "Aspirin", "strength": "100 mg"}]}


@pytest.fixture(scope="module")
def processor(tiny_path):
    return AutoProcessor.from_pretrained(tiny_path)


def record(tmp_path, i=0, target=TARGET, size=(224, 224)) -> Record:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((10, 10), f"ID {i}", fill="black")
    path = tmp_path / f"{i}.png"
    image.save(path)
    return Record(id=f"s{i}", image=path, domain="prescription_ko", target=target, image_domain="prescription_ko")


def collator(processor, assistant_only=True, max_seq_len=2048) -> Collator:
    return Collator(processor, domain_tag=False, assistant_only=assistant_only, min_pixels=4 * 784,
                    max_pixels=64 * 784, max_seq_len=max_seq_len)


def test_exactly_answer_and_im_end_are_supervised(processor, tmp_path):
    enc = collator(processor).encode(record(tmp_path))
    supervised = enc.labels[enc.labels != IGNORE].tolist()
    answer_ids = processor.tokenizer(prompts.serialize(TARGET))["input_ids"]
    assert supervised == answer_ids + [processor.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    # ... and they are the contiguous span right after "<|im_start|>assistant\n"
    ids = enc.input_ids.tolist()
    start = len(ids) - len(supervised) - 1  # the template's trailing "\n" follows <|im_end|>
    assert ids[start:start + len(supervised)] == supervised
    assert processor.tokenizer.decode(ids[start - 3:start]) == "<|im_start|>assistant\n"
    assert processor.tokenizer.decode(ids[-1:]) == "\n" and enc.labels[-1] == IGNORE


def test_full_loss_supervises_prompt_text_but_never_image_placeholders(processor, tmp_path):
    enc = collator(processor, assistant_only=False).encode(record(tmp_path))
    image_id = processor.image_token_id
    assert (enc.input_ids == image_id).sum() > 0
    assert not ((enc.labels == image_id).any())
    assert enc.supervised == int((enc.input_ids != image_id).sum())


def test_batch_keeps_only_positions_before_targets_and_loss_matches_full_logits(processor, tiny_path, tmp_path):
    col = collator(processor)
    recs = [record(tmp_path, 0), record(tmp_path, 1, target={**TARGET, "patient_name": None}, size=(280, 200))]
    batch = col(recs)
    keep = batch["logits_to_keep"]
    assert keep.sum(dim=1).min() > 0 and len(batch["labels"]) == int(keep.sum())
    model = Qwen2VLForConditionalGeneration.from_pretrained(tiny_path)
    torch.manual_seed(0)
    with torch.no_grad():
        sliced = masked_lm_loss(model(**{k: v for k, v in batch.items() if k != "labels"}), batch["labels"])
        full = model(**{k: v for k, v in batch.items() if k not in ("labels", "logits_to_keep")}).logits
    # reference: the usual shifted cross-entropy over all positions with -100 elsewhere
    labels = torch.full(batch["input_ids"].shape, IGNORE)
    labels[:, :-1][keep[:, :-1]] = batch["labels"]
    ref = torch.nn.functional.cross_entropy(full.float().reshape(-1, full.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)
    assert torch.allclose(sliced, ref, atol=1e-4)
    assert 0 < col.supervised_fraction() < 0.5


def test_release_template_trains_through_the_proven_training_template(processor, tmp_path):
    assert not has_generation_markers(processor.chat_template)  # the replica carries the release's template
    col = collator(processor)
    assert col.template == TRAINING_TEMPLATES["qwen2_vl"] and col.template_check.source == "training:qwen2_vl"
    col.encode(record(tmp_path, 0))
    col.encode(record(tmp_path, 1, target={**TARGET, "patient_name": None}))
    assert col.template_check.checked == 2
    assert processor.chat_template == release.CHAT_TEMPLATE  # evaluation keeps the checkpoint's template


def test_a_training_template_that_renders_other_tokens_fails_naming_the_position(processor, tmp_path, monkeypatch):
    changed = TRAINING_TEMPLATES["qwen2_vl"].replace("You are a helpful assistant.", "You are a helpful assistant!")
    monkeypatch.setitem(TRAINING_TEMPLATES, "qwen2_vl", changed)
    tok = processor.tokenizer
    same = tok("<|im_start|>system\nYou are a helpful assistant", add_special_tokens=False)["input_ids"]
    with pytest.raises(TemplateMismatch, match=rf"sample s0: .* first at position {len(same)}: training .*!.* vs checkpoint .*\."):
        collator(processor).encode(record(tmp_path))


def test_a_checkpoint_template_with_markers_is_used_as_it_is(tiny_path, tmp_path):
    processor = AutoProcessor.from_pretrained(tiny_path)
    processor.chat_template = TRAINING_TEMPLATES["qwen2_vl"]
    col = collator(processor)
    assert col.template_check.source == "checkpoint"
    assert col.encode(record(tmp_path)).supervised > 0 and col.template_check.checked == 0


def test_template_whose_markers_cover_nothing_is_a_hard_error(tiny_path, tmp_path, monkeypatch):
    processor = AutoProcessor.from_pretrained(tiny_path)
    empty = TRAINING_TEMPLATES["qwen2_vl"].replace("{% generation %}", "{% generation %}{% endgeneration %}", 1)
    empty = empty.replace("<|im_end|>{% endgeneration %}", "<|im_end|>")
    monkeypatch.setitem(TRAINING_TEMPLATES, "qwen2_vl", empty)
    with pytest.raises(MaskError, match="s0.*no assistant token"):
        collator(processor).encode(record(tmp_path))


def test_answer_that_would_be_cut_is_an_error_or_a_counted_skip(processor, tmp_path):
    col = collator(processor, max_seq_len=60)
    recs = [record(tmp_path, 0), record(tmp_path, 1)]
    with pytest.raises(MaskError, match="s0.*exceed train.max_seq_len=60"):
        check_lengths(recs, col, "error")
    with pytest.raises(MaskError, match="no training sample fits"):
        check_lengths(recs, col, "skip")
    long_target = {**TARGET, "patient_name": "홍길동 " * 30}
    fits = collator(processor, max_seq_len=len(col.encode(recs[0]).input_ids) + 2)
    result = check_lengths([record(tmp_path, 0), record(tmp_path, 2, target=long_target)], fits, "skip")
    assert [r.id for r in result.kept] == ["s0"] and [i for i, _ in result.skipped] == ["s2"]
