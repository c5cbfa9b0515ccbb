"""The JSON schema of each answer kind (prescription, receipt): loading, the all-null target, validation."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema

SCHEMA_NAMES = ("prescription", "receipt")


@lru_cache(maxsize=None)
def _load(name: str) -> dict:
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}: expected one of {SCHEMA_NAMES}")
    text = resources.files("vlmsweep.data").joinpath("schemas", f"{name}.json").read_text("utf-8")
    return json.loads(text)


def load_schema(name: str) -> dict:
    """A fresh copy of the schema (draft 2020-12), safe for the caller to modify."""
    return copy.deepcopy(_load(name))


def keys(name: str) -> list[str]:
    """Top-level keys in schema order (the order answers are serialized in)."""
    return list(_load(name)["properties"])


def empty_target(name: str) -> dict[str, Any]:
    """All keys present, scalars null, lists empty: the answer for a document that shows nothing."""
    props = _load(name)["properties"]
    return {k: ([] if "array" in props[k]["type"] else None) for k in props}


@lru_cache(maxsize=None)
def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = _load(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(name: str, target: Any) -> list[str]:
    """Every violation as 'path: message'; empty when the target is valid."""
    errors = sorted(_validator(name).iter_errors(target), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def validate_target(name: str, target: Any) -> None:
    errors = schema_errors(name, target)
    if errors:
        raise ValueError(f"target breaks the {name} schema: " + "; ".join(errors))
