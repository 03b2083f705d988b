"""The catalog finds every engine's recipes without core importing the engines, and ``import mltk`` stays light."""

from __future__ import annotations

import subprocess
import sys


def _fresh(code: str) -> None:
    # A fresh interpreter: in this one other tests have long imported the engines and torch.
    subprocess.run([sys.executable, "-c", code], check=True, timeout=180)


def test_import_mltk_imports_neither_torch_nor_the_engines():
    _fresh("import sys, mltk; loaded = [m for m in ('torch', 'mltk.engines') if m in sys.modules]; "
           "assert not loaded, f'import mltk loaded {loaded}'")


def test_a_catalog_lookup_from_python_loads_the_engines():
    _fresh("from mltk.core.catalog import get_recipe, recipes; "
           "assert get_recipe('supervised').name == 'supervised'; "
           "names = [r.name for r in recipes()]; "
           "assert {'supervised', 'quantize', 'condense', 'mae'} <= set(names), names")


def test_load_engines_registers_every_recipe():
    import mltk
    from mltk.core import catalog

    mltk.load_engines()
    names = [entry.name for entry in catalog.recipes()]
    assert "quantize" in names and catalog.get_recipe("quantize").default_preset == "digits"
    assert "digits" in catalog.get_recipe("quantize").presets()
