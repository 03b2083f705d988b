"""The layers import only downward: cli -> engines -> nn/data -> core, no engine imports another, and no
modules import each other in a circle when they load.

Every ``import`` statement in ``mltk/`` is read with ``ast`` (those inside
functions too), so an import deferred to run time counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mltk

PACKAGE = Path(mltk.__file__).parent


def _module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return [name for name in found if name == "mltk" or name.startswith("mltk.")]


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _violations(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        layer = _layer(module)
        for target in _imports(path, root):
            target_layer = _layer(target)
            if layer in ("core", "nn", "data") and target_layer in ("engines", "cli"):
                found.append(f"{module} imports {target}: {layer} must not import {target_layer}")
            if layer == "engines" and target_layer == "engines":
                own, other = module.split(".")[2:3], target.split(".")[2:3]
                if own and other and own != other:
                    found.append(f"{module} imports {target}: an engine must not import another engine")
    return found


def test_the_lower_layers_import_neither_engines_nor_the_cli_and_engines_not_each_other():
    assert _violations() == []


def test_the_check_sees_an_upward_import_inside_a_function(tmp_path):
    (tmp_path / "mltk" / "core").mkdir(parents=True)
    (tmp_path / "mltk" / "core" / "probe.py").write_text("def f():\n    from ..engines.supervised import recipe\n")
    assert _violations(tmp_path / "mltk") == [
        "mltk.core.probe imports mltk.engines.supervised: core must not import engines",
        "mltk.core.probe imports mltk.engines.supervised.recipe: core must not import engines"]


def _module_level_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the mltk modules it imports when it is imported (not inside functions)."""
    modules = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in tree.body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                         for alias in node.names]
            edges |= {name for name in names if name in modules and name != module}
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan), packages' own re-exports aside."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for child in graph[node]:
            if child.startswith(node + "."):
                continue  # a package importing its own submodules is how it re-exports them
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles():
    assert _cycles(_module_level_graph()) == []


def test_the_circle_check_finds_a_circle(tmp_path):
    (tmp_path / "mltk" / "data").mkdir(parents=True)
    (tmp_path / "mltk" / "__init__.py").write_text("")
    (tmp_path / "mltk" / "data" / "__init__.py").write_text("from mltk.data import a\n")
    (tmp_path / "mltk" / "data" / "a.py").write_text("from mltk.data.b import thing\n")
    (tmp_path / "mltk" / "data" / "b.py").write_text("from . import a\nthing = 1\n")
    assert _cycles(_module_level_graph(tmp_path / "mltk")) == [["mltk.data.a", "mltk.data.b"]]
