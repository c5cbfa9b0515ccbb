"""The Instruct warm-up: full fine-tuning of the embedded replica until it answers in the JSON contract.

A released Qwen2-VL-2B-Instruct already answers an extraction prompt with roughly the right JSON and
misreads details; a random replica never emits JSON, so every quality number would be zero. The
warm-up trains all parameters once, with the project's own collator and trainer, on synthetic
documents of every domain drawn from a seed stream ("warmup/...") that no split, targeted set or
evaluation uses, then measures the contract under free decoding on held-out samples of the same
stream. It teaches the format and the marginal distribution of values, not reading: the card in the
model folder says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vlmsweep.config import (
    Config,
    DataMixConfig,
    DecodingConfig,
    DomainTagConfig,
    EvalConfig,
    LossConfig,
    MaxPixelsConfig,
    ModelConfig,
    OcrHintConfig,
    QuantConfig,
    ScopeConfig,
    TrackerConfig,
    TrainConfig,
    visual_tokens_to_pixels,
)
from vlmsweep.data import DOMAINS, Record
from vlmsweep.data.build import render_records
from vlmsweep.data.mix import sample_seed
from vlmsweep.files import write_json
from vlmsweep.model.cache import MANIFEST
from vlmsweep.train.collator import IGNORE, Collator, MaskError

log = logging.getLogger(__name__)

# Every seed of the warm-up comes from these streams: never a split name ("train", "test", ...)
# nor "targeted/<focus>", so no document a run trains, evaluates, mines or regresses on is seen here.
TRAIN_STREAM, HELDOUT_STREAM = "warmup/train", "warmup/heldout"

# Bump when the recipe or what it writes changes: it is part of the warm model's cache key.
WARMUP_VERSION = 4
# The most training documents whose encodings (pixels included) the warm-up holds in memory between passes; more, and
# each is encoded when its batch comes (a reader's recipe draws a new document for nearly every sample)
KEEP_ENCODED = 4096


@dataclass(frozen=True)
class Recipe:
    """How the replica is warmed. Defaults: the best recipe measured so far (docs/embedded-model.md, benchmarks/bench_warmup.py)."""

    documents: int = 1024  # distinct rendered training documents (seed stream warmup/train)
    steps: int = 1200  # optimizer steps with the softmax over the answer vocabulary only (see AnswerVocabHead)
    full_vocab_steps: int = 10  # then optimizer steps over the full 151,936-token softmax
    batch_size: int = 8  # samples per step
    lr: float = 6e-3  # peak AdamW learning rate (all parameters trainable)
    warmup_ratio: float = 0.05  # linear warm-up share of the steps, then the schedule below
    lr_scheduler: str = "cosine"
    visual_tokens: tuple[int, ...] = (16, 16, 64, 256)  # each training page's budget, drawn from these by its seed:
    #   a released Instruct model answers in the contract at any budget, so the warmed one must too. Trained at 16
    #   tokens alone it kept the contract at 16 and lost it at a run's 256 (held-out strict parse 0.00 there), and
    #   a run's 30 LoRA steps had to relearn it. Small budgets keep the steps cheap; the contract needs no reading.
    heldout_visual_tokens: int = 256  # budget of the held-out contract check: a run's default (max_pixels=256tok)
    noise: str = "light"  # scan noise of the warm-up documents
    hard_negatives: float = 0.1  # share of receipt images asked as a prescription (all-null answer)
    sparse: float = 0.25  # share of training documents with many blank fields (generator focus "sparse"):
    #                      shorter answers, and null becomes the likely guess where a value cannot be read
    short: float = 0.5  # share of training documents with at most two list entries (generator focus "short"):
    #                     an answer whose lists end early, so the model learns to close them
    full_vocab_lr: float = 4e-4  # learning rate of the full-vocabulary steps (constant)
    heldout: int = 24  # held-out samples for the contract check (seed stream warmup/heldout)
    max_new_tokens: int = 384  # free decoding budget of the check, as eval.max_new_tokens
    seed: int = 0
    threads: int = 2  # torch compute threads while building: a reduction split over another number of threads sums
    #                   in another order, so the same seed gives the same bytes only at the same thread count
    ocr_hint: str = "none"  # none | tesseract | rapidocr: every training and held-out prompt holds the page's OCR text
    #                         (of the full page, before it is scaled to its budget): a reader's recipe (docs/ocr-hint.md)
    hint_source: str = "engine"  # where the training pages' hints come from (with ocr_hint; the held-out check always
    #   reads its pages with the engine): "engine", the engine's text of each page (about a second a page, so the
    #   documents are few and revisited); "layout", the page's own drawn strings in reading order with OCR-like errors
    #   (vlmsweep.data.build.page_text, `hint_errors`), free, so every step can see new documents
    hint_errors: float = 0.03  # layout hints: share of characters an OCR-like error changes (a confusable digit or
    #                            letter swapped, or the character dropped)
    unhinted: float = 0.1  # layout hints: share of training documents asked with no hint, as a run asks a page the
    #                        engine could not read, so the reader keeps the contract there and a run can ask it both ways

    def key(self) -> dict:
        """The recipe as warmup.json records it (JSON types: a tuple reads back as a list). A recipe without a hint
        keeps the key it had before `ocr_hint` existed, so its build is found where it was."""
        fields = dataclasses.asdict(self)
        if fields["ocr_hint"] == "none":
            for name in ("ocr_hint", "hint_source", "hint_errors", "unhinted"):
                del fields[name]
        elif fields["hint_source"] == "engine":
            del fields["hint_errors"], fields["unhinted"]
        return json.loads(json.dumps({"version": WARMUP_VERSION, **fields}))



# The reader's recipe (`python -m vlmsweep.recipes.warmup --reader`, docs/ocr-hint.md): every prompt holds the page's
# text, and every training sample is a new document whose text is its own layout with OCR-like errors, so the model
# can learn to take values from the text rather than learn the documents; the held-out check reads with Tesseract.
READER = Recipe(ocr_hint="tesseract", hint_source="layout", documents=32_000, steps=4000)

def _jobs(stream: str, n: int, seed: int, hard_negatives: float, sparse: float, short: float) -> list[tuple]:
    """(id, seed, domain asked, image domain, focus): domains in turn, some receipts asked as prescriptions; of the
    rest, a `sparse` share with many blank fields and a `short` share with short lists, drawn by each seed."""
    jobs = []
    n_hn = round(n * hard_negatives)
    for i in range(n):
        s = sample_seed(seed, stream, i)
        rid = f"{stream.replace('/', '-')}-{i:05d}"
        if i < n_hn:
            jobs.append((rid, s, ("prescription_ko", "prescription_zh")[i % 2], "receipt", None))
            continue
        u = random.Random(s).random()
        focus = "sparse" if u < sparse else "short" if u < sparse + short else None
        d = DOMAINS[i % len(DOMAINS)]
        jobs.append((rid, s, d, d, focus))
    return jobs


def documents(stream: str, n: int, folder: Path, recipe: Recipe, hinter=None) -> list[Record]:
    """Training documents follow the recipe's mix, each page scaled to its own visual-token budget; held-out ones
    are plain (a run's documents, scaled by the processor to the check's budget). `hinter` (vlmsweep.ocr.hint.Hinter,
    with recipe.ocr_hint): each page's OCR text, read from the full page before it is scaled; with
    `hint_source="layout"` the training pages' hints are their own text with OCR-like errors instead, cut to the
    hinter's budget."""
    train = stream == TRAIN_STREAM
    layout = train and recipe.ocr_hint != "none" and recipe.hint_source == "layout"
    jobs = _jobs(stream, n, recipe.seed, recipe.hard_negatives, recipe.sparse if train else 0.0, recipe.short if train else 0.0)
    records = render_records(jobs, folder, recipe.noise, origin="warmup", text=layout)
    if layout:
        records = [dataclasses.replace(r, hint=None if random.Random(f"unhinted/{r.seed}").random() < recipe.unhinted else
                                       ocr_errors(r.hint, recipe.hint_errors, random.Random(f"errors/{r.seed}")))
                   for r in records]
        if hinter is not None:  # cut as the engine's hints are, to the same budget
            from vlmsweep.ocr.hint import cut_to_tokens

            records = [r if r.hint is None else dataclasses.replace(r, hint=cut_to_tokens(r.hint, hinter.budget, hinter.count)[0])
                       for r in records]
    elif hinter is not None:
        records = hinter.attach(records)
    if train:
        for record in records:
            budget = random.Random(f"budget/{record.seed}").choice(recipe.visual_tokens)
            _scale_to_budget(Path(record.image), budget)
    return records


# What an OCR engine confuses in print (digits by shape, letters it reads as digits): a layout hint's swaps
CONFUSED = {"5": "8", "8": "5", "6": "0", "0": "6", "1": "7", "7": "1", "O": "0", "l": "1", "S": "5", "B": "8"}


def ocr_errors(text: str, rate: float, rng: random.Random) -> str:
    """`text` with about `rate` of its characters (not line breaks) changed as an OCR engine changes them: a character
    with a look-alike (CONFUSED) swapped for it, any other dropped. What a reader trained on layout hints must read
    through; the engine's own errors differ in kind (a line split or merged, a word lost), which the held-out check,
    read by the engine, measures."""
    out = []
    for ch in text:
        if ch != "\n" and rng.random() < rate:
            if ch in CONFUSED:
                out.append(CONFUSED[ch])
            continue
        out.append(ch)
    return "".join(out)


def _scale_to_budget(image: Path, visual_tokens: int) -> None:
    """Resize the page in place to the area of `visual_tokens` tokens, aspect kept: the processor, whose maximum is
    the recipe's largest budget, then leaves it at about that many tokens (it rounds each side to 28 pixels)."""
    from PIL import Image

    with Image.open(image) as im:
        scale = math.sqrt(visual_tokens_to_pixels(visual_tokens) / (im.width * im.height))
        small = im.convert("RGB").resize((max(28, round(im.width * scale)), max(28, round(im.height * scale))), Image.BICUBIC)
    small.save(image, quality=95)


def warm_config(recipe: Recipe, out_dir: Path) -> Config:
    """The run config the project's trainer and evaluator read: fp32, full fine-tuning, free decoding."""
    return Config(
        model=ModelConfig(name="tiny"),
        quant=QuantConfig(name="fp32", dtype="float32"),
        scope=ScopeConfig(name="all", parts=["llm", "merger", "vision"]),
        max_pixels=MaxPixelsConfig(name=f"{max(recipe.visual_tokens)}tok", visual_tokens=max(recipe.visual_tokens)),
        data_mix=DataMixConfig(name="rx_receipt_1_1_1", hard_negatives=recipe.hard_negatives),
        domain_tag=DomainTagConfig(name="none", in_prompt=False),
        loss=LossConfig(name="assistant_only", assistant_only=True),
        decoding=DecodingConfig(name="free", constrained=False),
        tracker=TrackerConfig(name="none"),
        ocr_hint=OcrHintConfig(name=recipe.ocr_hint, engine=recipe.ocr_hint),
        train=TrainConfig(
            max_steps=recipe.steps,
            batch_size=recipe.batch_size,
            lr=recipe.lr,
            warmup_ratio=recipe.warmup_ratio,
            lr_scheduler=recipe.lr_scheduler,
            logging_steps=max(1, min(10, recipe.steps // 10)),
            resume=False,
        ),
        eval=EvalConfig(batch_size=8, max_new_tokens=recipe.max_new_tokens),
        seed=recipe.seed,
        output_dir=str(out_dir),
    )


class CompactEmbedding(torch.nn.Module):
    """The input embedding restricted to the token ids the warm-up's inputs use (prompts, answers, specials).

    Every row of the 151,936 x 128 embedding is a trainable parameter, so a plain step builds a dense
    19 M-value gradient and AdamW updates every row, although only the few thousand rows of tokens that
    occur move (a row with a zero gradient and zero moments gets a zero AdamW update). Training these
    rows alone does the same arithmetic on the rows that change and skips the rest; `write_back` puts
    them into the full matrix. (Not in peft or accelerate: written here.)
    """

    def __init__(self, full: torch.nn.Embedding, token_ids: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(full.weight.detach()[token_ids].clone())
        position = torch.full((full.num_embeddings,), -1, dtype=torch.long)
        position[token_ids] = torch.arange(len(token_ids))
        self.register_buffer("token_ids", token_ids, persistent=False)
        self.register_buffer("position", position, persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = self.position[input_ids]
        if (rows < 0).any():
            raise ValueError("an input token is missing from the warm-up's compact embedding")
        return torch.nn.functional.embedding(rows, self.weight)

    @torch.no_grad()
    def write_back(self, full: torch.nn.Embedding) -> None:
        full.weight[self.token_ids] = self.weight


class AnswerVocabHead(torch.nn.Module):
    """The tied output layer restricted to the tokens that occur in the warm-up answers.

    The output layer over the full vocabulary dominates a CPU training step (FACTS: the 151,936 x 128
    product per supervised token); the contract needs only the few thousand tokens its answers use.
    Rows of tokens that occur in no answer get no gradient from the output side (the prompt's tokens
    still train as inputs); the final full-softmax steps push their logits below the answer's. Labels
    arrive remapped by AnswerVocabCollator. `embedding` is the full or the compact input embedding, and
    `rows` the answer tokens' rows in it (their ids in the full one).
    """

    def __init__(self, embedding: torch.nn.Module, rows: torch.Tensor):
        super().__init__()
        self.embedding = embedding  # the tied weight: lm_head.weight is embed_tokens.weight
        self.register_buffer("rows", rows, persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        """The answer tokens' rows of the tied weight, as the output layer multiplies by them: the training loss
        (vlmsweep.train.loss, every train.loss_impl but eager) reads the output layer's `weight`."""
        return self.embedding.weight[self.rows]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden, self.weight)


@dataclass
class CachedCollator(Collator):
    """The project's collator, encoding each record once: the warm-up revisits its documents many times,
    and rendering the template, tokenizing and resizing the image again each time would repeat that work every epoch."""

    cache: dict = dataclasses.field(default_factory=dict)
    keep: bool = True  # False: encode each time (documents seen about once, too many to hold: a reader's fresh ones)

    @classmethod
    def like(cls, collator: Collator, **extra) -> "CachedCollator":
        """Same settings as `collator`, its own statistics."""
        settings = {f.name: getattr(collator, f.name) for f in dataclasses.fields(Collator) if f.init and f.name != "stats"}
        return cls(**settings, **extra)

    def encode(self, record: Record):
        if not self.keep:
            return super().encode(record)
        if record.id not in self.cache:
            self.cache[record.id] = super().encode(record)
        return self.cache[record.id]


@dataclass
class AnswerVocabCollator(CachedCollator):
    """The cached collator, with each label replaced by its row in AnswerVocabHead."""

    position: torch.Tensor | None = None  # vocabulary id -> row of the restricted head (-1: absent)

    def __call__(self, records):
        batch = super().__call__(records)
        labels = self.position[batch["labels"]]
        if (labels < 0).any():
            raise ValueError("a supervised token is missing from the warm-up answer vocabulary")
        batch["labels"] = labels
        return batch


def vocabularies(records: list[Record], collator: Collator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted ids of every supervised token of the records (the answer vocabulary) and of every token
    their inputs hold (the pad token included); also the length check (a cut answer is an error)."""
    answers: set[int] = set()
    inputs: set[int] = {collator.processor.tokenizer.pad_token_id}
    for record in records:
        encoded = collator.encode(record)
        if (reason := collator.check_length(encoded)) is not None:
            raise MaskError(reason)
        answers |= set(encoded.labels[encoded.labels != IGNORE].tolist())
        inputs |= set(encoded.input_ids.tolist())
    return torch.tensor(sorted(answers), dtype=torch.long), torch.tensor(sorted(inputs), dtype=torch.long)


def write_weights(model, raw_dir: Path, out_dir: Path) -> None:
    """The raw replica's files as they are (release config.json layout, template, tokenizer, processor),
    with the trained weights. transformers 5 would rewrite config.json in its nested layout and the
    processor files under other names; the weights it writes under the release's (4.x) names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in Path(raw_dir).iterdir():
        if f.is_file() and not f.name.startswith("model") and f.suffix != ".safetensors" and f.name != MANIFEST:
            shutil.copy2(f, out_dir / f.name)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        model.save_pretrained(tmp)
        for f in Path(tmp).glob("model*.safetensors*"):
            shutil.move(str(f), out_dir / f.name)


@contextlib.contextmanager
def reproducible(threads: int):
    """Fixed compute threads and deterministic kernels for the enclosed block, restored afterwards: with the seeds
    of the recipe, the same machine writes the same weights byte for byte (tests/test_warmup.py builds twice).
    Another CPU may still round differently (its BLAS picks other kernels): the card records the machine."""
    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])


def machine() -> str:
    """The CPU a build ran on, as the card records it."""
    import platform

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, torch {torch.__version__}"


def _progress(logs: dict, step: int) -> None:
    if "train/loss" in logs:
        log.info("warm-up step %d: loss %.3f", step, logs["train/loss"])


def warm(raw_dir: Path, out_dir: Path, recipe: Recipe, work_dir: Path | None = None) -> dict[str, float]:
    """Train the replica in `raw_dir` by `recipe`, measure it, write it (same file layout) to `out_dir`.

    Returns the figures the card reports: build seconds, steps, final loss, held-out contract rates.
    """
    with reproducible(recipe.threads):
        return _warm(raw_dir, out_dir, recipe, work_dir)


def _warm(raw_dir: Path, out_dir: Path, recipe: Recipe, work_dir: Path | None) -> dict[str, float]:
    from vlmsweep.evaluate import evaluate
    from transformers import AutoProcessor

    from vlmsweep.model.shapes import model_class
    from vlmsweep.train.collator import make_collator
    from vlmsweep.train.trainer import train

    started, cpu_started = time.perf_counter(), time.process_time()
    work = Path(work_dir or tempfile.mkdtemp(prefix="vlmsweep-warmup-"))
    cfg = warm_config(recipe, work)
    torch.manual_seed(recipe.seed)
    processor = AutoProcessor.from_pretrained(str(raw_dir))
    model = model_class(cfg.model).from_pretrained(str(raw_dir), dtype=torch.float32)
    model.requires_grad_(True)

    t = time.perf_counter()
    hinter = _hinter(recipe, cfg, processor)
    train_docs = documents(TRAIN_STREAM, recipe.documents, work / "train", recipe, hinter)
    heldout_docs = documents(HELDOUT_STREAM, recipe.heldout, work / "heldout", recipe, hinter)
    render_seconds = time.perf_counter() - t

    keep = recipe.documents <= KEEP_ENCODED
    collator = CachedCollator.like(make_collator(cfg, processor), keep=keep)
    vocab, inputs = vocabularies(train_docs, collator)
    position = torch.full((model.config.text_config.vocab_size,), -1, dtype=torch.long)
    position[vocab] = torch.arange(len(vocab))
    restricted = AnswerVocabCollator.like(collator, cache=collator.cache, keep=keep, position=position)
    full_embedding, full_head = model.get_input_embeddings(), model.lm_head
    compact = CompactEmbedding(full_embedding, inputs)
    model.set_input_embeddings(compact)
    model.lm_head = AnswerVocabHead(compact, compact.position[vocab])
    model.train()
    losses, seconds = [], 0.0
    if recipe.steps > 0:
        trainer, m = train(model, restricted, train_docs, cfg, work / "answer_vocab", sink=_progress)
        losses += [h["loss"] for h in trainer.state.log_history if "loss" in h]
        seconds += m["train.seconds"]
        del trainer
    compact.write_back(full_embedding)
    model.set_input_embeddings(full_embedding)
    model.lm_head = full_head
    if recipe.full_vocab_steps > 0:
        full_cfg = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, max_steps=recipe.full_vocab_steps, lr=recipe.full_vocab_lr, lr_scheduler="constant",
            warmup_ratio=0.0, logging_steps=1))
        trainer, m = train(model, collator, train_docs, full_cfg, work / "full_vocab", sink=_progress)
        full_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        seconds += m["train.seconds"]
        del trainer
    else:
        full_losses = []
    supervised = restricted.stats["supervised"] + collator.stats["supervised"]

    model.eval()
    t = time.perf_counter()
    eval_metrics, eval_samples = evaluate(
        model,
        processor,
        heldout_docs,
        cfg.eval,
        cfg.decoding,
        domain_tag=False,
        max_pixels=visual_tokens_to_pixels(recipe.heldout_visual_tokens),
        min_pixels=visual_tokens_to_pixels(cfg.max_pixels.min_visual_tokens),
    )
    eval_seconds = time.perf_counter() - t
    figures = {
        "warmup.seconds": time.perf_counter() - started,
        "warmup.render_seconds": render_seconds,
        "warmup.cpu_seconds": time.process_time() - cpu_started,
        "warmup.train_seconds": seconds,
        "warmup.eval_seconds": eval_seconds,
        "warmup.steps": float(recipe.steps + recipe.full_vocab_steps),
        "warmup.answer_vocab": float(len(vocab)),
        "warmup.input_vocab": float(len(inputs)),
        "warmup.first_loss": losses[0] if losses else math.nan,
        "warmup.answer_vocab_loss": losses[-1] if losses else math.nan,
        "warmup.full_vocab_first_loss": full_losses[0] if full_losses else math.nan,
        "warmup.final_loss": (full_losses or losses or [math.nan])[-1],
        "warmup.supervised_tokens": float(supervised),
        **{f"heldout.{k}": float(v) for k, v in eval_metrics.items() if isinstance(v, (int, float))},
        **(_reading(eval_samples, heldout_docs, hinter) if hinter is not None else {}),
    }
    write_weights(model, raw_dir, out_dir)
    write_json(out_dir / "warmup.json", {"recipe": recipe.key(), "figures": figures, "machine": machine(),
                                         "answer_vocab": vocab.tolist(), "input_vocab": inputs.tolist()},
               indent=1, sort_keys=True, ensure_ascii=True)
    if work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return figures


def _hinter(recipe: Recipe, cfg: Config, processor):
    """The recipe's OCR hints (vlmsweep.ocr.hint), cached in the user's cache folder like a run's; None without."""
    if recipe.ocr_hint == "none":
        return None
    from vlmsweep.config.schema import hint_token_budget
    from vlmsweep.config import pixel_budget
    from vlmsweep.data import DOMAINS
    from vlmsweep.ocr.hint import Hinter, engine_version

    cache = Path(os.path.expanduser(os.environ.get("VLMSWEEP_CACHE", "~/.cache/vlmsweep")))
    tok = processor.tokenizer
    return Hinter(recipe.ocr_hint, "page", cache, hint_token_budget(cfg), lambda text: len(tok(text)["input_ids"]),
                  pixel_budget(cfg), engine_version(recipe.ocr_hint, DOMAINS))


def _reading(samples: list[dict], docs: list[Record], hinter) -> dict[str, float]:
    """What a reader's held-out check adds: the chance baseline's margin and p, and per id field (patient_id,
    store) the exact match on the pages whose hint holds the value (what a copy can reach) and on the others."""
    from vlmsweep.evaluate.grounding import randomization_test

    out = {"heldout.ocr_seconds_per_image": hinter.stats.seconds / max(1, hinter.stats.pages),
           "heldout.hint_cut_pages": float(len(hinter.stats.cut))}
    test = randomization_test(samples)
    if test is not None:
        out |= {"heldout.field_em_margin_p": test.p_value}
    hints = {d.id: d.hint or "" for d in docs}
    for name in ("patient_id", "store", "total"):
        held = {True: [], False: []}
        for s in samples:
            value = (s.get("target") or {}).get(name)
            if value in (None, "") or name not in (s.get("field_scores") or {}):
                continue
            held[str(value) in hints.get(s["id"], "")].append(s["field_scores"][name])
        for inside, scores in held.items():
            if scores:
                where = "in_hint" if inside else "not_in_hint"
                out[f"heldout.{name}_em.{where}"] = sum(scores) / len(scores)
                out[f"heldout.{name}_pages.{where}"] = float(len(scores))
    return out


def _margin(f: dict[str, float]) -> str:
    """The field EM's margin over chance (vlmsweep/evaluate/grounding.py), where the build measured it."""
    margin = f.get("heldout.content.field_em_margin")
    if margin is None:
        return ""
    return (f": against other documents' targets of the same kind the same answers score {f['heldout.content.field_em'] - margin:.2f}"
            f" (margin {margin:+.2f})")


def _limits(recipe: Recipe, f: dict[str, float]) -> str:
    """The card's last section: what the build cannot do (a reader's: what its hint gave it)."""
    if recipe.ocr_hint == "none":
        return """## What it cannot do
It does not read. It has learned the answer format and the distribution of values, not the document in
front of it: content metrics of any run on this model measure chance-level guessing. Use it to exercise the
pipeline (contract metrics, failure tags, mining, retraining), never as evidence about reading quality.
"""
    copied = ", ".join(f"{name} {f[f'heldout.{name}_em.in_hint']:.2f} on {f[f'heldout.{name}_pages.in_hint']:.0f} page(s)"
                       for name in ("patient_id", "store", "total") if f"heldout.{name}_em.in_hint" in f)
    held = (f"Every training and held-out prompt held the page's `{recipe.ocr_hint}` text (`ocr_hint={recipe.ocr_hint}`, the full\npage)"
            if recipe.hint_source == "engine" else
            f"Every training prompt held the page's own text with OCR-like errors (or none), every held-out prompt the\n"
            f"page's `{recipe.ocr_hint}` text (`ocr_hint={recipe.ocr_hint}`, the full page)")
    return f"""## A reader's recipe: the page's text in every prompt
{held}. What it answers comes from that text read by a tiny model, not from the pixels. Held-out chance baseline:
margin {f.get('heldout.content.field_em_margin', math.nan):+.3f}, p = {f.get('heldout.field_em_margin_p', math.nan):.3f}.
Exact match where the hint holds the value: {copied or 'n/a'}. Runs on it need the same `ocr_hint`.
"""


def _hints(recipe: Recipe) -> str:
    """The card's training line on the hints a reader's recipe put in its prompts."""
    if recipe.ocr_hint == "none":
        return ""
    if recipe.hint_source == "engine":
        return f"\n- Hints: every prompt held the page's `{recipe.ocr_hint}` text, read from the full page."
    return (f"\n- Hints: every training prompt held the page's own text (the strings the generator drew, in reading order "
            f"as an OCR engine\n  returns its lines) with {recipe.hint_errors:.0%} of its characters changed as OCR changes "
            f"them; {recipe.unhinted:.0%} of the documents were asked\n  with no hint, as a run asks a page its engine "
            f"cannot read. The held-out check read its pages with `{recipe.ocr_hint}`.")


def card(recipe: Recipe, figures: dict[str, float], raw_name: str, built_on: str = "") -> str:
    """README.md of the warmed model folder: what it was trained on, how long, what it reaches, its limits."""
    f = figures

    def rate(name: str) -> str:
        return f"{f.get(f'heldout.contract.{name}', math.nan):.2f}"

    values = ("values are plausible (names, institutions, codes, drugs\n  in the right script and form) but not read from "
              "the image" if recipe.ocr_hint == "none" else "what it gets right it takes from\n  the page's OCR text in "
              "the prompt, never from the pixels")

    return f"""# Embedded Qwen2-VL, warmed (vlmsweep)

A tiny replica of the released Qwen2-VL-2B-Instruct files (same config layout, weight names, chat
template, processor and generation configs; 2 LLM layers of width 128, the real 151,936-token vocabulary),
built locally from `{raw_name}` and fully fine-tuned once so that it answers the extraction prompts in the
JSON contract, as an Instruct model roughly does. Written by `vlmsweep.recipes.warmup` (version {WARMUP_VERSION}).

## Training
- Data: {recipe.documents} synthetic documents (Korean and Chinese prescriptions and receipts in turn, {recipe.hard_negatives:.0%}
  receipts asked as prescriptions with an all-null answer; of the others about {recipe.sparse:.0%} with many blank fields and
  {recipe.short:.0%} with at most two list entries), seed stream `{TRAIN_STREAM}` of data seed {recipe.seed}, scan noise
  `{recipe.noise}`; no split a run uses (train, test, mining, regression, targeted) draws from this stream.
- Recipe: all parameters trainable; {recipe.steps} AdamW steps of {recipe.batch_size} samples with the softmax over the
  {int(f.get('warmup.answer_vocab', 0)):,} tokens the warm-up answers use and only the {int(f.get('warmup.input_vocab', 0)):,} embedding rows
  the inputs use (the other rows of the tied embedding keep their random values), then {recipe.full_vocab_steps} steps over the full vocabulary; lr {recipe.lr:g} ({recipe.lr_scheduler}, {recipe.warmup_ratio:.0%} warm-up),
  each page at a budget of {' / '.join(map(str, sorted(set(recipe.visual_tokens))))} visual tokens (drawn from {list(recipe.visual_tokens)} by its seed),
  loss on the assistant answer only (the project's collator and trainer).{_hints(recipe)}
- Supervised tokens: {int(f.get('warmup.supervised_tokens', 0)):,}; loss {f.get('warmup.first_loss', math.nan):.2f} -> {f.get('warmup.final_loss', math.nan):.2f};
  build {f.get('warmup.seconds', math.nan):.0f} s ({f.get('warmup.train_seconds', math.nan):.0f} s training) on {built_on or 'this machine'}, {recipe.threads} compute
  threads, deterministic kernels: the same recipe on the same machine writes the same bytes; another CPU may round
  differently and land a held-out answer or two apart.

## What it reaches (free greedy decoding, {recipe.heldout} held-out documents of stream `{HELDOUT_STREAM}`, {recipe.heldout_visual_tokens} visual tokens)
- strict parse {rate('strict_parse_rate')}, exact key set {rate('key_set_rate')}, schema valid {rate('schema_valid_rate')}, salvage {rate('salvage_rate')}
- field exact match {f.get('heldout.content.field_em', math.nan):.2f}: {values}{_margin(f)}.

{_limits(recipe, f)}"""


def ensure_built_model(cache_dir: Path | str, recipe: Recipe | None = None, raw_dir: Path | None = None) -> Path:
    """The warmed model built by `recipe` from the raw replica, once into the cache (versioned, atomic rename, checked
    before reuse). Runs use the shipped model (`vlmsweep.model.shipped`); this is the build that `--ship` packs."""
    from vlmsweep.model.cache import build_once
    from vlmsweep.model.tiny import ensure_embedded_model

    recipe = recipe or Recipe()
    cache_dir = Path(os.path.expanduser(str(cache_dir)))
    raw_dir = Path(raw_dir or ensure_embedded_model("tiny", cache_dir))
    key = hashlib.sha256(json.dumps([raw_dir.name, recipe.key()], sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_dir / "models" / f"tiny-warm-{key}"

    def write(tmp: Path) -> Path:
        log.info("warming the embedded model into %s (about %d minutes on 2 CPU cores)", folder,
                 max(5, round(recipe.steps * 0.6 / 60)))
        figures = warm(raw_dir, tmp / "model", recipe, work_dir=tmp / "work")
        built_on = json.loads((tmp / "model" / "warmup.json").read_text(encoding="utf-8")).get("machine", "")
        (tmp / "model" / "README.md").write_text(card(recipe, figures, raw_dir.name, built_on), encoding="utf-8")
        return tmp / "model"

    return build_once(folder, write, rebuild="python -m vlmsweep.recipes.warmup")


def input_rows(build: Path, recipe: Recipe) -> torch.Tensor:
    """The token ids the build's inputs held (prompts, answers, specials): the embedding rows that ship. A build of
    this version records them; one from before is given them again from its recipe's documents."""
    recorded = json.loads((build / "warmup.json").read_text(encoding="utf-8"))
    if "input_vocab" in recorded:
        return torch.tensor(recorded["input_vocab"], dtype=torch.long)
    from transformers import AutoProcessor

    from vlmsweep.train.collator import make_collator

    log.info("%s records no input vocabulary: encoding its recipe's %d documents again", build, recipe.documents)
    with tempfile.TemporaryDirectory(prefix="vlmsweep-rows-") as work:
        docs = documents(TRAIN_STREAM, recipe.documents, Path(work), recipe)
        collator = make_collator(warm_config(recipe, Path(work)), AutoProcessor.from_pretrained(str(build)))
        return vocabularies(docs, collator)[1]


if __name__ == "__main__":  # `python -m vlmsweep.recipes.warmup`
    from vlmsweep.cli.warmup import main

    raise SystemExit(main())
