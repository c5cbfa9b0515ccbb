"""`python -m vlmsweep.predict FOLDER IMAGES...`: new images -> one JSON line each, with the folder's own settings.

FOLDER is a run's adapter/ folder, a model folder (an export), or a per-domain run's adapters/ folder (each image
goes to its group's adapter: by its domain, or with --routing model by the router of vlmsweep/pipeline/routing.py); IMAGES are image files, folders of images,
glob patterns, or JSON Lines manifests whose lines need only `image` (`id`, `domain` and a `target`, which is
ignored, are optional). An image's domain comes from its manifest line, else --domain, else (--routing model) from
the router: the base model tells a prescription from a receipt, and the page is asked with that group's schema. Each image gets one line: id, image, domain, the parsed object, whether it is valid
against the folder's schema, the raw text, the stop reason, timing; an image that cannot be read gets a line
with its error, never a crash. Generation is evaluation's (batched, left-padded, JSON stop rule, xgrammar).
"""

from __future__ import annotations

import glob
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence

from vlmsweep import prompts
from vlmsweep.data.record import Record

log = logging.getLogger("vlmsweep.pipeline.predict")
# bitsandbytes' CPU import logs a kernel-download warning a user can do nothing about (see vlmsweep/cli/main.py)
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

GLOB_CHARS = "*?["


class InputError(ValueError):
    """A bad command-line input (no match for a pattern, a bad manifest line): the message names it."""


@dataclass(frozen=True)
class Item:
    id: str
    image: Path
    domain: str | None  # from the manifest line; None: --domain decides, else the router (--routing model)


def image_suffixes() -> set[str]:
    from PIL import Image

    return {s.lower() for s in Image.registered_extensions()}


def read_predict_manifest(path: Path) -> list[Item]:
    """A manifest for prediction: the training manifest's format with `target` optional (and ignored).
    Hand-written beside data.manifest because that reader requires and validates targets."""
    items, seen = [], set()
    for lineno, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("image"), str) or not obj["image"]:
            raise InputError(f'{where}: a line needs at least {{"image": "PATH"}} (relative to the manifest\'s folder)')
        domain = obj.get("domain")
        if domain is not None and domain not in prompts.SCHEMA_OF_DOMAIN:
            raise InputError(f"{where}: unknown domain {domain!r}; expected one of {sorted(prompts.SCHEMA_OF_DOMAIN)}")
        sid = str(obj.get("id") or obj["image"])
        if sid in seen:
            raise InputError(f"{where}: duplicate id {sid!r}")
        seen.add(sid)
        items.append(Item(id=sid, image=(path.parent / obj["image"]), domain=domain))
    if not items:
        raise InputError(f"{path}: the manifest has no lines")
    return items


def collect(sources: Sequence[str]) -> tuple[list[Item], list[str]]:
    """The images to read, in command-line order (folders and patterns sorted), and what was left out of
    folders (files whose extension is not an image's), to be reported. A path that does not exist is kept:
    its line says so."""
    suffixes = image_suffixes()
    items: list[Item] = []
    left_out: list[str] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.suffix.lower() in (".jsonl", ".json") and path.is_file():
            items += read_predict_manifest(path)
        elif path.is_dir():
            # not only regular files: a FIFO named like an image is a line that refuses it by name, not a silent gap
            files = sorted(p for p in path.iterdir() if not p.is_dir() and not p.name.startswith("."))
            left_out += [str(p) for p in files if p.suffix.lower() not in suffixes]
            items += [Item(str(p), p, None) for p in files if p.suffix.lower() in suffixes]
        elif any(c in source for c in GLOB_CHARS) and not path.exists():
            matches = sorted(glob.glob(str(path), recursive=True))
            if not matches:
                raise InputError(f"{source}: the pattern matches no file")
            items += [Item(m, Path(m), None) for m in matches if not Path(m).is_dir()]
        else:
            items.append(Item(source, path, None))
    if not items:
        raise InputError(f"no images in {' '.join(sources)}")
    return items, left_out


def load_or_error(item: Item, max_pixels: int):
    """The image ready for the processor, or why it cannot be read (the file named)."""
    from vlmsweep.data.images import ImageLoadError, check_size, load_image

    try:
        image = load_image(item.image, max_pixels=4 * max_pixels)  # decode huge scans at reduced scale, as evaluation
        check_size(image, item.image)
        return image
    except ImageLoadError as e:
        return str(e)


def parse(raw: str, schema: dict) -> dict:
    """The answer's object (strict, else the first salvageable one) and whether it is valid against the schema."""
    from vlmsweep.evaluate.contract import salvage, schema_valid, strict_parse

    obj = strict_parse(raw)
    how = "strict" if obj is not None else None
    if obj is None:
        found = salvage(raw)
        obj, how = (found.obj, "salvaged") if found is not None else (None, "failed")
    return {"parsed": obj, "parse": how, "schema_valid": obj is not None and schema_valid(obj, schema)}


def summarise(line: dict, lang: str) -> None:
    from vlmsweep.pipeline import summary

    if line.get("parsed") is None:
        line["summary"], line["summary_unsupported"] = None, None
        return
    text = summary.render(line["parsed"], line["schema"], lang)
    line["summary"] = text
    line["summary_unsupported"] = summary.unsupported(text, line["parsed"], lang)  # [] : every value is the JSON's


def routed_domain(group: str, groups: dict[str, list[str]]) -> str:
    """The domain whose instruction and schema a page routed to `group` is asked with: the instruction depends on
    the schema only (prompts.instruction), so any of the group's domains words it; a group of two schemas cannot."""
    schemas = {prompts.schema_name(d) for d in groups[group]}
    if len(schemas) != 1:
        raise ValueError(f"adapter group {group} holds domains of {len(schemas)} schemas ({', '.join(sorted(schemas))}): "
                         "a page routed there has no one schema to be asked with; pass --domain")
    return groups[group][0]


def route_items(opened, items: Sequence[Item], groups: dict[str, list[str]], which: Sequence[bool]) -> list:
    """The router's Route for each item where `which` says so (None elsewhere, and for an unreadable image): the
    folder's base with its adapters off (a model folder routes with itself), asked among the group names."""
    from vlmsweep.pipeline import routing

    s = opened.settings
    routes: list[routing.Route | None] = [None] * len(items)
    for i, item in enumerate(items):
        image = load_or_error(item, s.max_pixels) if which[i] else "not routed"
        if not isinstance(image, str):
            routes[i] = routing.route_images(opened.model, opened.processor, [image], list(groups),
                                             min_pixels=s.min_pixels, max_pixels=s.max_pixels)[0]
    return routes


def default_groups() -> dict[str, list[str]]:
    """The groups a single folder routes among: adapters=per_domain's (prescriptions, receipts)."""
    from vlmsweep.config.compose import compose

    return {g: list(d) for g, d in compose(["adapters=per_domain"]).adapters.groups.items()}


def predict(opened, items: Sequence[Item], *, domain: str | None, constrained: bool, batch_size: int,
            max_new_tokens: int, summary_lang: str | None, out: IO[str], progress: bool = True,
            routes: Sequence | None = None, groups: dict[str, list[str]] | None = None) -> dict[str, int]:
    """Write one JSON line per item to `out`, batch by batch; returns counts (lines, errors, schema_valid). An item
    with no domain (its own or `domain`) is asked with the schema of the group its route (`routes`, `groups`) chose."""
    from tqdm import tqdm

    from vlmsweep.evaluate.generate import generate_batch

    s = opened.settings
    processor = opened.processor
    counts = {"lines": 0, "errors": 0, "schema_valid": 0}
    hinter = None
    if s.ocr_hint:  # trained with the page's OCR text in the prompt: asked the same way (vlmsweep.ocr.hint)
        from vlmsweep.ocr.hint import Hinter, engine_version

        asked = {it.domain or domain for it in items} - {None} or set(prompts.SCHEMA_OF_DOMAIN)
        hinter = Hinter(s.ocr_hint["engine"], s.ocr_hint["resolution"], Path(opened.cfg.cache_dir).expanduser(),
                        int(s.ocr_hint["max_tokens"]), lambda text: len(processor.tokenizer(text)["input_ids"]),
                        (s.min_pixels, s.max_pixels), engine_version(s.ocr_hint["engine"], asked))
    token_text: dict[int, str] = {}
    routes = list(routes) if routes is not None else [None] * len(items)
    bar = tqdm(total=len(items), unit="image", file=sys.stderr, disable=not progress or None)
    for b in range(0, len(items), batch_size):
        batch = items[b: b + batch_size]
        lines: list[dict] = []
        rows, texts, images, schemas = [], [], [], []
        for item, route in zip(batch, routes[b: b + batch_size]):
            used = item.domain or domain
            line = {"id": item.id, "image": str(item.image), "domain": used, "decoding": "json_schema" if constrained else "free"}
            if used is None and route is not None:  # routed: the group's schema, no domain claimed
                used = routed_domain(route.group, groups or {})
                line["route"] = {"model": route.group, "scores": route.scores, "by": "model"}
            line["schema"] = prompts.schema_name(used) if used else None
            lines.append(line)
            image = load_or_error(item, s.max_pixels)
            if isinstance(image, str):
                line |= {"parsed": None, "parse": None, "schema_valid": False, "raw": None, "stop_reason": None,
                         "error": image}
                log.warning("%s", image)
                continue
            rows.append(line)
            hint = None
            if hinter is not None:
                hint = hinter.text(Record(id=item.id, image=Path(item.image), domain=used, target={}, image_domain=used))
                line["ocr_hint"] = hint  # what the model read beside the image (None: the engine could not read it)
            texts.append(s.chat_text(processor, used, hint))
            images.append(image)
            schemas.append(s.schema_for(used))
        if rows:
            gens = generate_batch(opened.model, processor, texts, images, max_new_tokens=max_new_tokens,
                                  min_pixels=s.min_pixels, max_pixels=s.max_pixels,
                                  schemas=schemas if constrained else None, token_text=token_text,
                                  sample_ids=[r["id"] for r in rows])
            for line, g, schema in zip(rows, gens, schemas):
                line |= parse(g.text, schema)
                line |= {"raw": g.text, "stop_reason": g.stop_reason, "seconds": round(g.seconds, 4),
                         "visual_tokens": g.visual_tokens, "output_tokens": g.output_tokens, "error": None}
        for line in lines:
            if summary_lang and line["error"] is None:
                summarise(line, summary_lang)
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            counts["lines"] += 1
            counts["errors"] += line["error"] is not None
            counts["schema_valid"] += bool(line["schema_valid"])
        out.flush()
        bar.update(len(batch))
    bar.close()
    return counts


def per_domain_folder(folder: str) -> Path | None:
    """The adapters/ folder of a per-domain run (given itself or its run folder), else None."""
    from vlmsweep.pipeline import routing

    path = Path(folder).expanduser()
    for candidate in (path, path / "adapters"):
        if routing.read_routing(candidate) is not None:
            return candidate
    return None


def predict_per_domain(folder: Path, items: Sequence[Item], *, domain: str | None, how: str, constrained: bool,
                       batch_size: int, max_new_tokens: int, summary_lang: str | None, out: IO[str]) -> dict[str, int]:
    """Each image to its group's adapter (run.py's evaluation routes the same way, vlmsweep/pipeline/per_domain.py): the group
    of its domain, or the router's choice (the base model under the first adapter, adapters switched off). Lines
    come out in input order with `adapter` and `route`; each group's adapter folder is opened in turn."""
    import gc
    import io

    from vlmsweep.pipeline import routing
    from vlmsweep.model.inference import open_folder

    info = routing.read_routing(folder)
    groups: dict[str, list[str]] = info["groups"]
    known = [routing.group_of(item.domain or domain, groups, f"image {item.id}") if item.domain or domain else None
             for item in items]
    routes: list[routing.Route | None] = [None] * len(items)
    lines: list[dict | None] = [None] * len(items)
    counts = {"lines": 0, "errors": 0, "schema_valid": 0}
    opened = None
    for group in groups:
        opened = None
        gc.collect()
        opened = open_folder(folder / info["adapters"][group])
        if constrained:
            from vlmsweep.evaluate import check_schemas_compile
            from vlmsweep.evaluate.generate import vocab_size_of

            check_schemas_compile(opened.processor.tokenizer, vocab_size_of(opened.model), opened.settings.schemas)
        if how == "model" and group == next(iter(groups)):  # the router needs only the base: the first folder's
            routes = route_items(opened, items, groups, [True] * len(items))
        # an unreadable image with no domain has no group: the first one writes its error line
        mine = [i for i in range(len(items))
                if (routes[i].group if routes[i] is not None else known[i] or next(iter(groups))) == group]
        if not mine:
            continue
        buffer = io.StringIO()
        got = predict(opened, [items[i] for i in mine], domain=domain, constrained=constrained, batch_size=batch_size,
                      max_new_tokens=max_new_tokens, summary_lang=summary_lang, out=buffer,
                      routes=[routes[i] for i in mine], groups=groups)
        counts = {k: counts[k] + got[k] for k in counts}
        for i, text in zip(mine, buffer.getvalue().splitlines()):
            route = routes[i]
            lines[i] = json.loads(text) | {"adapter": group, "route": {
                "known": known[i], "model": route.group if route else None, "scores": route.scores if route else None,
                "by": how if route or how == "known" else
                      "known (unreadable image)" if known[i] else "none (unreadable image, no domain)"}}
    for line in lines:
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
    out.flush()
    return counts
