"""Where a command finds its data: ``--data-dir`` and ``--download``, the same flags on every command
that reads a dataset (train, eval, condense, quantize), defined once.

The data readers' hints name these flags ("pass --data-dir ... or --download"),
so every command that can show such a hint must accept them.
"""

from __future__ import annotations

import typer

DataDirOption = typer.Option(None, "--data-dir", help="where the dataset files are [default: $MLTK_DATA]")
DownloadOption = typer.Option(False, "--download",
                              help="fetch missing official dataset files (MNIST, Fashion-MNIST, CIFAR, SVHN, "
                                   "Tiny ImageNet) into the data dir")
DATA_FLAGS = ("--data-dir", "--download")


def data_overrides(data_dir: str | None, download: bool) -> list[str]:
    """The config overrides the flags stand for in a recipe config (its ``data`` section)."""
    flags = []
    if data_dir is not None:
        flags.append(f"data.data_dir='{data_dir.replace(chr(39), chr(39) * 2)}'")
    if download:
        flags.append("data.download=true")
    return flags
