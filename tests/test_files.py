"""vlmsweep.files.write_json, the one JSON writer: its format, its overrides, atomicity; and no module writing JSON
around it."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from vlmsweep.files import WriteError, write_json
from vlmsweep.model import release

PACKAGE = Path(__file__).resolve().parent.parent / "vlmsweep"
# Writers of JSON text that are no whole file: the predictions stream (one line per image, flushed per batch, to a
# file or stdout) and run_info.json's last resort on a full disk (overwritten in place: no room for a second copy).
STREAMS = {"pipeline/predict.py", "pipeline/run_folder.py"}


def test_write_json_format_overrides_and_end(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"b": "한글", "a": Path("/x")})
    assert path.read_text(encoding="utf-8") == '{\n  "b": "한글",\n  "a": "/x"\n}\n'  # UTF-8 kept, paths as strings
    write_json(path, {"b": "é", "a": 1}, indent=1, sort_keys=True, ensure_ascii=True)
    assert path.read_text(encoding="utf-8") == '{\n "a": 1,\n "b": "\\u00e9"\n}\n'
    release.write_json(path, {"a": 1})  # as the model release writes its files: no newline at the end
    assert path.read_bytes() == b'{\n  "a": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # nothing left aside


def test_write_json_never_leaves_half_a_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"ok": 1})
    with pytest.raises(ValueError):
        write_json(path, {"x": float("nan")}, allow_nan=False)
    assert json.loads(path.read_text(encoding="utf-8")) == {"ok": 1}
    with pytest.raises(WriteError, match="missing/m.json: could not be written"):
        write_json(tmp_path / "missing" / "m.json", {})
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def _writes_json_text(call: ast.Call) -> bool:
    """`x.write_text(json.dumps(...))`, `f.write(json.dumps(...) + ...)` or `json.dump(obj, f)`."""
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "json":
        return func.attr == "dump"
    if not (isinstance(func, ast.Attribute) and func.attr in ("write_text", "write") and call.args):
        return False
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "dumps"
               for n in ast.walk(call.args[0]))


def test_every_json_file_is_written_through_files_write_json():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "files.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _writes_json_text(node):
                found.append(f"{rel}:{node.lineno}")
    assert {f.split(":")[0] for f in found} == STREAMS, found
