"""The JSON contract of an answer: strict parse, salvage, key sets and types against the schema (pure, no torch).

Definitions (copied to docs/training-evaluation.md):
- strict parse: the whole output, whitespace-trimmed, is one JSON value **and that value is an object**.
  A bare number or string parses with `json.loads` but is no answer (`"1111"` is valid JSON), so it
  counts as a failure here; so do NaN and Infinity, which Python reads but JSON does not have.
- salvage: the first balanced `{...}` in the text (brace depth, aware of strings and escapes) that
  `json.loads` turns into an object. Up to `MAX_SALVAGE_TRIES` opening braces are tried in order, so
  a stray `{note}` before the answer does not hide it. A strict object is also a salvaged one.
- exact key set: every object in the answer has exactly the keys its schema lists — the top level,
  nested objects and every item of a list of objects.
- type mismatch: a value at a key the schema knows has a JSON type the schema does not allow there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema

MAX_SALVAGE_TRIES = 64


class JsonObjectScanner:
    """Finds where the first top-level JSON object closes, fed text piece by piece.

    Hand-written: no library tracks brace depth incrementally across streamed tokens. Text before the
    first `{` is prose and ignored (its quotes are not JSON strings); inside the object, braces in
    strings and escaped quotes do not count.
    """

    __slots__ = ("depth", "in_string", "escape", "done", "consumed")

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.done = False
        self.consumed = 0  # characters fed so far

    def feed(self, text: str) -> int | None:
        """Index in `text` just past the closing brace when the object completes in this piece, else None."""
        if self.done:
            return None
        start = 0
        if self.depth == 0:
            start = text.find("{")
            if start < 0:
                self.consumed += len(text)
                return None
        for i in range(start, len(text)):
            ch = text[i]
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif ch == "\\":
                    self.escape = True
                elif ch == '"':
                    self.in_string = False
            elif ch == '"':
                self.in_string = self.depth > 0
            elif ch == "{":
                self.depth += 1
            elif ch == "}" and self.depth > 0:
                self.depth -= 1
                if self.depth == 0:
                    self.done = True
                    self.consumed += i + 1
                    return i + 1
        self.consumed += len(text)
        return None


def balanced_end(text: str, start: int) -> int | None:
    """End (exclusive) of the balanced object opening at `text[start] == '{'`, or None if it never closes."""
    scanner = JsonObjectScanner()
    end = scanner.feed(text[start:])
    return None if end is None else start + end


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN and Infinity; JSON does not


def _loads(text: str):
    return json.loads(text, parse_constant=_reject_constant)


def strict_parse(text: str) -> dict | None:
    """The output as one JSON object, or None (see the module docstring)."""
    stripped = text.strip()
    if not stripped.startswith("{"):  # cheap reject for prose and 1 MB junk
        return None
    try:
        value = _loads(stripped)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class Salvage:
    obj: dict
    start: int
    end: int  # exclusive


def salvage(text: str) -> Salvage | None:
    """The first balanced `{...}` that parses to an object (see the module docstring)."""
    pos = 0
    for _ in range(MAX_SALVAGE_TRIES):
        start = text.find("{", pos)
        if start < 0:
            return None
        end = balanced_end(text, start)
        if end is None:
            return None  # an unclosed brace means a cut-off answer; objects nested in it are fragments, not answers
        try:
            value = _loads(text[start:end])
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict):
            return Salvage(value, start, end)
        pos = start + 1
    return None


# --- schema helpers -------------------------------------------------------------------------------


def _types(sub: dict) -> set[str]:
    t = sub.get("type")
    if t is None:
        out: set[str] = set()
        for branch in sub.get("anyOf", []) + sub.get("oneOf", []):
            out |= _types(branch)
        return out
    return {t} if isinstance(t, str) else set(t)


def _branch_with(sub: dict, key: str) -> dict | None:
    if key in sub:
        return sub
    for branch in sub.get("anyOf", []) + sub.get("oneOf", []):
        found = _branch_with(branch, key)
        if found is not None:
            return found
    return None


def object_properties(sub: dict) -> dict[str, dict] | None:
    branch = _branch_with(sub, "properties")
    return None if branch is None else branch["properties"]


def array_items(sub: dict) -> dict | None:
    branch = _branch_with(sub, "items")
    return None if branch is None else branch["items"]


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_allowed(value: Any, allowed: set[str]) -> bool:
    if not allowed:
        return True  # the schema says nothing about the type here
    t = json_type(value)
    if t in allowed:
        return True
    if t == "integer" and "number" in allowed:
        return True
    # JSON Schema counts 3.0 as an integer
    return t == "number" and "integer" in allowed and float(value).is_integer()


def key_set_errors(obj: Any, schema: dict, path: str = "") -> list[str]:
    """Paths of objects whose keys differ from the schema's, with the missing and extra keys."""
    errors: list[str] = []
    props = object_properties(schema)
    if props is not None and isinstance(obj, dict):
        missing = [k for k in props if k not in obj]
        extra = [k for k in obj if k not in props]
        if missing or extra:
            errors.append(f"{path or '<root>'}: missing {missing} extra {extra}")
        for key, sub in props.items():
            if key in obj:
                errors += key_set_errors(obj[key], sub, f"{path}.{key}" if path else key)
    items = array_items(schema)
    if items is not None and isinstance(obj, list):
        for i, item in enumerate(obj):
            errors += key_set_errors(item, items, f"{path}[{i}]")
    return errors


def type_errors(obj: Any, schema: dict, path: str = "") -> list[str]:
    """Values at schema-known keys whose JSON type the schema does not allow (extra keys are not judged)."""
    if not _type_allowed(obj, _types(schema)):
        return [f"{path or '<root>'}: {json_type(obj)} where {sorted(_types(schema))} expected"]
    errors: list[str] = []
    props = object_properties(schema)
    if props is not None and isinstance(obj, dict):
        for key, sub in props.items():
            if key in obj:
                errors += type_errors(obj[key], sub, f"{path}.{key}" if path else key)
    items = array_items(schema)
    if items is not None and isinstance(obj, list):
        for i, item in enumerate(obj):
            errors += type_errors(item, items, f"{path}[{i}]")
    return errors


@lru_cache(maxsize=16)
def _validator(schema_json: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(schema_json))


def schema_valid(obj: Any, schema: dict) -> bool:
    return _validator(json.dumps(schema, sort_keys=True)).is_valid(obj)
