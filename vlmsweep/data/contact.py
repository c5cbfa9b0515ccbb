"""Contact sheet: a grid of thumbnails with id and domains, to eyeball a rendered dataset."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from .fonts import font
from .images import load_image
from .record import Record


def contact_sheet(records: list[Record], path: Path, cols: int = 6, thumb: tuple[int, int] = (240, 340)) -> Path:
    """Save a PNG grid of up to 48 records; captions show id, asked domain and image domain."""
    records = list(records)[:48]
    if not records:
        raise ValueError("contact sheet of no records")
    cols = min(cols, len(records))
    rows = (len(records) + cols - 1) // cols
    tw, th = thumb
    sheet = Image.new("RGB", (cols * (tw + 10) + 10, rows * (th + 44) + 10), (200, 200, 200))
    draw = ImageDraw.Draw(sheet)
    f = font("en", 12)
    for i, rec in enumerate(records):
        r, c = divmod(i, cols)
        x, y = 10 + c * (tw + 10), 10 + r * (th + 44)
        im = load_image(rec.image, max_pixels=4 * tw * th)
        im.thumbnail((tw, th))
        sheet.paste(im, (x + (tw - im.width) // 2, y))
        draw.text((x, y + th + 4), rec.id, font=f, fill=(0, 0, 0))
        tag = rec.domain if rec.domain == rec.image_domain else f"{rec.domain} <- {rec.image_domain} (hard neg.)"
        draw.text((x, y + th + 20), tag, font=f, fill=(120, 0, 0) if rec.domain != rec.image_domain else (0, 0, 90))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
