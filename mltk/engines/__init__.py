"""Method engines, one package each.

This is the one list of them: importing it registers every engine's recipes,
evaluation protocols and artifact kinds. ``mltk.load_engines()`` imports it
(the catalog calls that on its first lookup, the CLI at start), so adding an
engine means adding its package here and nothing in ``core`` or the CLI.
"""

from mltk.engines import (  # noqa: F401
    condense,
    detect,
    detox,
    fscil,
    mim,
    quantize,
    robust,
    sets,
    supervised,
    talk,
)
