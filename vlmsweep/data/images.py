"""Image loading for every dataset: EXIF orientation, any mode to RGB, early downscaling of huge scans."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..files import not_a_regular_file


class ImageLoadError(ValueError):
    """An image that cannot be read; the message names the file."""


# Qwen2-VL's image processor (smart_resize) refuses an image whose longer side is more than 200
# times its shorter side with a bare ValueError; we check it first so the message names the file.
MAX_ASPECT_RATIO = 200


def check_image(path: Path, max_pixels: int = 1 << 22) -> tuple[int, int]:
    """(width, height) of an image the processor can take; ImageLoadError naming the file otherwise.

    Decodes the whole file (a truncated JPEG fails here, not in the middle of training), at reduced
    scale for huge scans, and checks the aspect-ratio limit of the Qwen2-VL processor.
    """
    return check_size(load_image(path, max_pixels=max_pixels), path)


def check_size(im: Image.Image, path: Path) -> tuple[int, int]:
    """(width, height) of a loaded image the processor can take; ImageLoadError naming the file otherwise."""
    w, h = im.size
    if min(w, h) < 1:
        raise ImageLoadError(f"{path}: empty image ({w}x{h} pixels)")
    if max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
        raise ImageLoadError(
            f"{path}: aspect ratio {max(w, h) / min(w, h):.0f}:1 ({w}x{h} pixels) exceeds the Qwen2-VL "
            f"processor's limit of {MAX_ASPECT_RATIO}:1; crop or pad the image"
        )
    return w, h


def load_image(path: Path, max_pixels: int | None = None) -> Image.Image:
    """An RGB image with at most `max_pixels` pixels (None: full size).

    Pass a cap a few times the processor's budget (e.g. 4 * max_pixels): a 4961x7016 SROIE scan is
    then decoded at reduced scale (JPEG draft mode decodes 1/2, 1/4 or 1/8 directly) instead of
    holding ~100 MB of pixels, and the processor still does the final resize.
    """
    path = Path(path)
    problem = not_a_regular_file(path)  # by stat, before any open(): a FIFO would block it forever
    if problem == "not found":
        raise ImageLoadError(f"{path}: image file not found")
    if problem:
        raise ImageLoadError(f"{path}: {problem}; an image must be a regular file")
    try:
        im = Image.open(path)
        if max_pixels is not None and im.format == "JPEG":
            w, h = im.size
            if w * h > max_pixels:
                s = math.sqrt(max_pixels / (w * h))
                im.draft("RGB", (max(1, int(w * s)), max(1, int(h * s))))  # never smaller than asked
        im.load()
        im = ImageOps.exif_transpose(im)
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(f"{path}: truncated or corrupt image ({e})") from None
    im = to_rgb(im)
    if max_pixels is not None and im.width * im.height > max_pixels:
        s = math.sqrt(max_pixels / (im.width * im.height))
        im = im.resize((max(1, int(im.width * s)), max(1, int(im.height * s))), Image.BICUBIC, reducing_gap=2.0)
    return im


def to_rgb(im: Image.Image) -> Image.Image:
    """CMYK, palette, grey, alpha and 16-bit images as 8-bit RGB; transparency composited on white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        # 16-bit scans use the 0..65535 range; PIL's own convert would clip them to white.
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, 1, L
