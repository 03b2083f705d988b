"""mltk: one command line for ten research methods over one artifact registry.

``import mltk`` stays light (no torch): the engines, and with them their
recipes and protocols, are imported on the first catalog lookup, or by
:func:`load_engines`.
"""

from mltk.core.version import __version__

__all__ = ["__version__", "load_engines"]


def load_engines() -> None:
    """Import every engine, registering its recipes, protocols and artifact kinds.

    The catalog calls this on its first lookup; call it yourself before using
    a registry of ``nn`` that engines fill (such as the classifier kinds that
    ``mltk.nn.artifacts.load_classifier`` reads) without going through the catalog.
    """
    import mltk.engines  # noqa: F401


def _register_engine_loader() -> None:
    # core must not import the engines, yet every `mltk.*` import runs this file first:
    # so the catalog learns here how to load them, before any lookup.
    from mltk.core import catalog

    catalog.set_engine_loader(load_engines)


_register_engine_loader()
