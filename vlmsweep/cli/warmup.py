"""`python -m vlmsweep.recipes.warmup [--ship]`: build the warmed embedded model by its recipe."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from vlmsweep.recipes.warmup import Recipe, ensure_built_model, input_rows


def main(argv: list[str] | None = None) -> None:
    """`python -m vlmsweep.recipes.warmup`: build the warmed model by today's recipe into the cache (reused when built
    before) and print its folder and card; with --ship, write it as the package's shipped model too."""
    import argparse

    from vlmsweep.model.shipped import SHIPPED_DIR, pack

    parser = argparse.ArgumentParser(prog="python -m vlmsweep.recipes.warmup", description=main.__doc__)
    parser.add_argument("--cache", default=os.environ.get("VLMSWEEP_CACHE", "~/.cache/vlmsweep"),
                        help="cache folder (default: $VLMSWEEP_CACHE or ~/.cache/vlmsweep, as a run's cache_dir)")
    parser.add_argument("--ship", nargs="?", const=SHIPPED_DIR, type=Path, metavar="DIR",
                        help=f"write the build as the shipped model into DIR (default: the package's, {SHIPPED_DIR})")
    parser.add_argument("--ocr-hint", choices=("none", "tesseract", "rapidocr"), default="none",
                        help="build with the page's OCR text in every prompt (a reader's recipe, docs/ocr-hint.md); "
                             "not for --ship: the shipped model is the default recipe's")
    args = parser.parse_args(argv)
    if args.ship and args.ocr_hint != "none":
        parser.error("--ship writes the default model, which is built without a hint: drop --ocr-hint")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    folder = ensure_built_model(args.cache, Recipe(ocr_hint=args.ocr_hint))
    print(f"warmed model: {folder}")
    print((folder / "README.md").read_text(encoding="utf-8"))
    if args.ship:
        figures = pack(folder, input_rows(folder, Recipe()), args.ship)
        print(f"shipped into {args.ship}: {figures['shipped.mib']:.2f} MiB, {figures['shipped.rows']:.0f} embedding rows")
