"""`python -m vlmsweep.predict FOLDER IMAGES...`: new images into JSON lines with a trained folder."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from vlmsweep import prompts
from vlmsweep.pipeline.predict import (InputError, Item, collect, default_groups, per_domain_folder, predict,
                                       predict_per_domain, route_items)

log = logging.getLogger("vlmsweep.predict")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vlmsweep.predict",
        description="Read new images into JSON with a trained adapter (a run's adapter/ folder) or a model folder.",
    )
    p.add_argument("folder", help="a run's adapter/ folder, a model folder (python -m vlmsweep.export), or a "
                   "per-domain run's adapters/ folder (adapters=per_domain)")
    p.add_argument("images", nargs="+", help="image files, folders of images, glob patterns, or .jsonl manifests")
    p.add_argument("--domain", choices=sorted(prompts.SCHEMA_OF_DOMAIN),
                   help="the domain to ask for every image without one in its manifest line")
    p.add_argument("--decoding", choices=("json_schema", "free"), default="json_schema",
                   help="json_schema (default): answers constrained to the folder's schema (xgrammar); free: unconstrained")
    p.add_argument("--routing", choices=("known", "model"), default="known",
                   help="known (default): each image's domain (manifest line or --domain) decides; model: the base model "
                        "classifies each page among the group names (prescriptions, receipts): an image with no domain "
                        "is asked with that group's schema, and a per-domain folder answers with that group's adapter")
    p.add_argument("--out", help="write the JSON lines to this file (default: standard output)")
    p.add_argument("--summary", choices=("ko", "zh", "en"), help="add a template summary of each parsed answer")
    p.add_argument("--batch-size", type=int, default=8, help="images per generate call (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=384, help="answer budget in tokens (default 384)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s][%(levelname)s] - %(message)s", stream=sys.stderr)
    try:
        if args.batch_size < 1 or args.max_new_tokens < 1:
            raise InputError("--batch-size and --max-new-tokens must be at least 1")
        items, left_out = collect(args.images)
        lacking = [i.id for i in items if i.domain is None and args.domain is None]
        if lacking and args.routing != "model":
            raise InputError(
                f"no domain for {len(lacking)} image(s) ({', '.join(lacking[:3])}{', ...' if len(lacking) > 3 else ''}): "
                f"pass --domain (one of {', '.join(sorted(prompts.SCHEMA_OF_DOMAIN))}), give a manifest with a "
                "domain per line, or pass --routing model to have the base model tell prescriptions from receipts "
                "page by page"
            )
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if left_out:
        log.warning("left out %d file(s) whose extension is not an image's: %s", len(left_out), ", ".join(left_out))
    per_domain = per_domain_folder(args.folder)
    if per_domain is not None:
        return main_per_domain(args, per_domain, items)
    from vlmsweep.model.inference import open_folder

    try:
        opened = open_folder(args.folder)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    constrained = args.decoding == "json_schema"
    if constrained:
        from vlmsweep.evaluate import check_schemas_compile
        from vlmsweep.evaluate.generate import vocab_size_of

        check_schemas_compile(opened.processor.tokenizer, vocab_size_of(opened.model), opened.settings.schemas)
    started = time.perf_counter()
    routes, groups = None, None
    if args.routing == "model":  # only the images with no domain of their own, or from --domain, are routed
        groups = default_groups()
        routes = route_items(opened, items, groups, [i.domain is None and args.domain is None for i in items])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    target = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        counts = predict(opened, items, domain=args.domain, constrained=constrained, batch_size=args.batch_size,
                         max_new_tokens=args.max_new_tokens, summary_lang=args.summary, out=target,
                         routes=routes, groups=groups)
    finally:
        if args.out:
            target.close()
    where = args.out or "standard output"
    routed = f"; {sum(r is not None for r in routes)} routed by the base model" if routes is not None else ""
    print(f"vlmsweep.predict: {counts['lines']} lines to {where} ({counts['errors']} unreadable, "
          f"{counts['schema_valid']} schema-valid{routed}) in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


def main_per_domain(args, folder: Path, items: list[Item]) -> int:
    started = time.perf_counter()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    target = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        counts = predict_per_domain(folder, items, domain=args.domain, how=args.routing,
                                    constrained=args.decoding == "json_schema", batch_size=args.batch_size,
                                    max_new_tokens=args.max_new_tokens, summary_lang=args.summary, out=target)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if args.out:
            target.close()
    print(f"vlmsweep.predict: {counts['lines']} lines to {args.out or 'standard output'} ({counts['errors']} unreadable, "
          f"{counts['schema_valid']} schema-valid; per-domain adapters, routing {args.routing}) in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0
