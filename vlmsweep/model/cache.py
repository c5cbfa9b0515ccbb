"""Model folders in the cache: each built once under a lock, renamed into place whole, and checked before use.

A folder records its files' sizes and sha256 (`files.json`) when it is written. Before a folder is used again its
sizes are compared (cheap, catches a truncated or missing file) and a file modified since it was written is hashed
again; a damaged folder is built again in place of the damaged one (issue #37: a truncated model.safetensors used to
crash deep inside safetensors). Folders written before `files.json` existed get the safetensors check alone: each
header's tensors must end where the file ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Callable

from vlmsweep.files import write_json

log = logging.getLogger(__name__)

MANIFEST = "files.json"  # {file name: {"bytes", "mtime_ns", "sha256"}} of a cache folder, written with it


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_files(folder: Path) -> None:
    """Write `files.json`: every file's size, modification time and sha256, as the folder is published."""
    files = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name != MANIFEST:
            stat = p.stat()
            files[p.name] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256(p)}
    write_json(folder / MANIFEST, files, indent=1, sort_keys=True, ensure_ascii=True)


def safetensors_damage(path: Path) -> str | None:
    """Why a safetensors file cannot be whole (its header unreadable, or its tensors ending past or before the file's
    end), or None. Reads the header only."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > size - 8:
                return f"{path.name} is cut inside its header ({size:,} bytes)"
            header = json.loads(f.read(length))
    except (struct.error, ValueError) as e:
        return f"{path.name} has no readable header ({e.__class__.__name__})"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + length + end != size:
        return f"{path.name} has {size:,} bytes where its header says {8 + length + end:,}"
    return None


def damage(folder: Path) -> str | None:
    """What is wrong with a cached model folder, or None when it is as it was written."""
    manifest = folder / MANIFEST
    if not (folder / "config.json").is_file():
        return "config.json is missing"
    if not manifest.is_file():  # written before files.json existed: the weights' own structure is all there is
        return next(filter(None, map(safetensors_damage, sorted(folder.glob("*.safetensors")))), None)
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))
    except ValueError:
        return f"{MANIFEST} is unreadable"
    for name, want in files.items():
        p = folder / name
        if not p.is_file():
            return f"{name} is missing"
        stat = p.stat()
        if stat.st_size != want["bytes"]:
            return f"{name} has {stat.st_size:,} bytes, {want['bytes']:,} when it was written"
        if stat.st_mtime_ns != want["mtime_ns"] and sha256(p) != want["sha256"]:  # written to since: hash it again
            return f"{name} differs from the file written (sha256)"
    return None


def build_once(folder: Path, write: Callable[[Path], Path], rebuild: str = "") -> Path:
    """Fill a cache folder once and check it on every later call: `write(tmp)` builds it in a temporary folder beside
    `folder` and returns the folder to publish, which gets its `files.json` and is renamed into place, so concurrent
    workers never load a half-written model. A lock file beside it makes a second process wait for the first one's
    build instead of repeating it (the warmed model takes minutes). A damaged folder is moved aside and built again,
    with a warning that names it and `rebuild`, the command that does the same by hand."""
    from filelock import FileLock

    if damage(folder) is None:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        if folder.exists() or folder.is_symlink():
            reason = damage(folder)
            if reason is None:  # built by another process while this one waited
                return folder
            log.warning("the cached model %s is damaged (%s): building it again%s", folder, reason,
                        f" (by hand: {rebuild})" if rebuild else "")
            aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}-damaged-", dir=folder.parent))
            folder.rename(aside / folder.name)
            shutil.rmtree(aside, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            built = write(tmp)
            record_files(built)
            built.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            release_freed_memory()
    return folder


def release_freed_memory() -> None:
    """Hand the memory a build freed back to the system. Writing the tokenizer files makes hundreds of thousands of
    small Python objects (the vocabulary's merges); freed, glibc keeps their pages, and a first run that assembled its
    model in-process then trained and evaluated about 200 MiB above a second run (benchmarks/bench_first_run.py)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim, the pages are reused in-process
        pass
