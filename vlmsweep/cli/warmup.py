"""`python -m vlmsweep.recipes.warmup [--reader] [--ship]`: build the warmed embedded model (or the reader) by its recipe."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from vlmsweep.recipes.warmup import READER, Recipe, ensure_built_model, input_rows


def main(argv: list[str] | None = None) -> None:
    """`python -m vlmsweep.recipes.warmup`: build the warmed model by today's recipe into the cache (reused when built
    before) and print its folder and card; with --reader, the reader (model=tiny_reader) instead; with --ship, write
    the build as the package's shipped model too."""
    import argparse

    from vlmsweep.model.shipped import READER_DIR, REBUILD, SHIPPED_DIR, pack

    parser = argparse.ArgumentParser(prog="python -m vlmsweep.recipes.warmup", description=main.__doc__)
    parser.add_argument("--cache", default=os.environ.get("VLMSWEEP_CACHE", "~/.cache/vlmsweep"),
                        help="cache folder (default: $VLMSWEEP_CACHE or ~/.cache/vlmsweep, as a run's cache_dir)")
    parser.add_argument("--ship", nargs="?", const=True, type=Path, metavar="DIR",
                        help=f"write the build as the shipped model into DIR (default: the package's, {SHIPPED_DIR}, "
                             f"or with --reader {READER_DIR})")
    parser.add_argument("--reader", action="store_true",
                        help="build the reader (model=tiny_reader): every prompt holds the page's text, every training "
                             "sample is a new document (about an hour on 2 cores; docs/ocr-hint.md)")
    parser.add_argument("--ocr-hint", choices=("none", "tesseract", "rapidocr"), default="none",
                        help="build the default recipe with each training page's OCR text in every prompt (the engine "
                             "reads every page: a recipe to compare with --reader's, docs/ocr-hint.md); not for --ship")
    args = parser.parse_args(argv)
    if args.ocr_hint != "none" and (args.ship or args.reader):
        parser.error("--ocr-hint builds a recipe to compare, never shipped; --reader is the shipped reader's recipe: "
                     "drop --ocr-hint")
    recipe = READER if args.reader else Recipe(ocr_hint=args.ocr_hint)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    folder = ensure_built_model(args.cache, recipe)
    print(f"{'reader' if args.reader else 'warmed model'}: {folder}")
    print((folder / "README.md").read_text(encoding="utf-8"))
    if args.ship:
        out = args.ship if isinstance(args.ship, Path) else READER_DIR if args.reader else SHIPPED_DIR
        figures = pack(folder, input_rows(folder, recipe), out,
                       "python -m vlmsweep.recipes.warmup --reader --ship" if args.reader else REBUILD)
        print(f"shipped into {out}: {figures['shipped.mib']:.2f} MiB, {figures['shipped.rows']:.0f} embedding rows")
