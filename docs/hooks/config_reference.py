"""The configuration reference of docs/configuration.md, generated when the manual is built (an mkdocs hook), so it
cannot drift from the schema: every key of vlmsweep/config/schema.py's dataclasses with its type (a closed choice:
its values), its value in `python -m vlmsweep` (the schema's defaults, conf/config.yaml's interpolations and the
default options, composed by Hydra, interpolations unresolved) and the help written on its field; every config group
with its options, read from conf/."""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- config-reference -->"
# The checkout's vlmsweep, whichever way mkdocs was started (an installed or editable copy elsewhere included),
# imported now: mkdocs restores sys.path once the hook module has loaded.
sys.path.insert(0, str(REPO))
from vlmsweep import config as vlmsweep_config  # noqa: E402
from vlmsweep.config.resolvers import register_resolvers  # noqa: E402

sys.path.remove(str(REPO))


def _help(f: dataclasses.Field) -> str:
    """The help written on the field (vlmsweep.config.schema.knob)."""
    return f.metadata.get("help", "")


def _type_of(f: dataclasses.Field, tp: Any) -> str:
    """The field's type; a closed choice shows its values."""
    if f.metadata.get("choices"):
        return " | ".join(f'"{c}"' for c in f.metadata["choices"])
    return _type_name(tp)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    if typing.get_origin(tp) is typing.Union:  # Optional[str] -> str | None
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    return str(tp).replace("typing.", "")


def _cell(text: str) -> str:
    """Text inside a Markdown table cell: a bar would end the cell."""
    return text.replace("|", "\\|")


def _value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return _cell(str(v))


def _defaults() -> dict[str, Any]:
    """The composed config of `python -m vlmsweep` with no overrides, as YAML values (interpolations unresolved)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    vlmsweep_config.register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(vlmsweep_config.CONF_DIR), version_base="1.3"):
        cfg = compose("config")
    return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (vlmsweep_config.CONF_DIR / group).glob("*.yaml"))


def _rows(prefix: str, tp: type, values: Any) -> list[str]:
    """One table row per key of dataclass `tp` under `prefix`; a nested dataclass (eval.perturb) adds its keys."""
    hints = typing.get_type_hints(tp)
    rows = []
    for f in dataclasses.fields(tp):
        value = values.get(f.name) if isinstance(values, dict) else None
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name]):
            rows += _rows(f"{prefix}.{f.name}", hints[f.name], value)
            continue
        shown = "—" if value == "???" else f"`{_value(value)}`"
        rows.append(f"| `{prefix}.{f.name}` | `{_type_of(f, hints[f.name])}` | {shown} | {_cell(_help(f))} |")
    return rows


def reference() -> str:
    """The reference as Markdown: one table per section of `Config`, top-level keys last."""
    Config = vlmsweep_config.Config
    defaults = _defaults()
    hints = typing.get_type_hints(Config)
    out = []
    top = []
    for f in dataclasses.fields(Config):
        tp = hints[f.name]
        if f.name == "choices":
            continue  # filled from Hydra's choices, never set by a user
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            top.append((f.name, _type_of(f, tp), _value(defaults.get(f.name)), _help(f)))
            continue
        out.append(f"### `{f.name}`\n")
        options = _options(f.name)
        if options:
            chosen = defaults.get(f.name, {}).get("name")
            listed = ", ".join(f"**`{o}`** (default)" if o == chosen else f"`{o}`" for o in options)
            out.append(f"A config group: `{f.name}=OPTION` picks one of {listed} (`conf/{f.name}/`).\n")
        out.append("| key | type | default | what |\n|---|---|---|---|")
        out += _rows(f.name, tp, defaults.get(f.name, {}))
        out.append("")
    out.append("### Top-level keys\n")
    out.append("| key | type | default | what |\n|---|---|---|---|")
    out += [f"| `{k}` | `{t}` | `{v}` | {_cell(c)} |" for k, t, v, c in top]
    out.append("")
    out.append("### Presets and sweeps\n")
    out.append("Appended with `+`: `+experiment=NAME` (" + ", ".join(f"`{o}`" for o in _options("experiment"))
               + ", `conf/experiment/`) and `+sweep=NAME` (" + ", ".join(f"`{o}`" for o in _options("sweep"))
               + ", `conf/sweep/`). `conf/recipe/MODEL.yaml` is applied by itself when the model is a real checkpoint.\n")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - mkdocs' hook signature
    if MARKER in markdown:
        return markdown.replace(MARKER, reference())
    return markdown
