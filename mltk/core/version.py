"""The mltk version, written into every artifact's provenance.

It lives in ``core`` because the registry and the card builder record it:
reading it from the top package ``mltk`` (which loads the engines) would make
``core`` depend on the layers above it.
"""

__version__ = "0.1.0"
