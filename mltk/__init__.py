"""mltk: one command line for ten research methods over one artifact registry."""

__version__ = "0.1.0"
