"""The IDX format of MNIST and Fashion-MNIST, gzipped or not.

An IDX file is a 4-byte magic (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values in C order.
The sizes in the header are checked against the bytes that follow, so a
truncated download fails loudly instead of yielding fewer images.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from mltk.core.errors import ArtifactError
from mltk.data.images.dataset import ImageDataset

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

MNIST_CLASSES = [str(digit) for digit in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

# MD5 of the official gzipped files (the values torchvision checks). MNIST and
# Fashion-MNIST share file names, so a folder searched for one may hold the
# other's files; these catch that instead of silently training on the wrong data.
OFFICIAL_GZ_MD5 = {
    "mnist": {
        "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
        "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310",
    },
}  # fmt: skip

# Official file names per split: (images, labels); the un-gzipped names are accepted too.
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path) -> np.ndarray:
    """The array stored in an IDX file (gzipped or plain, told apart by content)."""
    return parse_idx(path.read_bytes(), path)


def parse_idx(raw: bytes, path: Path) -> np.ndarray:
    """The array in IDX bytes ``raw`` read from ``path`` (named in errors)."""
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as error:
            raise ArtifactError(
                f"{path}: the gzip stream is truncated or corrupt ({error})",
                "download the file again",
            ) from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ArtifactError(f"{path}: not an IDX file (magic {raw[:4].hex() or 'empty'})")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ArtifactError(f"{path}: IDX header is truncated", "download the file again")
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header_size
    if found != expected:
        raise ArtifactError(
            f"{path}: IDX header says {'x'.join(map(str, dims))} values ({expected} bytes) "
            f"but the file holds {found} bytes; it is truncated or corrupt",
            "download the file again",
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(dims).copy()


def read_idx_split(
    images_path: Path, labels_path: Path, class_names: list[str], name: str, split: str
) -> ImageDataset:
    """One IDX image file [N, H, W] and its label file [N] -> uint8 [N, 1, H, W]."""
    images, labels = (_read_checked(path, name) for path in (images_path, labels_path))
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ArtifactError(
            f"{images_path}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise ArtifactError(
            f"{labels_path}: expected {len(images)} labels to match {images_path.name}, "
            f"got shape {labels.shape}"
        )
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(class_names)):
        raise ArtifactError(
            f"{labels_path}: labels span {int(labels.min())}..{int(labels.max())}, "
            f"outside 0..{len(class_names) - 1}"
        )
    return ImageDataset(
        images=torch.from_numpy(images[:, None]),
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=list(class_names),
        name=name,
        split=split,
    )


def _read_checked(path: Path, name: str) -> np.ndarray:
    raw = path.read_bytes()
    digest = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    for other, digests in OFFICIAL_GZ_MD5.items():
        if other != name and digest in digests:
            raise ArtifactError(
                f"{path} is {other}'s official file, not {name}'s (the two share file names)",
                f"put the {name} files in their own folder, <data dir>/{name}/",
            )
    return parse_idx(raw, path)
