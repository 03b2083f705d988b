"""The layers import only downward: cli -> engines -> nn/data -> core, and no engine imports another.

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
