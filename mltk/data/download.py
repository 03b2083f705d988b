"""``--download``: fetch official files with torchvision's downloaders.

Files land in the data dir in torchvision's own root layout (``MNIST/raw/``,
``cifar-10-batches-py/``, ``train_32x32.mat``, ``tiny-imagenet-200/``), which
mltk's search also reads; torchvision checks each file's MD5. Reading is
always done afterwards by mltk's own readers.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from mltk.core.errors import MltkError

TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINYIMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"

DOWNLOADABLE = ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "tinyimagenet")


def download(name: str, split: str, data_dir: Path, manual_hint: str) -> None:
    """Download dataset ``name`` (its ``split``, where files are per split) into ``data_dir``.

    ``manual_hint`` says where to put the files by hand; it ends up in the
    error when the network fails.
    """
    if name not in DOWNLOADABLE:
        raise ValueError(f"no downloader for dataset {name!r}")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        # torchvision prints progress on stdout, which mltk keeps for data.
        with contextlib.redirect_stdout(sys.stderr):
            _fetch(name, split, data_dir)
    except Exception as error:  # urllib, http and checksum failures: all "the download failed"
        raise MltkError(
            f"downloading {name} into {data_dir} failed ({type(error).__name__}: {error})",
            f"check the network, or {manual_hint}",
        ) from error


def _fetch(name: str, split: str, data_dir: Path) -> None:
    import torchvision.datasets as tv
    from torchvision.datasets.utils import download_and_extract_archive

    by_train_flag = {
        "mnist": tv.MNIST,
        "fashion-mnist": tv.FashionMNIST,
        "cifar10": tv.CIFAR10,
        "cifar100": tv.CIFAR100,
    }
    if name in by_train_flag:
        by_train_flag[name](root=str(data_dir), train=split == "train", download=True)
    elif name == "svhn":
        tv.SVHN(root=str(data_dir), split=split, download=True)
    else:
        download_and_extract_archive(
            TINYIMAGENET_URL, download_root=str(data_dir), md5=TINYIMAGENET_MD5
        )
