"""CJK fonts for the renderers: Noto Sans CJK from the `manimgx-fonts-cjk` wheel, loaded once per size."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from PIL import ImageFont

# Faces of NotoSansCJK-VF.otf.ttc: 0 JP, 1 KR, 2 SC, 3 TC, 4 HK.
FACE = {"ko": 1, "zh": 2, "en": 1}


@lru_cache(maxsize=1)
def font_path() -> Path:
    try:
        path = Path(str(resources.files("manimgx_fonts_cjk").joinpath("NotoSansCJK-VF.otf.ttc")))
    except ModuleNotFoundError:
        raise RuntimeError(
            "the CJK font is missing: `pip install manimgx-fonts-cjk` (it ships NotoSansCJK-VF.otf.ttc)"
        ) from None
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall `manimgx-fonts-cjk`")
    return path


@lru_cache(maxsize=256)
def font(lang: str, size: int, weight: str = "Regular") -> ImageFont.FreeTypeFont:
    """A cached font object; `weight` names an instance of the variable font (Regular, Medium, Bold...)."""
    f = ImageFont.truetype(str(font_path()), size, index=FACE[lang], layout_engine=ImageFont.Layout.BASIC)
    # The variable font defaults to its Thin instance, far lighter than any printed form.
    f.set_variation_by_name(weight)
    return f


@lru_cache(maxsize=4)
def cmap(lang: str) -> frozenset[int]:
    """Code points the face maps to a glyph (fontTools), for the coverage test."""
    from fontTools.ttLib import TTFont

    tt = TTFont(str(font_path()), fontNumber=FACE[lang], lazy=True)
    return frozenset(tt.getBestCmap())
