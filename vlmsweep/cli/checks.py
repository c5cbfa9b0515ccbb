"""Command-line mistakes caught before Hydra starts, as one line that names the fix; the run count of a multirun.

Hydra reports these late or obscurely: `max_pixels=1024` is an int where a group option is expected
(a 27-line traceback), and `+train.lerning_rate=1` composes, then fails in the frozen schema after the
run folder exists. Checked here against the typed schema (its keys: vlmsweep.config.keys), before any folder;
Hydra's flags are read by hydra_flags (Hydra's own parser is private, no API).
"""

from __future__ import annotations

import argparse
import difflib
import math
import typing
from pathlib import Path
from typing import Any

from omegaconf import ValidationError
from omegaconf.nodes import BooleanNode, FloatNode, IntegerNode

from vlmsweep.config import CONF_DIR
from vlmsweep.config.keys import NOT_CHECKED, key_choices, key_type, unknown_key, unknown_key_message

PACKAGE_CONF = CONF_DIR


class _Unparsable(Exception):
    """argv Hydra's flags do not parse (`--cfg nothing`): Hydra says what is wrong."""


class _HydraFlags(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise _Unparsable(message)


def hydra_flags() -> argparse.ArgumentParser:
    """Hydra 1.3's command-line flags (hydra.cc, "Hydra's command line flags"), parsed as Hydra parses them, to find
    the overrides, --multirun and --config-dir; Hydra then parses them itself and acts on them (--help and --version
    only store here). tests/test_cli_errors.py checks it against Hydra's own parser."""
    p = _HydraFlags(add_help=False, description="Hydra")
    p.add_argument("--help", "-h", action="store_true")
    p.add_argument("--hydra-help", action="store_true")
    p.add_argument("--version", action="store_true")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--cfg", "-c", choices=["job", "hydra", "all"])
    p.add_argument("--resolve", action="store_true")
    p.add_argument("--package", "-p")
    p.add_argument("--run", "-r", action="store_true")
    p.add_argument("--multirun", "-m", action="store_true")
    p.add_argument("--shell-completion", "-sc", action="store_true")
    p.add_argument("--config-path", "-cp")
    p.add_argument("--config-name", "-cn")
    p.add_argument("--config-dir", "-cd")
    p.add_argument("--experimental-rerun")
    p.add_argument("--info", "-i", const="all", nargs="?",
                   choices=["all", "config", "defaults", "defaults-tree", "plugins", "searchpath"])
    return p


SCALARS = {int: ("an integer", IntegerNode), float: ("a number", FloatNode), bool: ("true or false", BooleanNode)}


def type_error(override, key: str) -> str | None:
    """One line for a value the key cannot hold: one its scalar type cannot (`train.max_steps=abc`), judged by
    OmegaConf's own nodes, as composing would, or none of a closed choice's values (`train.loss_impl=fast`); None
    where every value fits or the type is not a plain int, float, bool or closed choice (Hydra and the config's own
    checks judge the rest)."""
    tp = key_type(key)
    args = typing.get_args(tp)
    optional = type(None) in args
    if optional:
        tp = next((a for a in args if a is not type(None)), None) if len(args) == 2 else None
    choices = key_choices(key)
    if tp not in SCALARS and not choices:
        return None
    what, node = SCALARS[tp] if tp in SCALARS else (f"one of {', '.join(choices)}", None)
    for v in _values(override):
        if isinstance(v, str) and "${" in v or not isinstance(v, (str, int, float, bool, type(None))):
            continue  # an interpolation or a sweep (range, interval): resolved later
        if node is None:
            fits = v in choices
        else:
            try:
                node(value=v, is_optional=optional)
                fits = True
            except ValidationError:
                fits = False
        if not fits:
            return f"{override.input_line}: {key} takes {what}{' or null' if optional else ''}, not {v!r}"
    return None


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
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        args, _ = hydra_flags().parse_known_args(argv)
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
