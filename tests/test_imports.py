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
    """vlmsweep modules `path` imports anywhere: function-level imports too (a lazy import still closes a circle), and
    imports under `if TYPE_CHECKING:` too (a type-only cycle is a cycle of knowledge). Not counted: the body of
    `if __name__ == "__main__":`, which runs only when the module is the program (`python -m ...`), never on import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and ast.unparse(node.test) in MAIN_GUARDS
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


MAIN_GUARDS = {"__name__ == '__main__'", "__name__ == \"__main__\""}

# The layers, lowest first: a module imports its own layer or lower ones, never a higher one. Each entry is a module
# or a package (every module under it). A module not named here fails test_every_module_has_a_layer.
LAYERS = [
    ("vlmsweep", "vlmsweep.files", "vlmsweep.prompts", "vlmsweep.metrics"),  # no torch, nothing of vlmsweep above
    ("vlmsweep.config",),  # the schema, its checks, compose, the resolvers
    ("vlmsweep.data",),
    ("vlmsweep.model",),  # leaf components: load, quant, scope, shapes, tiny, tokenizer, release, adapter, memory
    ("vlmsweep.train",),
    ("vlmsweep.evaluate",),
    ("vlmsweep.ocr",),
    ("vlmsweep.pipeline",),  # the stages and their one order, the run folder, per-domain, predict, export
    ("vlmsweep.sweep",),  # the Optuna sweeper and its summaries
    ("vlmsweep.report",),  # reads run folders and studies
    ("vlmsweep.loop",),  # cycles of pipeline passes; writes its report with report/'s tables
    ("vlmsweep.run",),  # run(cfg) -> metrics: one pass, per-domain or the loop
    ("vlmsweep.recipes", "vlmsweep.cli"),  # may import anything; nothing imports them
    # the `python -m` spellings: their code is all under `if __name__ == "__main__":` and calls a vlmsweep.cli main
    ("vlmsweep.__main__", "vlmsweep.data.__main__", "vlmsweep.report.__main__", "vlmsweep.predict", "vlmsweep.export",
     "vlmsweep.memory"),
]


def layer_of(module: str) -> int:
    """The layer of the longest entry that names the module or a package above it."""
    best, where = -1, None
    for i, entries in enumerate(LAYERS):
        for e in entries:
            if (module == e or module.startswith(e + ".")) and len(e) > best:
                best, where = len(e), i
    assert where is not None, f"{module} is in no layer: add it to LAYERS"
    return where


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(files)) for name, path in files.items()}


def test_the_import_graph_is_read_from_the_sources():
    g = graph()
    assert "vlmsweep.pipeline.stages" in g["vlmsweep.run"] and "vlmsweep.loop" in g["vlmsweep.run"]
    assert "vlmsweep.data.record" in g["vlmsweep.data"]  # a relative import
    assert "vlmsweep.config" in g["vlmsweep.pipeline.run_folder"]  # under `if TYPE_CHECKING:`: counted
    assert "vlmsweep.cli.main" not in g["vlmsweep.__main__"]  # under `if __name__ == "__main__":`: not counted


def test_no_import_cycle_among_vlmsweep_modules():
    try:
        TopologicalSorter(graph()).prepare()
    except CycleError as err:
        raise AssertionError(f"import cycle: {' -> '.join(err.args[1])}") from None


def test_a_cycle_is_found_when_there_is_one():
    g = graph()
    g["vlmsweep.pipeline.stages"] = g["vlmsweep.pipeline.stages"] | {"vlmsweep.run"}  # what run.py <-> loop.py used to be
    try:
        TopologicalSorter(g).prepare()
    except CycleError as err:
        assert "vlmsweep.run" in err.args[1] and "vlmsweep.pipeline.stages" in err.args[1]
    else:
        raise AssertionError("the planted cycle was not found")


def test_every_module_has_a_layer():
    for module in graph():
        layer_of(module)


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {d}" for m, deps in g.items() for d in deps if layer_of(d) > layer_of(m))


def test_no_module_imports_from_a_layer_above_it():
    assert upward_imports(graph()) == []


def test_an_upward_import_is_found_when_there_is_one():
    g = graph()
    g["vlmsweep.model.load"] = g["vlmsweep.model.load"] | {"vlmsweep.train.trainer"}  # what model/warmup.py used to do
    g["vlmsweep.config.compose"] = g["vlmsweep.config.compose"] | {"vlmsweep.cli.checks"}
    assert upward_imports(g) == ["vlmsweep.config.compose -> vlmsweep.cli.checks", "vlmsweep.model.load -> vlmsweep.train.trainer"]


def test_layout_walls():
    g = graph()
    reach = {}

    def reachable(name: str) -> set[str]:
        if name not in reach:
            reach[name] = set()
            for dep in g[name]:
                reach[name] |= {dep} | reachable(dep)
        return reach[name]

    # nothing imports an entry point, recipes/ or cli/ (the `python -m` guards are not imports)
    for m, deps in g.items():
        assert not {d for d in deps if d.endswith("__main__") or d.startswith(("vlmsweep.cli", "vlmsweep.recipes"))
                    and not m.startswith(("vlmsweep.cli", "vlmsweep.recipes"))}, m
    # model/ is a leaf: no train/, evaluate/, pipeline/ or cli/
    for m in g:
        if m.startswith("vlmsweep.model"):
            assert not {d for d in g[m] if d.startswith(("vlmsweep.train", "vlmsweep.evaluate", "vlmsweep.pipeline",
                                                         "vlmsweep.cli"))}, m
    # the stages know nothing of the entry or the loop; one place orders them
    assert not reachable("vlmsweep.pipeline.stages") & {"vlmsweep.run", "vlmsweep.loop"}
    # scoring imports no torch: the metrics and tags modules reach no model code
    for m in ("vlmsweep.evaluate.metrics", "vlmsweep.evaluate.tags", "vlmsweep.metrics"):
        assert not {d for d in reachable(m) if d.startswith(("vlmsweep.model", "vlmsweep.train"))}, m
    # Hydra's run-folder callback imports the run folder module alone: no torch behind it
    assert not {d for d in reachable("vlmsweep.pipeline.run_folder") if d.startswith(("vlmsweep.model",
                                                                                      "vlmsweep.train"))
                and d not in g["vlmsweep.pipeline.run_folder"]}


def test_no_private_hydra_import():
    """hydra._internal is no API: a Hydra release may move it. The command-line checks parse Hydra's flags themselves."""
    for path in PACKAGE.rglob("*.py"):
        assert "hydra._internal" not in path.read_text(encoding="utf-8"), path


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
