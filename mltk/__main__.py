"""``python -m mltk``: the same as the ``mltk`` command (torchrun starts workers this way)."""

from mltk.cli.main import main

main()
