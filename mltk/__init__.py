"""mltk: one command line for ten research methods over one artifact registry."""

__version__ = "0.1.0"


def load_engines() -> None:
    """Import every engine, registering its recipes and protocols (the catalog calls this on first lookup)."""
    import mltk.engines  # noqa: F401


def _register_engine_loader() -> None:
    from mltk.core import catalog

    catalog.set_engine_loader(load_engines)


_register_engine_loader()
