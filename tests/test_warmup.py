"""The Instruct warm-up (vlmsweep.recipes.warmup): its seed streams, its restricted output layer, a short build."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vlmsweep.data.mix import sample_seed
from vlmsweep.data.record import SPLITS
from vlmsweep.recipes import warmup
from vlmsweep.model.cache import MANIFEST
from vlmsweep.recipes.warmup import (
    HELDOUT_STREAM,
    TRAIN_STREAM,
    AnswerVocabCollator,
    AnswerVocabHead,
    CompactEmbedding,
    Recipe,
    vocabularies,
)

# A build of seconds: a handful of documents, a few steps, a short decoding budget.
SHORT = Recipe(documents=6, steps=4, full_vocab_steps=0, batch_size=2, lr=1e-2, heldout=2, max_new_tokens=8, short=0.3)
EMBED = "model.embed_tokens.weight"  # the release's (4.x) name of the tied embedding in model.safetensors


def test_warmup_seed_streams_are_disjoint_from_every_run_stream():
    warm = {sample_seed(0, s, i) for s in (TRAIN_STREAM, HELDOUT_STREAM) for i in range(2000)}
    runs = {sample_seed(0, s, i) for s in (*SPLITS, "targeted/digits", "targeted/sparse") for i in range(2000)}
    assert len(warm) == 4000 and not warm & runs


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    return warmup.documents(TRAIN_STREAM, 4, tmp_path_factory.mktemp("warm-docs"), SHORT)


def _collator(tiny_path):
    from vlmsweep.model.load import load_processor
    from vlmsweep.train.collator import make_collator

    return make_collator(warmup.warm_config(SHORT, tiny_path), load_processor(str(tiny_path)))


def test_answer_vocab_head_is_the_full_head_on_its_rows(tiny_path, docs):
    from transformers import Qwen2VLForConditionalGeneration

    model = Qwen2VLForConditionalGeneration.from_pretrained(str(tiny_path), dtype=torch.float32)
    collator = _collator(tiny_path)
    vocab, _ = vocabularies(docs, collator)
    im_end = collator.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in vocab.tolist() and 50 < len(vocab) < 5000  # JSON punctuation, keys, values, <|im_end|>

    head = AnswerVocabHead(model.get_input_embeddings(), vocab)
    hidden = torch.randn(3, model.config.text_config.hidden_size)
    torch.testing.assert_close(head(hidden), model.lm_head(hidden)[:, vocab])

    position = torch.full((model.config.text_config.vocab_size,), -1, dtype=torch.long)
    position[vocab] = torch.arange(len(vocab))
    plain = collator(docs[:2])
    restricted = AnswerVocabCollator.like(collator, position=position)(docs[:2])
    assert torch.equal(vocab[restricted["labels"]], plain["labels"])  # same targets, renumbered

    position[im_end] = -1  # a supervised token outside the vocabulary is an error, never a wrong label
    with pytest.raises(ValueError, match="answer vocabulary"):
        AnswerVocabCollator.like(collator, position=position)(docs[:2])


def test_compact_embedding_is_the_full_one_on_its_rows_and_writes_back_only_them():
    torch.manual_seed(0)
    full = torch.nn.Embedding(50, 4)
    before = full.weight.detach().clone()
    ids = torch.tensor([3, 7, 20])
    compact = CompactEmbedding(full, ids)
    x = torch.tensor([[7, 3, 20, 7]])
    torch.testing.assert_close(compact(x), full(x))
    with pytest.raises(ValueError, match="compact embedding"):  # a token outside its rows is an error, never row 0
        compact(torch.tensor([[5]]))
    with torch.no_grad():
        compact.weight.add_(1.0)  # as training would move them
    compact.write_back(full)
    moved = (full.weight.detach() != before).any(dim=1)
    assert moved.nonzero().flatten().tolist() == [3, 7, 20]
    torch.testing.assert_close(full.weight.detach()[ids], before[ids] + 1.0)


def test_warm_up_mix_has_its_shares_and_plain_held_out_documents():
    jobs = warmup._jobs(TRAIN_STREAM, 400, 0, hard_negatives=0.1, sparse=0.25, short=0.5)
    focus = [j[4] for j in jobs[40:]]
    assert all(j[2] != j[3] and j[3] == "receipt" for j in jobs[:40])  # receipts asked as prescriptions
    assert 0.17 < focus.count("sparse") / 360 < 0.33 and 0.42 < focus.count("short") / 360 < 0.58
    assert {j[4] for j in warmup._jobs(HELDOUT_STREAM, 40, 0, 0.1, 0.0, 0.0)} == {None}


class _Hinter:
    """Stands in for vlmsweep.ocr.hint.Hinter: attach() records each page's size as the engine would see it; count()
    counts characters, so a budget of `budget` cuts a hint after that many characters' worth of lines."""

    def __init__(self, budget: int = 10_000):
        self.seen, self.budget = {}, budget

    def count(self, text: str) -> int:
        return len(text)

    def attach(self, records):
        from dataclasses import replace

        from PIL import Image

        for r in records:
            with Image.open(r.image) as im:
                self.seen[r.id] = im.width * im.height
        return [replace(r, hint=f"text of {r.id}") for r in records]


def test_a_reader_recipe_hints_each_page_before_it_is_scaled_and_keeps_other_keys(tmp_path):
    """Recipe.ocr_hint: the hint reads the full page (the training page is scaled to its budget afterwards); a recipe
    without a hint has the cache key it had before the option existed."""
    from PIL import Image

    assert set(warmup.Recipe().key()) == set(SHORT.key()) and not {"ocr_hint", "hint_source", "unhinted"} & set(Recipe().key())
    assert warmup.Recipe(ocr_hint="tesseract").key()["ocr_hint"] == "tesseract"
    assert "hint_errors" not in warmup.Recipe(ocr_hint="tesseract").key() and "hint_errors" in warmup.READER.key()

    from vlmsweep.cli.warmup import main

    for refused_args in (["--ocr-hint", "tesseract", "--ship"], ["--ocr-hint", "tesseract", "--reader"]):
        with pytest.raises(SystemExit) as refused:  # a compared recipe is never shipped
            main(refused_args)
        assert refused.value.code == 2
    card = warmup.card(warmup.Recipe(ocr_hint="tesseract"), {"heldout.patient_id_em.in_hint": 0.5,
                                                              "heldout.patient_id_pages.in_hint": 8.0}, "tiny-x")
    assert "`ocr_hint=tesseract`" in card and "patient_id 0.50 on 8 page(s)" in card and "It does not read" not in card
    assert "own text" in warmup.card(warmup.READER, {}, "tiny-x") and "own text" not in card
    recipe = warmup.Recipe(ocr_hint="tesseract", visual_tokens=(16,))
    hinter = _Hinter()
    docs = warmup.documents(TRAIN_STREAM, 3, tmp_path, recipe, hinter)
    assert [d.hint for d in docs] == [f"text of {d.id}" for d in docs]
    for d in docs:
        with Image.open(d.image) as im:  # scaled to 16 visual tokens (16 x 784 pixels), after the hint read it whole
            assert im.width * im.height <= 2 * 16 * 784 < hinter.seen[d.id] / 10


def test_layout_hints_are_each_pages_own_text_with_errors_cut_to_the_budget(tmp_path):
    """hint_source=layout: a training page's hint is its drawn text with OCR-like errors, the engine never reads it,
    a share of pages gets none; held-out pages are read by the engine."""
    from vlmsweep.data.build import page_text

    recipe = warmup.Recipe(ocr_hint="tesseract", hint_source="layout", hint_errors=0.0, unhinted=0.3, visual_tokens=(16,))
    hinter = _Hinter(budget=400)
    docs = warmup.documents(TRAIN_STREAM, 20, tmp_path / "train", recipe, hinter)
    assert hinter.seen == {}  # no page went to the engine
    hinted = [d for d in docs if d.hint is not None]
    assert 2 <= len(docs) - len(hinted) <= 12  # about 30% asked without a hint
    focus = {j[0]: j[4] for j in warmup._jobs(TRAIN_STREAM, 20, 0, recipe.hard_negatives, recipe.sparse, recipe.short)}
    for d in hinted:
        own = page_text(d.seed, d.domain, d.image_domain, focus[d.id], recipe.noise)[1]
        assert len(d.hint) <= 400 and own.startswith(d.hint) and own[len(d.hint):len(d.hint) + 1] in ("", "\n")
    assert any(len(d.hint) < 300 for d in hinted) and any(len(d.hint) > 300 for d in hinted)  # short pages whole, long ones cut
    held = warmup.documents(HELDOUT_STREAM, 2, tmp_path / "held", recipe, hinter)
    assert [d.hint for d in held] == [f"text of {d.id}" for d in held] and len(hinter.seen) == 2


def test_ocr_errors_change_about_their_rate_of_characters_as_ocr_does():
    import random

    text = "Patient ID 920208-2******\n" * 200
    noisy = warmup.ocr_errors(text, 0.05, random.Random(0))
    assert noisy.count("\n") == text.count("\n")  # line breaks are never touched
    from rapidfuzz.distance import Levenshtein

    assert 0.03 < Levenshtein.distance(text, noisy) / len(text) < 0.08
    assert "8" in noisy.replace("Patient ID 920208-2******", "")  # swaps: 0 -> 6, 2 dropped, 9 dropped, ...
    assert warmup.ocr_errors(text, 0.0, random.Random(0)) == text
    assert set(noisy) <= set(text) | set(warmup.CONFUSED.values())


@pytest.fixture(scope="module")
def warmed(cache_dir, tiny_path):
    return warmup.ensure_built_model(cache_dir, SHORT, raw_dir=tiny_path)


def test_short_warm_up_trains_answer_rows_only_and_keeps_the_release_layout(warmed, tiny_path):
    figures = json.loads((warmed / "warmup.json").read_text())["figures"]
    assert figures["warmup.answer_vocab_loss"] < figures["warmup.first_loss"]
    for name in ("strict_parse_rate", "key_set_rate", "salvage_rate"):
        assert 0.0 <= figures[f"heldout.contract.{name}"] <= 1.0

    raw, warm = load_file(tiny_path / "model.safetensors"), load_file(warmed / "model.safetensors")
    assert raw.keys() == warm.keys()  # same parameter names: loads wherever the replica loads
    vocab = torch.tensor(json.loads((warmed / "warmup.json").read_text())["answer_vocab"])
    changed = (raw[EMBED] != warm[EMBED]).any(dim=1)
    assert changed[vocab].float().mean() > 0.9  # the answer tokens' rows were trained
    # With no full-vocabulary step only the answer and prompt tokens' rows move; the rest keep their values.
    assert changed.sum() < 0.02 * len(changed)
    trained = [k for k in raw if k != EMBED and not torch.equal(raw[k], warm[k])]
    assert any(k.startswith("model.layers.") for k in trained) and any("visual" in k for k in trained)

    raw_files = {p.name for p in tiny_path.iterdir()} - {MANIFEST}  # a raw replica cached before files.json has none
    warm_files = {p.name for p in warmed.iterdir()}
    assert raw_files <= warm_files and warm_files - raw_files == {"README.md", "warmup.json", MANIFEST}


def test_the_same_recipe_builds_the_same_bytes(warmed, tiny_path, tmp_path):
    """A second build of the short recipe, in this process and after other tests changed torch's RNG and thread
    count, writes the cached build's weights byte for byte; another seed does not."""
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        warmup.warm(tiny_path, tmp_path / "again", SHORT)
        assert torch.get_num_threads() == 1 and not torch.are_deterministic_algorithms_enabled()  # restored
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (warmed / "model.safetensors").read_bytes()
    warmup.warm(tiny_path, tmp_path / "seed1", Recipe(**{**SHORT.__dict__, "seed": 1}))
    assert (tmp_path / "seed1" / "model.safetensors").read_bytes() != (warmed / "model.safetensors").read_bytes()
    recorded = json.loads((warmed / "warmup.json").read_text())
    assert recorded["recipe"]["threads"] == SHORT.threads and "cores" in recorded["machine"]


def test_a_build_packs_into_shipped_files_that_assemble_to_its_tensors(warmed, tiny_path, tmp_path):
    """`--ship`'s packing of a short build: every tensor but the embedding comes back as built, the embedding rows of
    the inputs too, and every other row is one vector; the release's files are the raw replica's. A build that
    recorded no input vocabulary (before this version) gets the same rows from its recipe's documents."""
    from vlmsweep.model import shipped

    rows = warmup.input_rows(warmed, SHORT)
    figures = shipped.pack(warmed, rows, tmp_path / "shipped")
    assert figures["shipped.rows"] == len(rows) and figures["shipped.mib"] < 5
    folder = shipped.assemble(tmp_path / "model", tmp_path / "shipped")
    build, again = load_file(warmed / "model.safetensors"), load_file(folder / "model.safetensors")
    assert build.keys() == again.keys()
    assert all(torch.equal(build[k], again[k]) for k in build if k != EMBED)
    assert torch.equal(again[EMBED][rows], build[EMBED][rows])
    unused = torch.ones(len(build[EMBED]), dtype=torch.bool)
    unused[rows] = False
    assert (again[EMBED][unused] == again[EMBED][unused][0]).all() and not torch.equal(again[EMBED], build[EMBED])
    for name in {p.name for p in tiny_path.iterdir()} - {"model.safetensors", MANIFEST}:
        assert (folder / name).read_bytes() == (tiny_path / name).read_bytes(), name
    assert (folder / "README.md").read_text().startswith((warmed / "README.md").read_text().rstrip("\n"))

    legacy = tmp_path / "legacy"  # as the build of the previous version wrote warmup.json
    legacy.mkdir()
    for p in warmed.iterdir():
        (legacy / p.name).symlink_to(p)
    recorded = json.loads((warmed / "warmup.json").read_text())
    del recorded["input_vocab"]
    (legacy / "warmup.json").unlink()
    (legacy / "warmup.json").write_text(json.dumps(recorded))
    assert torch.equal(warmup.input_rows(legacy, SHORT), rows)


def test_warm_model_is_cached_with_a_card(warmed, cache_dir, tiny_path, monkeypatch):
    card = (warmed / "README.md").read_text()
    assert "It does not read" in card and f"{SHORT.steps} AdamW steps" in card and TRAIN_STREAM in card

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached warm model was built again")

    monkeypatch.setattr(warmup, "warm", no_rebuild)
    assert warmup.ensure_built_model(cache_dir, SHORT, raw_dir=tiny_path) == warmed
    other = Recipe(**{**SHORT.__dict__, "steps": SHORT.steps + 1})
    with pytest.raises(AssertionError, match="built again"):  # another recipe is another cache entry
        warmup.ensure_built_model(cache_dir, other, raw_dir=tiny_path)


def test_the_default_model_is_the_warmed_one_and_model_tiny_the_raw_one(warm_path, tiny_path):
    from conftest import compose

    from vlmsweep.model.load import resolve_path

    default = compose([])
    assert default.model.name == "tiny_warm" and resolve_path(default.model, default.cache_dir) == str(warm_path)
    raw = compose(["model=tiny"])
    assert resolve_path(raw.model, raw.cache_dir) == str(tiny_path)
    recorded = json.loads((warm_path / "warmup.json").read_text())
    assert recorded["recipe"] == Recipe().key()  # the shipped model is the one today's recipe builds (else: --ship)
    # Its card: the contract it reached on held-out documents, and that it does not read. The recipe reaches 0.92 on
    # the 2-core CPU the README names; another CPU's float reduction order can move a held-out answer or two, so this
    # guards against a model that lost the contract, not the last sample.
    figures, card = recorded["figures"], (warm_path / "README.md").read_text(encoding="utf-8")
    assert figures["heldout.contract.strict_parse_rate"] >= 0.75 and figures["heldout.contract.key_set_rate"] >= 0.75
    assert f"strict parse {figures['heldout.contract.strict_parse_rate']:.2f}" in card and "It does not read" in card


def test_model_tiny_warm_resolves_to_the_warm_model(monkeypatch, tmp_path):
    from conftest import compose

    from vlmsweep.model.load import resolve_path

    from vlmsweep.model import shipped

    built = []
    monkeypatch.setattr(shipped, "ensure_warm_model", lambda cache_dir: built.append(cache_dir) or tmp_path / "warm")
    cfg = compose(["model=tiny_warm"])
    assert resolve_path(cfg.model, cfg.cache_dir) == str(tmp_path / "warm") and built == [cfg.cache_dir]
