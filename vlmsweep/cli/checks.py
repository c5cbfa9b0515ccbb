"""Command-line mistakes caught before Hydra starts, as one line that names the fix; the run count of a multirun.

Hydra reports these late or obscurely: `max_pixels=1024` is an int where a group option is expected
(a 27-line traceback), and `+train.lerning_rate=1` composes, then fails in the frozen schema after the
run folder exists. Checked here against the typed schema (vlmsweep.config.Config), before any folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from pathlib import Path
from typing import Any

from omegaconf import ValidationError
from omegaconf.nodes import BooleanNode, FloatNode, IntegerNode

from vlmsweep.config import CONF_DIR, Config

PACKAGE_CONF = CONF_DIR


NOT_CHECKED = ("hydra",)  # Hydra's own config has its own checks
INTERNAL = ("choices",)  # filled from Hydra, never set by a user


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _fields(tp: type) -> dict[str, Any]:
    hints = typing.get_type_hints(tp)
    return {f.name: hints[f.name] for f in dataclasses.fields(tp) if f.name not in INTERNAL}


def schema_keys(tp: type = Config, prefix: str = "", sections: bool = True) -> list[str]:
    """Every settable dotted key of the schema (`train.lr`, `max_pixels.visual_tokens`, ...), with the
    sections themselves (`train`) unless sections=False."""
    out = []
    for name, hint in _fields(tp).items():
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


def _walk(key: str) -> tuple[Any, str | None]:
    """(the schema's type of a dotted key, the first part of it the schema does not have); (None, None) where the key
    lies under a free-form mapping such as data_mix.weights."""
    tp: Any = Config
    parts = key.split(".")
    for k, part in enumerate(parts):
        if not _is_dataclass_type(tp):
            return None, None  # dict, list, Any: any key below is allowed
        fields = _fields(tp)
        if part not in fields:
            return None, ".".join(parts[: k + 1])
        tp = fields[part]
    return tp, None


def unknown_key(key: str) -> str | None:
    """The first part of a dotted key the schema does not have (None: the key exists, or lies under a
    free-form mapping such as data_mix.weights)."""
    return _walk(key)[1]


SCALARS = {int: ("an integer", IntegerNode), float: ("a number", FloatNode), bool: ("true or false", BooleanNode)}


def type_error(override, key: str) -> str | None:
    """One line for a value the key's scalar type cannot hold (`train.max_steps=abc`), judged by OmegaConf's own
    nodes, as composing would; None where every value fits or the type is not a plain int, float or bool (Hydra and
    the config's own checks judge the rest)."""
    tp = _walk(key)[0]
    args = typing.get_args(tp)
    optional = type(None) in args
    if optional:
        tp = next((a for a in args if a is not type(None)), None) if len(args) == 2 else None
    if tp not in SCALARS:
        return None
    what, node = SCALARS[tp]
    for v in _values(override):
        if isinstance(v, str) and "${" in v or not isinstance(v, (str, int, float, bool, type(None))):
            continue  # an interpolation or a sweep (range, interval): resolved later
        try:
            node(value=v, is_optional=optional)
        except ValidationError:
            return f"{override.input_line}: {key} takes {what}{' or null' if optional else ''}, not {v!r}"
    return None


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


def _config_dirs(config_dir: str | None, overrides: list) -> list[Path]:
    dirs = [PACKAGE_CONF]
    if config_dir:
        dirs.append(Path(config_dir))
    for o in overrides:
        if o.key_or_group == "hydra.searchpath":
            for item in o.value() or []:
                if isinstance(item, str) and item.startswith("file://"):
                    dirs.append(Path(item[len("file://"):]))
    return dirs


def group_option_error(override, group: str, dirs: list[Path]) -> str | None:
    """One line for a group choice that names no config file of the group (`quant=bf61`), with the options and the
    nearest one; None where every value is an option (or is not a plain name: Hydra judges those)."""
    options = sorted({f.relative_to(d / group).with_suffix("").as_posix()
                      for d in dirs if (d / group).is_dir() for f in (d / group).rglob("*.yaml")})
    if not options:
        return None
    bad = [v for v in _values(override) if isinstance(v, str) and v not in options]
    if not bad:
        return None
    near = difflib.get_close_matches(bad[0], options, n=1, cutoff=0.5)
    line = override.input_line or group
    plus = line[: len(line) - len(line.lstrip("+"))]  # +experiment=... keeps its +
    hint = f"did you mean {plus}{group}={near[0]}? " if near else ""
    return (f"{override.input_line}: {group} has no option {bad[0]!r}; {hint}the options are {', '.join(options)} "
            f"(files in conf/{group}/ or your --config-dir's {group}/)")


def _values(override) -> list[Any]:
    from hydra.core.override_parser.types import ChoiceSweep

    value = override.value()
    if isinstance(value, ChoiceSweep):
        return list(value.list)
    return [value]


def _sweep_size(override) -> int | None:
    """How many jobs one command-line sweep override expands to (None: not countable, e.g. glob)."""
    from hydra.core.override_parser.types import ChoiceSweep, RangeSweep

    value = override.value()
    if isinstance(value, ChoiceSweep):
        return len(value.list)
    if isinstance(value, RangeSweep):
        return len(list(override.sweep_iterator()))
    return None


def check_command_line(argv: list[str]) -> tuple[str | None, int | None]:
    """(one-line error or None, number of runs of a plain multirun or None). Anything this cannot parse
    is left to Hydra, whose own message then applies."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        args, _ = get_args_parser().parse_known_args(argv)
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except Exception:  # noqa: BLE001 - a syntax error: Hydra says it better
        return None, None
    dirs = _config_dirs(args.config_dir, overrides)
    groups = {p.name for d in dirs if d.is_dir() for p in d.iterdir() if p.is_dir()}
    # a search path that is not a folder (pkg://...) may hold options this cannot list: Hydra checks those
    complete = not any(o.key_or_group == "hydra.searchpath" and any(not str(i).startswith("file://") for i in o.value() or [])
                       for o in overrides)
    for o in overrides:
        key = o.key_or_group
        if o.is_delete() or key.split(".", 1)[0].split("/", 1)[0] in NOT_CHECKED or o.package:
            continue
        if key == "max_pixels":
            numbers = [v for v in _values(o) if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if numbers:
                named = sorted((p.stem for p in (PACKAGE_CONF / "max_pixels").glob("*.yaml")), key=lambda n: int(n[:-3]))
                values = [v if isinstance(v, str) else f"{int(v)}tok" for v in _values(o)]
                if all(v in named for v in values):
                    fix = f"max_pixels={','.join(values)}"
                else:
                    fix = f"max_pixels.visual_tokens={','.join(str(int(v)) for v in numbers)}"
                return (f"{o.input_line}: a budget is named in visual tokens, write {fix} "
                        f"(named budgets: {', '.join(named)}; any number: max_pixels.visual_tokens=N)"), None
            continue
        if "." not in key and key in groups:  # a group choice (quant=nf4, +experiment=exp1, a user's own group)
            message = group_option_error(o, key, dirs) if complete else None
            if message:
                return message, None
            continue
        if unknown_key(key) is not None:
            return unknown_key_message(key, o.input_line or key), None
        if (message := type_error(o, key)) is not None:
            return message, None
    runs = None
    if args.multirun and not any(o.key_or_group == "sweep" for o in overrides):  # Optuna counts its own trials
        sizes = [_sweep_size(o) for o in overrides if o.is_sweep_override()]
        if None not in sizes:
            runs = math.prod(sizes) if sizes else 1
    return None, runs
