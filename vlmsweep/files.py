"""Files a run writes and reads: written aside and renamed, errors that name the path, inputs that are regular files.

Imports no torch and nothing of vlmsweep: scoring, data and the run folder all write through it.
"""

from __future__ import annotations

import dataclasses
import json
import itertools
import os
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# Pseudo-filesystems whose "files" are not data: /proc/self/environ reads as a regular file of the process's secrets.
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")


class WriteError(OSError):
    """A file or folder that could not be written (a full disk, a read-only folder); the message names it."""


def _aside(path: Path) -> Path:
    """The hidden name a file or folder is written under before its rename (one per process)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_failed(path: Path, err: BaseException) -> WriteError:
    """The WriteError for `path`, with the reason of the error that stopped its writing (no path in an ENOSPC)."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else f"{type(err).__name__}: {err}"
    return WriteError(f"{path}: could not be written ({reason})")


def write_text(path: Path, text: str) -> None:
    """Written aside and renamed: a crash or a full disk never leaves half a file, and the error names it."""
    path = Path(path)
    tmp = _aside(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_failed(path, err) from err


def write_json(path: Path, obj: Any, *, end: str = "\n", **dumps: Any) -> None:
    """JSON through write_text (written aside and renamed): two-space indent, UTF-8 kept, dataclasses and paths as
    values, a newline at the end. `dumps` overrides json.dumps's settings (indent=1, sort_keys=True,
    ensure_ascii=True); `end` what follows the object (the model release's files: nothing)."""
    options: dict[str, Any] = {"indent": 2, "ensure_ascii": False, "default": _jsonable} | dumps
    write_text(path, json.dumps(obj, **options) + end)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


@contextmanager
def folder_aside(final: Path) -> Iterator[Path]:
    """Yields a hidden sibling folder to fill; on success it replaces `final` in one rename (an older `final`
    is moved aside first and removed after), on any error it is removed and the error names `final`."""
    final = Path(final)
    tmp, old = _aside(final), final.with_name(f".{final.name}.{os.getpid()}.old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)  # frees the space a full disk needs for run_info.json
        if isinstance(err, Exception) and not isinstance(err, WriteError):
            raise write_failed(final, err) from err
        raise
    shutil.rmtree(old, ignore_errors=True)


def not_a_regular_file(path: Path) -> str | None:
    """Why `path` must not be opened as an image or a manifest (None: a regular file). Checked by name and by
    stat, never by opening: a FIFO blocks an open() forever, and /proc and /dev files are not documents."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "not found"
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    resolved = str(path.resolve())
    system = next((f for f in SYSTEM_FOLDERS if resolved == f or resolved.startswith(f + "/")), None)
    if system:
        return f"a system file under {system}/, not a document"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe), not a file: reading it could wait forever"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a file"
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    return None if stat.S_ISREG(mode) else "not a regular file"


_claimed: dict[tuple[str, str], str] = {}  # (parent, default name) -> the folder this process claimed for it


def claim(parent: str, name: str) -> str:
    """`parent/name`, or `parent/name-2`, `-3`, ... when that exists: made here, so two runs started in the same
    second get two folders (mkdir is atomic). The same answer every time this process asks."""
    if (parent, name) not in _claimed:
        for n in itertools.count(1):
            candidate = name if n == 1 else f"{name}-{n}"
            try:
                Path(parent, candidate).mkdir(parents=True)
            except FileExistsError:
                continue
            _claimed[parent, name] = f"{parent}/{candidate}"
            break
    return _claimed[parent, name]
