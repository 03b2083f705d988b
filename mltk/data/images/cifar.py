"""CIFAR-10 and CIFAR-100 in their official python-pickle form.

Either the tarball (``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``),
read member by member without extracting it, or its extracted folder
(``cifar-10-batches-py/`` / ``cifar-100-python/``). Each batch is a pickled
dict: "data" uint8 [N, 3072] (the red, green, blue 32x32 planes of each image)
and "labels" (CIFAR-10) or "fine_labels" (CIFAR-100); class names are in
"batches.meta" / "meta". The pickles load through ``safe_pickle``.
"""

from __future__ import annotations

import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mltk.core.errors import ArtifactError, DataMissingError
from mltk.data.images.dataset import ImageDataset
from mltk.data.safe_pickle import load_restricted

# The names batches.meta holds; the reader takes them from the file itself.
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


@dataclass(frozen=True)
class CifarLayout:
    tarball: str
    folder: str
    batches: dict[str, tuple[str, ...]]  # split -> member names in the folder
    meta: str
    labels_key: str
    names_key: str


CIFAR10 = CifarLayout(
    tarball="cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    batches={
        "train": tuple(f"data_batch_{number}" for number in range(1, 6)),
        "test": ("test_batch",),
    },
    meta="batches.meta",
    labels_key="labels",
    names_key="label_names",
)
CIFAR100 = CifarLayout(
    tarball="cifar-100-python.tar.gz",
    folder="cifar-100-python",
    batches={"train": ("train",), "test": ("test",)},
    meta="meta",
    labels_key="fine_labels",
    names_key="fine_label_names",
)


def read_cifar_split(path: Path, layout: CifarLayout, name: str, split: str) -> ImageDataset:
    """``path`` is the tarball or the extracted folder; returns uint8 [N, 3, 32, 32]."""
    wanted = (*layout.batches[split], layout.meta)
    members = _read_folder(path, wanted) if path.is_dir() else _read_tarball(path, layout, wanted)
    meta = _as_dict(load_restricted(members[layout.meta], f"{path}:{layout.meta}"), layout.meta)
    class_names = [_text(label) for label in _field(meta, layout.names_key, path, layout.meta)]
    images, labels = [], []
    for member in layout.batches[split]:
        source = f"{path}:{member}"
        batch = _as_dict(load_restricted(members[member], source), source)
        data = np.asarray(_field(batch, "data", path, member))
        batch_labels = np.asarray(_field(batch, layout.labels_key, path, member))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ArtifactError(
                f"{source}: expected uint8 data [N, 3072], got {data.dtype} {data.shape}"
            )
        if batch_labels.shape != (len(data),):
            raise ArtifactError(
                f"{source}: {len(data)} images but labels of shape {batch_labels.shape}"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels.astype(np.int64))
    all_labels = np.concatenate(labels)
    if len(all_labels) and (all_labels.min() < 0 or all_labels.max() >= len(class_names)):
        raise ArtifactError(
            f"{path}: labels span {all_labels.min()}..{all_labels.max()} but {layout.meta} "
            f"names {len(class_names)} classes"
        )
    return ImageDataset(
        images=torch.from_numpy(np.concatenate(images)),
        labels=torch.from_numpy(all_labels),
        class_names=class_names,
        name=name,
        split=split,
    )


# The largest official member is CIFAR-100's ``train`` (50,000 x 3,072 pixel bytes plus labels, 158 MB);
# anything far beyond is not a CIFAR batch and is refused before it is read.
MAX_MEMBER_BYTES = 256 << 20


def _check_size(size: int, where: str) -> None:
    if size > MAX_MEMBER_BYTES:
        raise ArtifactError(f"{where}: {size} bytes, more than any CIFAR batch ({MAX_MEMBER_BYTES >> 20} MiB)",
                            "get the official file again")


def _read_folder(folder: Path, wanted: tuple[str, ...]) -> dict[str, bytes]:
    missing = [member for member in wanted if not (folder / member).is_file()]
    if missing:
        raise DataMissingError(
            f"{folder}: missing {', '.join(missing)}",
            f"put the complete extracted folder there, or the original tarball in {folder.parent}/",
        )
    for member in wanted:
        _check_size((folder / member).stat().st_size, str(folder / member))
    return {member: (folder / member).read_bytes() for member in wanted}


def _read_tarball(path: Path, layout: CifarLayout, wanted: tuple[str, ...]) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                folder, _, member = info.name.rpartition("/")
                if info.isfile() and member in wanted and folder.endswith(layout.folder):
                    _check_size(info.size, f"{path}:{info.name}")
                    handle = tar.extractfile(info)
                    if handle is not None:
                        members[member] = handle.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise ArtifactError(
            f"{path}: the tarball is truncated or corrupt ({error})",
            "download it again",
        ) from error
    missing = [member for member in wanted if member not in members]
    if missing:
        raise ArtifactError(
            f"{path}: the tarball lacks {', '.join(f'{layout.folder}/{m}' for m in missing)}",
            "download the official tarball again",
        )
    return members


def _as_dict(value: object, source: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ArtifactError(f"{source}: expected a pickled dict, got {type(value).__name__}")
    # Python 3 pickles loaded with latin1 keep bytes keys; Python 2 ones give str.
    return {_text(key): item for key, item in value.items()}


def _field(mapping: dict[str, object], key: str, path: Path, member: str) -> object:
    if key not in mapping:
        raise ArtifactError(
            f"{path}:{member}: has no {key!r} entry (it has {', '.join(sorted(mapping))})"
        )
    return mapping[key]


def _text(value: object) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)
