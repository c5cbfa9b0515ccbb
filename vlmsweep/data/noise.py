"""Seeded scan noise: skew, blur, low contrast, shadow, scan lines and JPEG quality; never changes the text."""

from __future__ import annotations

import random

from PIL import Image, ImageChops, ImageDraw

NOISE_LEVELS = ("none", "light", "scan")


def apply(image: Image.Image, rng: random.Random, level: str) -> tuple[Image.Image, int]:
    """(noisy image, JPEG quality to save it with): the JPEG artefacts come from the save itself."""
    if level not in NOISE_LEVELS:
        raise ValueError(f"noise={level!r}: expected one of {NOISE_LEVELS}")
    if level == "none":
        return image, 92
    scan = level == "scan"
    paper = image.getpixel((2, 2))
    angle = rng.uniform(-1.6, 1.6) if scan else rng.uniform(-0.4, 0.4)
    blur = rng.uniform(0.55, 0.8) if scan else rng.uniform(0.7, 0.85)
    # Skew uses nearest-neighbour rotation (5x cheaper than bilinear; the small stair-steps it leaves are
    # what a cheap scanner's deskew leaves too). Blur is the scanner's resolution loss: box down-sample,
    # skew there, bilinear up-sample (which also smooths the steps): ~4x cheaper than GaussianBlur.
    if rng.random() < (0.6 if scan else 0.3):
        w, h = image.size
        small = image.resize((int(w * blur), int(h * blur)), Image.BOX)
        if abs(angle) > 0.05:
            small = small.rotate(angle, resample=Image.NEAREST, fillcolor=paper)
        image = small.resize((w, h), Image.BILINEAR)
    elif abs(angle) > 0.05:
        image = image.rotate(angle, resample=Image.NEAREST, fillcolor=paper)
    # Shadow and scan lines form one grey multiplier page, applied in one C-level multiply.
    mult = None
    if scan and rng.random() < 0.4:  # shadow from a curled page or a hand: a dark gradient on one side
        depth = rng.uniform(0.15, 0.4)
        reach = rng.uniform(0.2, 0.5)
        ramp = Image.linear_gradient("L").point(lambda v: int(255 * (1 - depth * max(0.0, 1 - v / 255 / reach))))
        ramp = ramp.rotate(rng.choice([0, 90, 180, 270]))
        mult = ramp.resize(image.size, Image.BILINEAR)
    if scan and rng.random() < 0.35:  # scanner lines: thin streaks along the feed direction
        mult = mult or Image.new("L", image.size, 255)
        draw = ImageDraw.Draw(mult)
        w, h = image.size
        for _ in range(rng.randint(1, 4)):
            x = rng.randrange(w)
            draw.rectangle((x, 0, x + rng.randint(0, 1), h), fill=int(255 * rng.uniform(0.55, 0.85)))
        for _ in range(rng.randint(0, 2)):
            y = rng.randrange(h)
            draw.line((0, y, w, y), fill=int(255 * rng.uniform(0.6, 0.9)))
    if mult is not None:
        image = ImageChops.multiply(image, mult.convert("RGB"))
    if scan and rng.random() < 0.4:  # low contrast: faded toner, grey paper (a lookup table, not float math)
        lo, hi = rng.uniform(40, 90), rng.uniform(205, 240)
        image = image.point([int(lo + v * (hi - lo) / 255) for v in range(256)] * 3)
    quality = rng.randint(45, 85) if scan else rng.randint(75, 90)
    return image, quality
