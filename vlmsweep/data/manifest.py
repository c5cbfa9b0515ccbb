"""The one dataset format: JSON Lines {"id","image","domain","target"}, validated line by line on load."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import unicodedata
from pathlib import Path
from typing import Any, Iterator

from ..files import not_a_regular_file, write_text
from ..prompts import SCHEMA_OF_DOMAIN, schema_name
from .images import ImageLoadError, check_image
from .record import Record
from .schema import keys, schema_errors

log = logging.getLogger(__name__)

REQUIRED = ("id", "image", "domain", "target")
OPTIONAL = ("image_domain", "origin", "seed", "unannotated", "parents")


class ManifestError(ValueError):
    """A bad manifest line: the message names file, line and reason."""


class ManifestResult(list):
    """The records of a manifest (a plain list[Record]) plus what was skipped.

    `skipped` holds (line number, reason) for every line dropped with skip_bad_lines=True; it is
    empty otherwise, since then the first bad line raises ManifestError.
    """

    def __init__(self, records: list[Record], path: Path, skipped: list[tuple[int, str]],
                 normalized: list[int] | None = None):
        super().__init__(records)
        self.path = path
        self.skipped = skipped
        self.normalized = normalized or []  # lines whose target was not in Unicode NFC (normalised on load)


def nfc(value: Any) -> Any:
    """A target with every string in Unicode NFC: decomposed Hangul (NFD, as macOS file names and some exports
    write it) would be trained on as loose jamo and scored against composed model output as wrong."""
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, dict):
        return {k: nfc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nfc(v) for v in value]
    return value


def _parse_line(raw: str, base: Path, seen: set[str]) -> Record:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise ValueError(f"missing key(s) {missing}; a line needs {list(REQUIRED)}")
    unknown = sorted(set(obj) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; allowed: {list(REQUIRED + OPTIONAL)}")
    rid, image, domain, target = obj["id"], obj["image"], obj["domain"], obj["target"]
    if not isinstance(rid, str) or not rid:
        raise ValueError(f"id must be a non-empty string, got {rid!r}")
    if rid in seen:
        raise ValueError(f"duplicate id {rid!r}")
    image_domain = obj.get("image_domain", domain)
    for field, value in (("domain", domain), ("image_domain", image_domain)):
        if value not in SCHEMA_OF_DOMAIN:
            raise ValueError(f"unknown {field} {value!r}; expected one of {sorted(SCHEMA_OF_DOMAIN)} "
                             "(docs/own-data.md lists what each domain means)")
    if not isinstance(image, str) or not image:
        raise ValueError(f"image must be a path string, got {image!r}")
    path = (base / image).resolve()
    problem = not_a_regular_file(path)  # by stat, never opened: a FIFO blocks, /proc/self/environ is no image
    if problem == "not found":
        raise ValueError(f"image {image!r} not found (looked for {path})")
    if problem:
        raise ValueError(f"image {image!r} is {problem} ({path}); an image must be a regular file")
    schema = schema_name(domain)
    errors = schema_errors(schema, target)
    if errors:
        raise ValueError(f"target breaks the {schema} schema: " + "; ".join(errors))
    seed = obj.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise ValueError(f"seed must be an integer or null, got {seed!r}")
    unannotated = obj.get("unannotated", [])
    if not isinstance(unannotated, list) or set(unannotated) - set(keys(schema)):
        raise ValueError(f"unannotated must list {schema} keys, got {unannotated!r}")
    parents = obj.get("parents", [])
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ValueError(f"parents must be a list of record ids, got {parents!r}")
    return Record(id=rid, image=path, domain=domain, target=target, image_domain=image_domain,
                  origin=str(obj.get("origin", "manifest")), seed=seed, unannotated=tuple(unannotated),
                  parents=tuple(parents))


def scan_manifest(path: Path, check_images: bool = False) -> Iterator[tuple[int, Record | None, str | None]]:
    """(line number, record, None) for each usable line and (line number, None, reason) for each bad one.

    Blank lines are ignored; a UTF-8 byte-order mark at the start of the file is accepted; a line that
    is not UTF-8 is a bad line whose reason gives the byte offset. `check_images`: also decode every
    image and check the processor's limits (images.check_image), so an unusable image is a bad line too.
    """
    path = Path(path)
    problem = not_a_regular_file(path)
    if problem == "not found":
        raise ManifestError(f"{path}: manifest not found (give the path of a JSON Lines file; see docs/own-data.md)")
    if problem:
        raise ManifestError(f"{path}: the manifest is {problem}; give the path of a JSON Lines file (docs/own-data.md)")
    seen: set[str] = set()
    offset = 0
    with path.open("rb") as f:
        for lineno, raw_bytes in enumerate(f, start=1):
            line_start, offset = offset, offset + len(raw_bytes)
            try:
                raw = _decode_line(raw_bytes, lineno, line_start)
                if not raw.strip():
                    continue
                rec = _parse_line(raw, path.parent, seen)
                if check_images:
                    _check_image(rec)
            except ValueError as e:
                yield lineno, None, str(e)
                continue
            seen.add(rec.id)
            yield lineno, rec, None


def read_manifest(path: Path, skip_bad_lines: bool = False, check_images: bool = False) -> ManifestResult:
    """Records of a JSONL manifest, image paths resolved against the manifest's folder (scan_manifest).

    The first bad line raises ManifestError("FILE:LINE: reason"); with skip_bad_lines=True every bad
    line is counted in result.skipped and logged at the end instead. No record at all (empty file, or
    everything skipped) is an error.
    """
    path = Path(path)
    records: list[Record] = []
    skipped: list[tuple[int, str]] = []
    normalized: list[int] = []
    for lineno, rec, reason in scan_manifest(path, check_images):
        if rec is not None:
            target = nfc(rec.target)
            if target != rec.target:
                normalized.append(lineno)
                rec = dataclasses.replace(rec, target=target)
            records.append(rec)
        elif not skip_bad_lines:
            raise ManifestError(f"{path}:{lineno}: {reason} (fix the line, or set data.skip_bad_lines=true to count and skip bad lines)")
        else:
            skipped.append((lineno, str(reason)))
    if skipped:
        shown = "; ".join(f"line {n}: {r}" for n, r in skipped[:5])
        log.warning("%s: skipped %d bad line(s) of %d: %s%s", path, len(skipped), len(skipped) + len(records),
                    shown, " ..." if len(skipped) > 5 else "")
    if not records:
        raise ManifestError(f"{path}: no usable records" + (f" ({len(skipped)} bad line(s) skipped)" if skipped else " (empty file)"))
    if normalized:
        log.warning("%s: %d target(s) not in Unicode NFC (lines %s), normalised to NFC", path, len(normalized),
                    ", ".join(map(str, normalized[:5])) + (" ..." if len(normalized) > 5 else ""))
    return ManifestResult(records, path, skipped, normalized)


def _decode_line(raw: bytes, lineno: int, line_start: int) -> str:
    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark (Windows editors write one)
        raw = raw[3:]
        line_start += 3
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = raw[e.start : e.start + 1].hex()
        raise ValueError(
            f"not UTF-8 (byte 0x{bad} at byte offset {line_start + e.start} of the file, column {e.start + 1} of the "
            "line); save the manifest as UTF-8"
        ) from None


def _check_image(rec: Record) -> None:
    try:
        check_image(rec.image)
    except ImageLoadError as e:
        raise ValueError(f"id {rec.id!r}: unusable image: {e}") from None


def manifest_path(image: Path, base: Path) -> str:
    """How a manifest in `base` names an image: relative where the two share a folder below the filesystem's root
    (the tree moves with its images), absolute where they share only the root (a "../../../.." path breaks as soon
    as the manifest or the data moves)."""
    image, base = Path(image).resolve(), base.resolve()
    if os.path.commonpath([image, base]) == image.anchor:
        return image.as_posix()
    return Path(os.path.relpath(image, base)).as_posix()


def to_line(rec: Record, base: Path) -> dict:
    line = {"id": rec.id, "image": manifest_path(rec.image, base),
            "domain": rec.domain, "target": rec.target}
    if rec.image_domain != rec.domain:
        line["image_domain"] = rec.image_domain
    line["origin"] = rec.origin
    if rec.seed is not None:
        line["seed"] = rec.seed
    if rec.unannotated:
        line["unannotated"] = list(rec.unannotated)
    if rec.parents:
        line["parents"] = list(rec.parents)
    return line


def write_manifest(records: list[Record], path: Path) -> None:
    """Write records as JSONL; image paths relative to the manifest's folder. Atomic (tmp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids: set[str] = set()
    lines = []
    for rec in records:
        if rec.id in ids:
            raise ValueError(f"duplicate record id {rec.id!r}: ids must be unique within a manifest")
        ids.add(rec.id)
        errors = schema_errors(schema_name(rec.domain), rec.target)
        if errors:
            raise ValueError(f"record {rec.id!r}: target breaks the schema: {'; '.join(errors)}")
        lines.append(json.dumps(to_line(rec, path.parent), ensure_ascii=False))
    write_text(path, "".join(line + "\n" for line in lines))
