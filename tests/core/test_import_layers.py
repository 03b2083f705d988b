"""The layers import only downward (cli -> engines -> nn/data -> core), no engine imports another, and no
mltk modules import each other in a circle.

Every ``import`` statement in ``mltk/`` is read with ``ast``, those inside
functions too: an import deferred to run time is still a dependency, and a
circle through one breaks as soon as someone moves it to the top of its file.
A package importing its submodules (to re-export them) is an edge like any
other; the implicit import of a module's parent packages is not, since every
package would otherwise form a circle with its own submodules.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
from pathlib import Path

import mltk

PACKAGE = Path(mltk.__file__).parent
LOWER_LAYERS = ("core", "nn", "data")
UPPER_LAYERS = ("engines", "cli")


@dataclasses.dataclass(frozen=True)
class Import:
    """One name an import statement reaches: ``target`` is a module where one exists, else the package named."""

    source: str  # the importing module, dotted
    target: str
    where: str  # path:line, and the function the statement sits in, if any
    statement: str

    def describe(self) -> str:
        return f"{self.source} imports {self.target}  ({self.where}: {self.statement})"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(root: Path) -> dict[str, Path]:
    return {_module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def _imports(root: Path = PACKAGE) -> list[Import]:
    """Every mltk import of every module under ``root``, relative ones resolved."""
    modules = _modules(root)
    found = []
    for module, path in modules.items():
        text = path.read_text()
        lines = text.splitlines()
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        relative_path = path.relative_to(root.parent)
        for node, function in _import_nodes(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import sub` reaches the submodule; `from pkg import name` what pkg/__init__ defines.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            where = f"{relative_path}:{node.lineno}" + (f", in {function}()" if function else "")
            statement = lines[node.lineno - 1].strip()
            for target in dict.fromkeys(targets):
                if (target == "mltk" or target.startswith("mltk.")) and target != module:
                    found.append(Import(module, target, where, statement))
    return found


def _import_nodes(tree: ast.AST):
    """(import node, name of the enclosing function or None) for every import in ``tree``."""
    stack = [(tree, None)]
    while stack:
        node, function = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, function
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            stack.append((child, inner))


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _engine(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "engines" else None


def _violations(root: Path = PACKAGE) -> list[str]:
    found = []
    for imp in _imports(root):
        layer, target_layer = _layer(imp.source), _layer(imp.target)
        if layer in LOWER_LAYERS and target_layer in UPPER_LAYERS:
            found.append(f"{imp.describe()}: {layer} must not import {target_layer}")
        own, other = _engine(imp.source), _engine(imp.target)
        if own and other and own != other:
            found.append(f"{imp.describe()}: an engine must not import another engine (move what both need "
                         "down to nn, data or core)")
    return found


def _graph(root: Path = PACKAGE) -> dict[str, dict[str, Import]]:
    """Module -> {module it imports: the first statement that does}, over modules that exist under ``root``."""
    modules = _modules(root)
    graph: dict[str, dict[str, Import]] = {module: {} for module in modules}
    for imp in _imports(root):
        if imp.target in modules:
            graph[imp.source].setdefault(imp.target, imp)
    return graph


def _cycles(graph: dict[str, dict[str, Import]]) -> list[list[Import]]:
    """One shortest circle of imports through each group of modules that import each other (Tarjan, then BFS)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph[node]):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_shortest_circle(graph, group) for group in sorted(groups, key=min)]


def _shortest_circle(graph: dict[str, dict[str, Import]], group: set[str]) -> list[Import]:
    start = min(group)
    came_by: dict[str, Import] = {}
    queue = collections.deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child not in group or child in came_by:
                continue
            came_by[child] = graph[node][child]
            if child == start:
                chain = [came_by[start]]
                while chain[-1].source != start:
                    chain.append(came_by[chain[-1].source])
                return chain[::-1]
            queue.append(child)
    raise AssertionError(f"no circle through {start} in {sorted(group)}")


def _report(cycles: list[list[Import]]) -> str:
    return "\n\n".join(f"import circle of {len(chain)}:\n" + "\n".join(f"  {imp.describe()}" for imp in chain)
                       for chain in cycles)


def test_lower_layers_import_neither_engines_nor_the_cli_and_engines_not_each_other():
    violations = _violations()
    assert not violations, "imports against the layers:\n" + "\n".join(violations)


def test_no_import_circles():
    cycles = _cycles(_graph())
    assert not cycles, _report(cycles)


# ---------------------------------------------------------------- the checks themselves


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "mltk"


def test_the_layer_check_sees_an_upward_import_inside_a_function(tmp_path):
    root = _write(tmp_path, {"mltk/__init__.py": "", "mltk/core/__init__.py": "",
                             "mltk/core/probe.py": "def f():\n    from ..engines.supervised import recipe\n"})
    assert _violations(root) == [
        "mltk.core.probe imports mltk.engines.supervised  (mltk/core/probe.py:2, in f(): "
        "from ..engines.supervised import recipe): core must not import engines"]


def test_the_layer_check_sees_one_engine_importing_another(tmp_path):
    root = _write(tmp_path, {"mltk/engines/a/run.py": "from mltk.engines.b.tools import thing\n",
                             "mltk/engines/a/own.py": "from mltk.engines.a import run\n"})
    violations = _violations(root)
    assert len(violations) == 1 and violations[0].startswith("mltk.engines.a.run imports mltk.engines.b.tools")


def test_the_circle_check_finds_a_module_level_circle_through_a_package(tmp_path):
    root = _write(tmp_path, {"mltk/__init__.py": "",
                             "mltk/data/__init__.py": "from mltk.data.a import thing\n",
                             "mltk/data/a.py": "from mltk.data.b import thing\n",
                             "mltk/data/b.py": "from mltk.data import something_reexported\nthing = 1\n"})
    (chain,) = _cycles(_graph(root))
    assert [(imp.source, imp.target) for imp in chain] == [
        ("mltk.data", "mltk.data.a"), ("mltk.data.a", "mltk.data.b"), ("mltk.data.b", "mltk.data")]


def test_the_circle_check_follows_imports_inside_functions(tmp_path):
    root = _write(tmp_path, {"mltk/__init__.py": "",
                             "mltk/core/a.py": "def f():\n    from mltk.core import b\n",
                             "mltk/core/b.py": "from . import a\n"})
    (chain,) = _cycles(_graph(root))
    assert [imp.where for imp in chain] == ["mltk/core/a.py:2, in f()", "mltk/core/b.py:1"]
    assert "import circle of 2:" in _report([chain])
