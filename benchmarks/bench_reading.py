"""Can the embedded replica learn to read? Probes on single printed lines of digits, as the forms print them, and on
whole generated pages (one field).

    python benchmarks/bench_reading.py                          # all probes at the page scale of 256 visual tokens
    python benchmarks/bench_reading.py --scale 1.0              # the same lines at print size (17 px glyphs)
    python benchmarks/bench_reading.py --probe end_to_end --steps 1000
    python benchmarks/bench_reading.py --probe page --llm-layers 4 --steps 2000 --batch 16   # the patient id from pages

The forms print ids, dates and amounts in a 17-18 px font on an 840 x 1188 page; at a run's 256 visual tokens
the processor shrinks the page by 0.448, so a digit is about 4 px wide and one 28 x 28 token holds six or seven.
Each probe starts from the raw tiny replica (random weights) and draws lines of 8-14 random digits, rendered with
the forms' font at print size, scaled by --scale onto a 280 x 56 canvas (20 visual tokens), JPEG quality 85:

- end_to_end: image -> the digit string, the softmax over the 13 tokens a line can hold (how the warm-up trains);
- dense: the vision tower alone, each merged token classified as the digit nearest its centre or blank, by a
  linear head (a per-token signal, where the end-to-end loss has one per answer token);
- two_stage: dense, then end_to_end on the same vision tower;
- page: end_to_end on whole generated prescription pages (Korean and Chinese, the product's generator and scan
  noise, a fresh page every sample) at --tokens visual tokens (the product's budget), answering the patient id
  ("570824-1******", "MZ1751147191"): the line task plus finding the field on the page. --scale does not apply.

Prints the loss on the way and, at the end, held-out (64 lines) per-token digit accuracy (dense) or exact match
and character accuracy of greedy decoding (end_to_end), with the machine and seconds, as one JSON line.
This is a probe of the architecture and the recipe, not of the product: it trains outside vlmsweep's trainer.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

CANVAS = (280, 56)  # 10 x 2 visual tokens of 28 x 28 pixels
CHARS = "0123456789-.*"
DIGITS = "0123456789"


def line(rng: random.Random, scale: float, spacing: str = "print"):
    """A printed line of digits at `scale`, and the digit (index) nearest each merged token's centre (10: blank).
    spacing "token": one digit centred in each 28-pixel token column instead (a diagnostic: reading without
    sub-token positions); "half": one digit every 14 pixels, two to a token column (the step between them is
    half a token)."""
    from vlmsweep.data.fonts import font

    pitch = {"token": 28, "half": 14}.get(spacing)  # canvas pixels between digit centres; None: the font's own
    per_token = pitch is not None
    text = "".join(rng.choice(DIGITS) for _ in range(rng.randint(*((4, 9) if pitch == 28 else (8, 14)))))
    f = font("ko", 17)
    big = Image.new("RGB", (round(CANVAS[0] / scale), round(CANVAS[1] / scale)), "white")
    x0, y = rng.randint(10, 30), big.height / 2 + rng.randint(-3, 3)  # a form cell: the value starts at a fixed x
    draw = ImageDraw.Draw(big)
    centres, x = [], x0
    for i, c in enumerate(text):
        if per_token:
            centre = (28 + pitch * i + pitch / 2) / scale
            draw.text((centre, y), c, font=f, fill=(24, 24, 28), anchor="mm")
            centres.append(centre * scale)
            continue
        w = f.getlength(c)
        centres.append((x + w / 2) * scale)
        x += w
    if not per_token:
        draw.text((x0, y), text, font=f, fill=(24, 24, 28), anchor="lm")
    image = big.resize(CANVAS, Image.BICUBIC)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    labels = torch.full((CANVAS[1] // 28, CANVAS[0] // 28), 10)
    row = min(int(y * scale // 28), labels.shape[0] - 1)
    if SLOTS > 1:  # every digit in its token and in the slot (a 1/SLOTS-wide strip of the token) its centre falls in
        labels = torch.full((*labels.shape, SLOTS), 10)
        for c, d in zip(centres, text):
            if 0 <= c < CANVAS[0]:
                labels[row, int(c // 28), min(int((c % 28) / (28 / SLOTS)), SLOTS - 1)] = DIGITS.index(d)
        return image, text, labels
    for j in range(labels.shape[1]):
        centre = 28 * j + 14
        nearest = min(range(len(text)), key=lambda i: abs(centres[i] - centre))
        if abs(centres[nearest] - centre) < (8.0 if pitch == 14 else min(6.0, 14 * scale)):  # half: the left digit
            labels[row, j] = DIGITS.index(text[nearest])
    return image, text, labels


SPACING = "print"  # --spacing
SLOTS = 1  # --dense-slots
BATCH = 32  # --batch
PAGE_CHARS = "0123456789-*MZ"  # the characters of both forms' patient ids


def page(rng: random.Random):
    """A generated prescription page (a fresh seed from rng) and its patient id; pages whose id is null are redrawn."""
    from vlmsweep.data.build import render_sample

    while True:
        sample = render_sample(rng.randrange(1 << 30), rng.choice(["prescription_ko", "prescription_zh"]))
        if sample.target["patient_id"]:
            return sample.image, sample.target["patient_id"], torch.zeros(0)


def batch(processor, rng: random.Random, n: int, scale: float):
    images, texts, labels = zip(*((page(rng) if SPACING == "page" else line(rng, scale, SPACING)) for _ in range(n)))
    enc = processor(text=["<|vision_start|><|image_pad|><|vision_end|>"] * n, images=list(images), return_tensors="pt")
    return enc, texts, torch.stack(labels)


def vision_tokens(model, enc) -> torch.Tensor:
    out = model.model.visual(enc["pixel_values"], grid_thw=enc["image_grid_thw"])
    return out.pooler_output if hasattr(out, "pooler_output") else out


def optimizer_step(opt, loss: torch.Tensor, step: int, steps: int, lr: float, stage: str) -> None:
    """One AdamW step at the schedule's rate (30 warm-up steps, then cosine), the loss printed ten times a stage."""
    for g in opt.param_groups:
        g["lr"] = lr * min(1.0, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * step / steps))
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % max(1, steps // 10) == 0:
        print(f"{stage} step {step}: loss {loss.item():.3f}", flush=True)


def dense(model, processor, steps: int, scale: float, lr: float, seed: int) -> dict:
    head = torch.nn.Linear(model.config.text_config.hidden_size, 11 * SLOTS)
    params = list(model.model.visual.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    for step in range(steps):
        enc, _, labels = batch(processor, rng, BATCH, scale)
        loss = torch.nn.functional.cross_entropy(head(vision_tokens(model, enc)).reshape(-1, 11), labels.reshape(-1))
        optimizer_step(opt, loss, step, steps, lr, "dense")
    with torch.no_grad():
        enc, _, labels = batch(processor, random.Random(10_000 + seed), 64, scale)
        pred, y = head(vision_tokens(model, enc)).reshape(-1, 11).argmax(-1), labels.reshape(-1)
        shown = y != 10
    return {"dense.digit_accuracy": (pred[shown] == y[shown]).float().mean().item(), "dense.tokens": int(shown.sum())}


def end_to_end(model, processor, steps: int, scale: float, lr: float, seed: int) -> dict:
    tok = processor.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    chars = PAGE_CHARS if SPACING == "page" else CHARS
    vocab = [tok.convert_tokens_to_ids(c) for c in chars] + [eos]
    row = {v: i for i, v in enumerate(vocab)}
    emb = model.get_input_embeddings()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def hidden(enc, answer: torch.Tensor) -> torch.Tensor:
        ids = torch.cat([enc["input_ids"], answer], 1)
        mm = torch.cat([enc["mm_token_type_ids"], torch.zeros_like(answer)], 1)
        return model.model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm,
                           pixel_values=enc["pixel_values"], image_grid_thw=enc["image_grid_thw"]).last_hidden_state

    rng = random.Random(seed)
    for step in range(steps):
        enc, texts, _ = batch(processor, rng, BATCH, scale)
        width = max(map(len, texts)) + 1
        answer = torch.tensor([[tok.convert_tokens_to_ids(c) for c in t] + [eos] * (width - len(t)) for t in texts])
        h = hidden(enc, answer)[:, enc["input_ids"].shape[1] - 1:-1]
        logits = h @ emb.weight[vocab].T
        target = torch.tensor([[row[t] for t in r] for r in answer.tolist()])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), target.reshape(-1))
        optimizer_step(opt, loss, step, steps, lr, "end_to_end")
    exact = right = total = 0
    with torch.no_grad():
        enc, texts, _ = batch(processor, random.Random(10_000 + seed), 64, scale)
        answer = torch.zeros((len(texts), 0), dtype=torch.long)
        for _ in range(16 if SPACING != "page" else 15):
            nxt = (hidden(enc, answer)[:, -1] @ emb.weight[vocab].T).argmax(-1)
            answer = torch.cat([answer, torch.tensor(vocab)[nxt][:, None]], 1)
        for t, ids in zip(texts, answer.tolist()):
            read = "".join(chars[vocab.index(i)] for i in (ids[: ids.index(eos)] if eos in ids else ids))
            exact += read == t
            right += sum(a == b for a, b in zip(read, t))
            total += len(t)
    figures = {"end_to_end.exact_match": exact / len(texts), "end_to_end.char_accuracy": right / total,
               "end_to_end.final_loss": loss.item()}
    if SPACING == "page":  # what a reader of no page scores: each position's commonest character over 512 training ids
        ids = [page(random.Random(20_000 + i))[1] for i in range(512)]
        common = [max(chars, key=[i[k] for i in ids if len(i) > k].count) for k in range(max(map(len, ids)))]
        figures["end_to_end.char_accuracy_of_no_page"] = sum(a == b for t in texts for a, b in zip(common, t)) / total
    return figures


def main() -> None:
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    from vlmsweep.config import visual_tokens_to_pixels
    from vlmsweep.model.tiny import ensure_embedded_model
    from vlmsweep.recipes.warmup import machine, reproducible

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probe", choices=["end_to_end", "dense", "two_stage", "page", "all"], default="all")
    ap.add_argument("--tokens", type=int, default=256, help="page: the visual-token budget of the pages (a run's max_pixels)")
    ap.add_argument("--batch", type=int, default=32, help="samples per step")
    ap.add_argument("--scale", type=float, default=0.448, help="page scale (0.448: an A4 form at 256 visual tokens)")
    ap.add_argument("--steps", type=int, default=2000, help="steps per stage, each of --batch samples")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spacing", choices=["print", "token", "half"], default="print",
                    help="token: one digit per visual-token column, half: two (diagnostics of the read-out)")
    ap.add_argument("--dense-slots", type=int, default=1,
                    help="the vision stage's labels: 1, the digit nearest each token's centre; K > 1, every digit, in "
                         "the K-th of the token its centre falls in (a per-glyph position signal; where two centres share a "
                         "slot the later one is kept: 3%% of the digits at print size with K=3)")
    ap.add_argument("--llm-layers", type=int, default=2,
                    help="LLM decoder layers (the replica has 2; more: a fresh random replica that deep)")
    ap.add_argument("--cache", type=Path, default=Path("~/.cache/vlmsweep").expanduser())
    args = ap.parse_args()
    global SPACING, SLOTS, BATCH
    SPACING, SLOTS, BATCH = ("page" if args.probe == "page" else args.spacing), args.dense_slots, args.batch
    raw = ensure_embedded_model("tiny", args.cache)
    processor = AutoProcessor.from_pretrained(str(raw))
    processor.image_processor.max_pixels = (visual_tokens_to_pixels(args.tokens) if args.probe == "page"
                                            else CANVAS[0] * CANVAS[1])
    probes = ["end_to_end", "dense", "two_stage"] if args.probe == "all" else [args.probe]
    result: dict = {"scale": args.scale, "spacing": SPACING, "tokens": args.tokens, "batch": args.batch, "llm_layers": args.llm_layers, "dense_slots": args.dense_slots, "steps": args.steps, "lr": args.lr, "seed": args.seed, "machine": machine()}
    with reproducible(2):
        for probe in probes:
            torch.manual_seed(args.seed)
            model = Qwen2VLForConditionalGeneration.from_pretrained(str(raw), dtype=torch.float32)
            if args.llm_layers != model.config.text_config.num_hidden_layers:  # the same replica with a deeper LLM
                config = model.config
                config.text_config.num_hidden_layers = config.text_config.max_window_layers = args.llm_layers
                config.text_config.layer_types = ["full_attention"] * args.llm_layers
                torch.manual_seed(args.seed)
                model = Qwen2VLForConditionalGeneration(config)
            started = time.perf_counter()
            if probe in ("dense", "two_stage"):
                figures = dense(model, processor, args.steps, args.scale, args.lr, args.seed)
                result |= {f"{probe}.{k}": v for k, v in figures.items()} if probe == "two_stage" else figures
            if probe in ("end_to_end", "two_stage", "page"):
                figures = end_to_end(model, processor, args.steps, args.scale, args.lr, args.seed)
                result |= {f"{probe}.{k}": v for k, v in figures.items()} if probe in ("two_stage", "page") else figures
            result[f"{probe}.seconds"] = round(time.perf_counter() - started, 1)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
