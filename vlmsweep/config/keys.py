"""The schema's keys as a user types them: every dotted key, the nearest ones to a typo, the type and the closed
choices of a key. The command-line check (vlmsweep.cli.checks) and the entry point (a user's config file) use them."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

from vlmsweep.config.schema import Config

NOT_CHECKED = ("hydra",)  # Hydra's own config has its own checks
INTERNAL = ("choices",)  # filled from Hydra, never set by a user


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _fields(tp: type) -> dict[str, tuple[Any, dataclasses.Field]]:
    """name -> (its resolved type, the field) of a schema dataclass, INTERNAL fields left out."""
    hints = typing.get_type_hints(tp)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(tp) if f.name not in INTERNAL}


def schema_keys(tp: type = Config, prefix: str = "", sections: bool = True) -> list[str]:
    """Every settable dotted key of the schema (`train.lr`, `max_pixels.visual_tokens`, ...), with the
    sections themselves (`train`) unless sections=False."""
    out = []
    for name, (hint, _) in _fields(tp).items():
        key = f"{prefix}{name}"
        if sections or not _is_dataclass_type(hint):
            out.append(key)
        if _is_dataclass_type(hint):
            out += schema_keys(hint, key + ".", sections)
    return out


def _initials(name: str) -> str:
    return "".join(word[0] for word in name.split("_") if word)


def nearest_keys(key: str, n: int = 3) -> list[str]:
    """Known keys a typo most likely meant: same-section keys whose name is the typed name's initials
    (`learning_rate` -> `lr`), then the closest spellings."""
    section, _, leaf = key.rpartition(".")
    known = schema_keys(sections=not section)  # train.foo means a value, not the section `train`
    by_initials = [k for k in known if k.rpartition(".")[0] in (section, section or k.rpartition(".")[0])
                   and k.rpartition(".")[2] == _initials(leaf)]
    close = difflib.get_close_matches(key, known, n=n, cutoff=0.6)
    if not close and section:  # a wrong section name: match the leaf anywhere
        close = [k for k in known if difflib.get_close_matches(leaf, [k.rpartition(".")[2]], n=1, cutoff=0.75)]
    return list(dict.fromkeys(by_initials + close))[:n]


def _walk(key: str) -> tuple[tuple[Any, dataclasses.Field] | None, str | None]:
    """((the schema's type of a dotted key, its field), the first part of it the schema does not have); (None, None)
    where the key lies under a free-form mapping such as data_mix.weights."""
    tp: Any = Config
    f = None
    parts = key.split(".")
    for k, part in enumerate(parts):
        if not _is_dataclass_type(tp):
            return None, None  # dict, list, Any: any key below is allowed
        fields = _fields(tp)
        if part not in fields:
            return None, ".".join(parts[: k + 1])
        f = fields[part]
        tp = f[0]
    return f, None


def unknown_key(key: str) -> str | None:
    """The first part of a dotted key the schema does not have (None: the key exists, or lies under a
    free-form mapping such as data_mix.weights)."""
    return _walk(key)[1]


def key_type(key: str) -> Any:
    """The schema's type of a dotted key (None: unknown, or under a free-form mapping)."""
    f = _walk(key)[0]
    return f[0] if f is not None else None


def key_choices(key: str) -> tuple[str, ...]:
    """The values a closed-choice key takes (vlmsweep.config.schema.knob's choices); empty for any other key."""
    f = _walk(key)[0]
    return f[1].metadata.get("choices", ()) if f is not None else ()


def unknown_key_message(key: str, how: str) -> str:
    bad = unknown_key(key) or key
    near = nearest_keys(bad)
    hint = f"did you mean {' or '.join(near)}?" if near else "no known key is close"
    if "." not in bad:
        hint += " (a config group must be a folder in vlmsweep's conf/ or in your --config-dir)"
    return f"{how}: unknown config key {bad!r}, {hint}; python -m vlmsweep --cfg job prints every key with its value"


def unknown_keys_in(cfg: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of a composed config (a user's config file included) that the schema does not have."""
    out = []
    for name, value in cfg.items():
        key = f"{prefix}{name}"
        if key.split(".", 1)[0] in NOT_CHECKED + INTERNAL:
            continue
        if unknown_key(key) == key:
            out.append(key)
        elif isinstance(value, dict) and unknown_key(key) is None:
            out += unknown_keys_in(value, key + ".")
    return out
