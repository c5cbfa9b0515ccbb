"""The package's import graph: no cycle among vlmsweep modules, and the walls the layout promises."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vlmsweep"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """vlmsweep modules `path` imports anywhere (function-level imports too: a lazy import still closes a
    circle), except under `if TYPE_CHECKING:`, which never runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for child in node.body for n in ast.walk(child)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .record import X, from . import y
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from pkg import sub` imports the submodule when there is one
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        out |= {n for n in names if n in modules and n != me}
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(files)) for name, path in files.items()}


def test_the_import_graph_is_read_from_the_sources():
    g = graph()
    assert "vlmsweep.stages" in g["vlmsweep.run"] and "vlmsweep.loop" in g["vlmsweep.run"]
    assert "vlmsweep.stages" in g["vlmsweep.loop"] and "vlmsweep.report.loop" in g["vlmsweep.loop"]
    assert "vlmsweep.data.record" in g["vlmsweep.data"]  # a relative import


def test_no_import_cycle_among_vlmsweep_modules():
    try:
        TopologicalSorter(graph()).prepare()
    except CycleError as err:
        raise AssertionError(f"import cycle: {' -> '.join(err.args[1])}") from None


def test_a_cycle_is_found_when_there_is_one():
    g = graph()
    g["vlmsweep.stages"] = g["vlmsweep.stages"] | {"vlmsweep.run"}  # what run.py <-> loop.py used to be
    try:
        TopologicalSorter(g).prepare()
    except CycleError as err:
        assert "vlmsweep.run" in err.args[1] and "vlmsweep.stages" in err.args[1]
    else:
        raise AssertionError("the planted cycle was not found")


def test_layout_walls():
    g = graph()
    reach = {}

    def reachable(name: str) -> set[str]:
        if name not in reach:
            reach[name] = set()
            for dep in g[name]:
                reach[name] |= {dep} | reachable(dep)
        return reach[name]

    data = [m for m in g if m == "vlmsweep.data" or m.startswith("vlmsweep.data.")]
    for m in data:  # data/ imports neither train/ nor evaluate/
        assert not {d for d in g[m] if d.startswith(("vlmsweep.train", "vlmsweep.evaluate"))}, m
    assert not any("vlmsweep.__main__" in deps for deps in g.values())  # nothing imports __main__
    # the stages know nothing of the entry or the loop; one place orders them
    assert not reachable("vlmsweep.stages") & {"vlmsweep.run", "vlmsweep.loop"}
    # scoring imports no torch: the metrics and tags modules reach no model code
    for m in ("vlmsweep.evaluate.metrics", "vlmsweep.evaluate.tags"):
        assert not {d for d in reachable(m) if d.startswith(("vlmsweep.model", "vlmsweep.train"))}, m


def test_every_folder_of_code_is_in_the_wheel():
    """pyproject.toml lists its packages (so that the top-level conf/ can be mapped into vlmsweep/conf): a folder of
    code missing from that list would be missing from the wheel, and only an installed user would find out."""
    import tomllib

    root = PACKAGE.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(root).parts) for top in ("vlmsweep", "hydra_plugins")
               for p in (root / top).rglob("*.py")}
    assert folders <= listed, f"add to [tool.setuptools] packages: {sorted(folders - listed)}"
    assert "vlmsweep.conf" in listed


def test_the_floors_are_the_versions_ci_lowest_proves():
    """`.ci/lowest` installs exactly these floors and runs the replica. Below them: TrainingArguments
    (activation_checkpointing=) and apply_chat_template(processor_kwargs=) fail (transformers < 5.23), peft 0.17
    imports transformers.HybridCache, the Trainer calls accelerate's unwrap_model(keep_torch_compile=) (< 1.3), and
    wandb.init(reinit="finish_previous") raises (< 0.19.10)."""
    import os
    import re

    from packaging.version import Version

    text = (PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8")
    needed = {"transformers": "5.23.0", "peft": "0.18.0", "accelerate": "1.3.0", "wandb": "0.19.10"}
    for name, version in needed.items():
        floor = re.search(rf'"{name}>=([\d.]+)', text)
        assert floor and Version(floor.group(1)) >= Version(version), (name, floor and floor.group(1))
    assert os.access(PACKAGE.parent / ".ci" / "lowest", os.X_OK)
