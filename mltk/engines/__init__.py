"""Method engines. Importing this package registers every recipe and protocol."""

from mltk.engines import supervised  # noqa: F401
