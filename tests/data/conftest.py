"""Writers for tiny datasets in each official file format, for the data tests.

Each writer produces the bytes the official distribution has (IDX headers,
Python 2 CIFAR pickles inside the tarball, MATLAB v5 SVHN files, the Tiny
ImageNet tree), so the readers are tested against the real layouts. Tests get
them through the ``formats`` fixture (pytest runs with --import-mode=importlib,
so a helper module beside the tests cannot be imported by name).
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def formats():
    """This module: the format writers below."""
    return sys.modules[__name__]


def write_idx(path: Path, array: np.ndarray, *, gz: bool = True) -> Path:
    """An IDX file of uint8 ``array``: magic 0x0000080N, big-endian dims, the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_mnist(folder: Path, train: tuple, test: tuple, *, gz: bool = True) -> Path:
    """train/test: (images uint8 [N, 28, 28], labels uint8 [N]) in official file names."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz=gz)
    return folder


class _Python2Pickler(pickle._Pickler):
    """Pickles the way Python 2's cPickle wrote the CIFAR batches: protocol 2,
    every string a byte string (BINSTRING), numpy globals under numpy.core."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_byte_string(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[str] = _save_byte_string
    dispatch[bytes] = _save_byte_string
    dispatch[type] = save_global


def python2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def cifar10_members(train: tuple, test: tuple, class_names: list[str]) -> dict[str, bytes]:
    """The files of cifar-10-batches-py/: five train batches, test_batch, batches.meta.

    train/test: (images uint8 [N, 3, 32, 32], labels int [N]).
    """
    members = {}
    train_images, train_labels = train
    for number, chunk in enumerate(np.array_split(np.arange(len(train_labels)), 5), start=1):
        members[f"data_batch_{number}"] = _cifar_batch(
            train_images[chunk], train_labels[chunk], "labels", f"training batch {number} of 5"
        )
    members["test_batch"] = _cifar_batch(*test, "labels", "testing batch 1 of 1")
    members["batches.meta"] = python2_pickle(
        {"num_cases_per_batch": 10000, "label_names": class_names, "num_vis": 3072}
    )
    return members


def cifar100_members(train: tuple, test: tuple, class_names: list[str]) -> dict[str, bytes]:
    """The files of cifar-100-python/: train, test (fine and coarse labels), meta."""
    return {
        "train": _cifar_batch(*train, "fine_labels", "training batch 1 of 1"),
        "test": _cifar_batch(*test, "fine_labels", "testing batch 1 of 1"),
        "meta": python2_pickle(
            {"fine_label_names": class_names, "coarse_label_names": ["coarse"] * 20}
        ),
    }


def _cifar_batch(images: np.ndarray, labels: np.ndarray, key: str, batch_label: str) -> bytes:
    batch = {
        "batch_label": batch_label,
        key: [int(label) for label in labels],
        "data": np.ascontiguousarray(images.reshape(len(images), 3072), dtype=np.uint8),
        "filenames": [f"image_{i}.png" for i in range(len(images))],
    }
    if key == "fine_labels":
        batch["coarse_labels"] = [int(label) // 5 for label in labels]
    return python2_pickle(batch)


def write_tarball(path: Path, folder: str, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            _add_member(tar, f"{folder}/{name}", data)
    return path


def write_folder(folder: Path, members: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        (folder / name).write_bytes(data)
    return folder


def encode_image(pixels: np.ndarray, fmt: str, **options: object) -> bytes:
    """uint8 [H, W] or [H, W, 3] -> encoded file bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """files: relative path -> bytes, written as a folder (or a .zip when root ends in .zip)."""
    if root.suffix == ".zip":
        root.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(root, "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        return root
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def tinyimagenet_files(rng: np.random.Generator, gray_train_image: bool = True) -> dict:
    """A 3-class Tiny ImageNet tree; returns {"files": {path: bytes}, "train": [...], "val": [...]}
    where train/val list (relative path, wnid) in the order mltk should return them."""
    wnids = ["n02124075", "n01443537", "n09999999"]
    words = {
        "n01443537": "goldfish, Carassius auratus",
        "n02124075": "Egyptian cat",
        "n09999999": "pizza, pizza pie",
        "n00000001": "not in wnids, as in the real words.txt",
    }
    files = {
        "wnids.txt": "".join(f"{w}\n" for w in wnids).encode(),
        "words.txt": "".join(f"{w}\t{text}\n" for w, text in words.items()).encode(),
    }
    train = []
    for wnid in wnids:
        files[f"train/{wnid}/{wnid}_boxes.txt"] = b"box lines are ignored\n"
        for number in range(2):
            name = f"train/{wnid}/images/{wnid}_{number}.JPEG"
            gray = gray_train_image and wnid == wnids[0] and number == 1
            shape = (64, 64) if gray else (64, 64, 3)
            files[name] = encode_image(rng.integers(0, 256, shape, dtype=np.uint8), "JPEG")
            train.append((name, wnid))
    val, annotations = [], []
    for number, wnid in enumerate([wnids[2], wnids[0], wnids[1], wnids[2]]):
        name = f"val_{number}.JPEG"
        files[f"val/images/{name}"] = encode_image(
            rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "JPEG"
        )
        annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63\n")
        val.append((f"val/images/{name}", wnid))
    files["val/val_annotations.txt"] = "".join(annotations).encode()
    files["test/images/test_0.JPEG"] = encode_image(np.zeros((64, 64, 3), np.uint8), "JPEG")
    return {"files": files, "train": train, "val": val, "wnids": wnids}
