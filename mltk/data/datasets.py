"""Datasets by name: what each one is, where its files go, and loading it.

``load_dataset("cifar10", "test")`` finds the official files under the data
dir (``--data-dir`` > ``$MLTK_DATA`` > ``$MLTK_HOME/data``; see
``locate.py`` for the folders searched), reads them with mltk's own readers
and returns an ``ImageDataset``. ``describe_datasets`` backs ``mltk data ls``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from mltk.core.errors import DataMissingError, UsageError
from mltk.data.download import DOWNLOADABLE
from mltk.data.download import download as download_files
from mltk.data.images import cifar, idx, imagefolder, npz, svhn, tinyimagenet
from mltk.data.images.dataset import ImageDataset
from mltk.data.images.digits import CLASS_NAMES as DIGIT_CLASSES
from mltk.data.images.digits import load_digits_split
from mltk.data.locate import (
    FileNeed,
    find,
    missing_data_error,
    resolve_data_dir,
    search_folders,
)


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and which files it reads, without touching the disk.

    image_shape and num_classes are None where they depend on the files
    (imagefolder, npz). files maps each split to what it needs, each need met
    by any of its alternative names, found in ``<data dir>/<folder>/`` (or
    another folder searched, see ``locate.py``).
    """

    name: str
    description: str
    splits: tuple[str, ...]
    flip_ok: bool  # False where a horizontal flip changes the class (digits)
    image_shape: tuple[int, int, int] | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None  # None where only the files name them
    folder: str | None = None
    files: tuple[tuple[str, tuple[FileNeed, ...]], ...] = ()
    torchvision_subdirs: tuple[str, ...] = ()
    split_aliases: tuple[tuple[str, str], ...] = ()  # (asked for, served)

    def needs(self, split: str) -> tuple[FileNeed, ...]:
        return dict(self.files).get(split, ())


def _idx_files() -> tuple[tuple[str, tuple[FileNeed, ...]], ...]:
    return tuple(
        (split, tuple(FileNeed((name, name.removesuffix(".gz"))) for name in names))
        for split, names in idx.MNIST_FILES.items()
    )


def _cifar_files(layout: cifar.CifarLayout) -> tuple[tuple[str, tuple[FileNeed, ...]], ...]:
    need = FileNeed((layout.tarball, f"{layout.folder}/"))
    return (("train", (need,)), ("test", (need,)))


_TINYIMAGENET_NEED = (FileNeed((tinyimagenet.ZIP_NAME, f"{tinyimagenet.ROOT}/")),)

_CATALOG: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "digits",
            "sklearn's real 8x8 digits, built in; fixed split 1,437 train / 360 test",
            ("train", "test"),
            flip_ok=False,
            image_shape=(1, 8, 8),
            num_classes=10,
            class_names=tuple(DIGIT_CLASSES),
        ),
        DatasetInfo(
            "mnist",
            "handwritten digits, 28x28 gray, 60,000 train / 10,000 test (IDX)",
            ("train", "test"),
            flip_ok=False,
            image_shape=(1, 28, 28),
            num_classes=10,
            class_names=tuple(idx.MNIST_CLASSES),
            folder="mnist",
            files=_idx_files(),
            torchvision_subdirs=("MNIST/raw",),
        ),
        DatasetInfo(
            "fashion-mnist",
            "clothing, 28x28 gray, 60,000 train / 10,000 test (IDX, MNIST's file names)",
            ("train", "test"),
            flip_ok=True,
            image_shape=(1, 28, 28),
            num_classes=10,
            class_names=tuple(idx.FASHION_MNIST_CLASSES),
            folder="fashion-mnist",
            files=_idx_files(),
            torchvision_subdirs=("FashionMNIST/raw",),
        ),
        DatasetInfo(
            "cifar10",
            "32x32 RGB, 10 classes, 50,000 train / 10,000 test (python pickles)",
            ("train", "test"),
            flip_ok=True,
            image_shape=(3, 32, 32),
            num_classes=10,
            class_names=tuple(cifar.CIFAR10_CLASSES),
            folder="cifar10",
            files=_cifar_files(cifar.CIFAR10),
        ),
        DatasetInfo(
            "cifar100",
            "32x32 RGB, 100 fine classes, 50,000 train / 10,000 test (python pickles)",
            ("train", "test"),
            flip_ok=True,
            image_shape=(3, 32, 32),
            num_classes=100,
            folder="cifar100",
            files=_cifar_files(cifar.CIFAR100),
        ),
        DatasetInfo(
            "svhn",
            "house-number digits, 32x32 RGB, 73,257 train / 26,032 test / 531,131 extra (.mat)",
            ("train", "test", "extra"),
            flip_ok=False,
            image_shape=(3, 32, 32),
            num_classes=10,
            class_names=tuple(svhn.CLASS_NAMES),
            folder="svhn",
            files=tuple((split, (FileNeed((file,)),)) for split, file in svhn.SVHN_FILES.items()),
        ),
        DatasetInfo(
            "tinyimagenet",
            "64x64 RGB, 200 classes, 100,000 train / 10,000 val; test = val (test has no labels)",
            ("train", "val", "test"),
            flip_ok=True,
            image_shape=(3, 64, 64),
            num_classes=200,
            folder="tinyimagenet",
            files=(("train", _TINYIMAGENET_NEED), ("val", _TINYIMAGENET_NEED)),
            split_aliases=(("test", "val"),),
        ),
        DatasetInfo(
            "imagefolder:PATH",
            "folder or .zip of PATH/<class>/<image>; train/, test/ or val/ become splits",
            ("train", "val", "test"),
            flip_ok=True,
        ),
        DatasetInfo(
            "npz:PATH",
            ".npz of x_train, y_train[, x_test, y_test] (or images, labels), uint8 or [0, 1]",
            ("train", "test"),
            flip_ok=True,
        ),
    )
}


def dataset_names() -> list[str]:
    """Every dataset name; the path datasets appear as "imagefolder:PATH" and "npz:PATH"."""
    return list(_CATALOG)


def dataset_info(name: str) -> DatasetInfo:
    """The catalog entry for ``name`` (any "imagefolder:..." gives the imagefolder entry)."""
    return _CATALOG[_catalog_key(name)[0]]


def load_dataset(
    name: str,
    split: str = "train",
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
) -> ImageDataset:
    """Load ``split`` of dataset ``name`` into memory: images uint8 [N, C, H, W].

    Raises UsageError for an unknown name or split, DataMissingError (exit 3)
    naming the files and folders when files are missing, ArtifactError for a
    corrupt file, and MltkError when ``download`` fails.
    """
    key, user_path = _catalog_key(name)
    info = _CATALOG[key]
    served = _served_split(info, split)
    if key == "digits":
        return load_digits_split(served)
    if user_path is not None:
        path = _resolve_user_path(key, user_path, data_dir)
        if key == "imagefolder:PATH":
            return imagefolder.read_imagefolder(path, split, f"imagefolder:{user_path}")
        return npz.read_npz(path, split, f"npz:{user_path}")

    root = resolve_data_dir(data_dir)
    assert info.folder is not None
    folders = search_folders(root, info.folder, info.torchvision_subdirs)
    found = [find(need, folders) for need in info.needs(served)]
    if None in found and download:
        manual = missing_data_error(
            info.name, served, list(info.needs(served)), folders, downloadable=False
        )
        download_files(info.name, served, root, manual.hint or "")
        found = [find(need, folders) for need in info.needs(served)]
    if None in found:
        missing = [
            need for need, path in zip(info.needs(served), found, strict=True) if path is None
        ]
        raise missing_data_error(
            info.name, served, missing, folders, downloadable=info.name in DOWNLOADABLE
        )
    return _read_files(key, [path for path in found if path is not None], served)


def describe_datasets(data_dir: str | Path | None = None) -> list[dict]:
    """One dict per dataset for ``mltk data ls``.

    Keys: name, description, splits, image_shape, num_classes, class_names
    (None where only the files name them), flip_ok, folder (where to put its
    files, or None), found (True when every split's files are found; None
    for path datasets), found_splits (the splits whose files are all found),
    and files: one dict per needed file and split with split, file (its
    names), found, path (where it was found, else where it should go).
    """
    root = resolve_data_dir(data_dir)
    described = []
    for info in _CATALOG.values():
        files = []
        if info.folder is not None:
            folders = search_folders(root, info.folder, info.torchvision_subdirs)
            for split, needs in info.files:
                for need in needs:
                    path = find(need, folders)
                    files.append(
                        {
                            "split": split,
                            "file": need.label,
                            "found": path is not None,
                            "path": str(path or folders[0] / need.names[0].rstrip("/")),
                        }
                    )
        described.append(
            {
                "name": info.name,
                "description": info.description,
                "splits": list(info.splits),
                "image_shape": list(info.image_shape) if info.image_shape else None,
                "num_classes": info.num_classes,
                "class_names": list(info.class_names) if info.class_names else None,
                "flip_ok": info.flip_ok,
                "folder": str(root / info.folder) if info.folder else None,
                "found": None if info.name.endswith(":PATH") else all(f["found"] for f in files),
                "found_splits": _found_splits(info, files),
                "files": files,
            }
        )
    return described


def _found_splits(info: DatasetInfo, files: list[dict]) -> list[str] | None:
    if info.name.endswith(":PATH"):
        return None
    missing = {f["split"] for f in files if not f["found"]}
    return [
        split for split in info.splits if dict(info.split_aliases).get(split, split) not in missing
    ]


def _read_files(name: str, paths: list[Path], split: str) -> ImageDataset:
    """Hand the files found for ``split`` of dataset ``name`` to its format's reader."""
    if name in ("mnist", "fashion-mnist"):
        classes = idx.MNIST_CLASSES if name == "mnist" else idx.FASHION_MNIST_CLASSES
        return idx.read_idx_split(paths[0], paths[1], classes, name, split)
    if name in ("cifar10", "cifar100"):
        layout = cifar.CIFAR10 if name == "cifar10" else cifar.CIFAR100
        return cifar.read_cifar_split(paths[0], layout, name, split)
    if name == "svhn":
        return svhn.read_svhn_split(paths[0], split)
    return tinyimagenet.read_tinyimagenet_split(paths[0], split)


def _normalized(name: str) -> str:
    return re.sub(r"[-_ ]", "", name.lower())


def _catalog_key(name: str) -> tuple[str, str | None]:
    """(catalog key, PATH or None) for a user-given name such as "CIFAR-10" or "npz:x.npz"."""
    kind, colon, user_path = name.partition(":")
    by_normal = {_normalized(key.removesuffix(":PATH")): key for key in _CATALOG}
    key = by_normal.get(_normalized(kind))
    if key is not None and key.endswith(":PATH"):
        if not colon or not user_path:
            raise UsageError(f"dataset {kind!r} needs a path", f"write it as {key}")
        return key, user_path
    if key is not None and not colon:
        return key, None
    close = difflib.get_close_matches(_normalized(kind), list(by_normal), n=1, cutoff=0.5)
    suggestion = f"; did you mean {by_normal[close[0]]!r}?" if close else ""
    raise UsageError(
        f"unknown dataset {name!r}{suggestion}", f"known datasets: {', '.join(_CATALOG)}"
    )


def _served_split(info: DatasetInfo, split: str) -> str:
    """The split actually read for ``split`` (tinyimagenet serves "test" from "val")."""
    if split in info.splits:
        return dict(info.split_aliases).get(split, split)
    hint = f"{info.name} has the splits {', '.join(info.splits)}"
    if "test" not in info.splits:
        hint += "; hold a test split out of train with data.test_holdout (a fraction or a count)"
    if split == "val":
        hint += "; hold a validation split out of train with data.val_holdout"
    raise UsageError(f"dataset {info.name} has no {split!r} split", hint)


def _resolve_user_path(key: str, user_path: str, data_dir: str | Path | None) -> Path:
    """PATH as given (absolute or relative to the working folder), else below the data dir."""
    given = Path(user_path).expanduser()
    candidates = [given]
    if not given.is_absolute():
        candidates.append(resolve_data_dir(data_dir) / given)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    shape = "a folder of class folders or a .zip" if key == "imagefolder:PATH" else "an .npz file"
    raise DataMissingError(
        f"{key.removesuffix(':PATH')}: {' nor '.join(str(c) for c in candidates)} does not exist",
        f"PATH must be {shape}; a relative PATH is read from the working folder, then the data dir",
    )
