"""Drawing helpers shared by the form renderers: text in cells, grid lines, seals, seeded value pickers."""

from __future__ import annotations

import math
import random

from PIL import Image, ImageChops, ImageDraw

from .fonts import font

INK = (24, 24, 28)
RED = (200, 30, 40)
CONFUSABLE_DIGITS = "5860171"  # 5/8, 6/0, 1/7 pairs: read wrong most often in small print


class Canvas:
    """An RGB page; every string drawn is recorded per language so a test can check glyph coverage."""

    drawn: dict[str, set[str]] | None = None  # class-level trace of characters, enabled by tests only
    drawn_strings: list[str] | None = None  # class-level trace of whole strings, enabled by tests only
    drawn_boxes: list[tuple[float, float, float, str]] | None = None  # class-level trace of (vertical centre, height,
    #   left edge, string) of every string drawn: the page's own text in layout (vlmsweep.data.layout.page_text)

    def __init__(self, width: int, height: int, lang: str, paper=(255, 255, 255)):
        self.image = Image.new("RGB", (width, height), paper)
        self.draw = ImageDraw.Draw(self.image)
        self.lang = lang
        self.width, self.height = width, height

    def text(self, xy, s: str, size: int = 16, weight: str = "Regular", anchor: str = "la",
             fill=INK, lang: str | None = None) -> None:
        if not s:
            return
        lang = lang or self.lang
        if Canvas.drawn is not None:
            Canvas.drawn.setdefault(lang, set()).update(s)
        if Canvas.drawn_strings is not None:
            Canvas.drawn_strings.append(s)
        if Canvas.drawn_boxes is not None:
            x0, y0, _, y1 = self.draw.textbbox(xy, s, font=font(lang, size, weight), anchor=anchor)
            Canvas.drawn_boxes.append(((y0 + y1) / 2, y1 - y0, x0, s))
        self.draw.text(xy, s, font=font(lang, size, weight), fill=fill, anchor=anchor)

    def text_width(self, s: str, size: int = 16, weight: str = "Regular", lang: str | None = None) -> float:
        return font(lang or self.lang, size, weight).getlength(s)

    def box(self, x0, y0, x1, y1, width: int = 1, fill=None, outline=INK) -> None:
        self.draw.rectangle((x0, y0, x1, y1), outline=outline, width=width, fill=fill)

    def cell(self, x0, y0, x1, y1, s: str | None = None, size: int = 15, weight: str = "Regular",
             align: str = "center", fill=None, pad: int = 8, ink=INK) -> None:
        """A bordered cell with (possibly multi-line) text, centred vertically."""
        self.box(x0, y0, x1, y1, fill=fill)
        if not s:
            return
        lines = s.split("\n")
        step = size + 4
        top = (y0 + y1) / 2 - step * (len(lines) - 1) / 2
        for i, line in enumerate(lines):
            y = top + i * step
            if align == "center":
                self.text(((x0 + x1) / 2, y), line, size, weight, anchor="mm", fill=ink)
            elif align == "right":
                self.text((x1 - pad, y), line, size, weight, anchor="rm", fill=ink)
            else:
                self.text((x0 + pad, y), line, size, weight, anchor="lm", fill=ink)

    def hline(self, x0, x1, y, width: int = 1, fill=INK, dash: int = 0) -> None:
        if not dash:
            self.draw.line((x0, y, x1, y), fill=fill, width=width)
            return
        for x in range(int(x0), int(x1), dash * 2):
            self.draw.line((x, y, min(x + dash, x1), y), fill=fill, width=width)

    def square_seal(self, cx, cy, size: int, chars: str, rng: random.Random) -> None:
        """A red square seal (직인) stamped over the page: drawn on a layer and multiplied in."""
        layer = Image.new("L", (size, size), 0)
        d = ImageDraw.Draw(layer)
        d.rectangle((2, 2, size - 3, size - 3), outline=255, width=max(3, size // 18))
        n = len(chars)
        cols = 2 if n >= 4 else 1
        rows = math.ceil(n / cols)
        fs = int(size * 0.78 / max(rows, cols))
        f = font(self.lang, fs, "Bold")
        if Canvas.drawn is not None:
            Canvas.drawn.setdefault(self.lang, set()).update(chars)
        for i, ch in enumerate(chars):
            c, r = divmod(i, rows)  # vertical reading order, right column first
            x = size * (cols - c - 0.5) / cols
            y = size * (r + 0.5) / rows
            d.text((x, y), ch, font=f, fill=255, anchor="mm")
        self._stamp(layer, cx, cy, rng)

    def round_seal(self, cx, cy, radius: int, top: str, bottom: str, rng: random.Random) -> None:
        """A red round seal (印章): ring, star and text, the way Chinese institutions stamp a form."""
        size = radius * 2
        layer = Image.new("L", (size, size), 0)
        d = ImageDraw.Draw(layer)
        d.ellipse((2, 2, size - 3, size - 3), outline=255, width=max(3, radius // 12))
        star = [(radius + radius * 0.28 * math.cos(math.pi / 2 + k * 4 * math.pi / 5),
                 radius - radius * 0.28 * math.sin(math.pi / 2 + k * 4 * math.pi / 5)) for k in range(5)]
        d.polygon(star, fill=255)
        if Canvas.drawn is not None:
            Canvas.drawn.setdefault(self.lang, set()).update(top + bottom)
        # Text along the upper arc, one glyph at a time (PIL has no text-on-path).
        fs = max(10, int(radius * 0.26))
        f = font(self.lang, fs, "Bold")
        n = len(top)
        span = min(math.pi * 1.2, n * 0.42)
        for i, ch in enumerate(top):
            a = math.pi / 2 + span / 2 - span * (i + 0.5) / n
            r = radius * 0.72
            glyph = Image.new("L", (fs + 6, fs + 6), 0)
            ImageDraw.Draw(glyph).text(((fs + 6) / 2, (fs + 6) / 2), ch, font=f, fill=255, anchor="mm")
            glyph = glyph.rotate(math.degrees(a - math.pi / 2), resample=Image.BILINEAR)
            x, y = radius + r * math.cos(a), radius - r * math.sin(a)
            layer.paste(255, (int(x - (fs + 6) / 2), int(y - (fs + 6) / 2)), glyph)
        d.text((radius, radius + radius * 0.55), bottom, font=font(self.lang, int(fs * 0.9), "Bold"),
               fill=255, anchor="mm")
        self._stamp(layer, cx, cy, rng)

    def _stamp(self, layer: Image.Image, cx, cy, rng: random.Random) -> None:
        layer = layer.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR)
        # Uneven ink: a seal never prints solid.
        strength = rng.uniform(0.55, 0.85)
        mask = layer.point(lambda v: int(v * strength))
        red = Image.new("RGB", layer.size, (rng.randint(185, 215), rng.randint(20, 50), rng.randint(30, 60)))
        x, y = int(cx - layer.width / 2), int(cy - layer.height / 2)
        region = self.image.crop((x, y, x + layer.width, y + layer.height))
        inked = ImageChops.multiply(region, red)  # multiply keeps the text under the seal readable
        self.image.paste(inked, (x, y), mask)


def digits(rng: random.Random, k: int, focus: str | None) -> str:
    """k random digits; the digits focus draws mostly from the confusable pairs."""
    if focus == "digits":
        return "".join(rng.choice(CONFUSABLE_DIGITS) if rng.random() < 0.85 else rng.choice("0123456789")
                       for _ in range(k))
    return "".join(rng.choice("0123456789") for _ in range(k))


def fmt_num(x: float | int) -> str:
    """A number as printed, matching its JSON form: 1 not 1.0, 0.5 stays 0.5."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def as_number(x: float) -> float | int:
    return int(x) if float(x).is_integer() else float(x)


# Focus "short": lists (items, medications, diagnosis codes) of at most this many entries: short answers whose
# end is easy to predict (the Instruct warm-up's documents, vlmsweep.recipes.warmup).
SHORT_LIST = 2


def list_size(n: int, focus: str | None) -> int:
    """A list's drawn length, or at most SHORT_LIST under the focus "short"."""
    return min(n, SHORT_LIST) if focus == "short" else n


def maybe_null(rng: random.Random, value, p: float):
    return None if rng.random() < p else value
