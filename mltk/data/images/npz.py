"""``npz:PATH``: images and labels in a NumPy .npz, the format people export to.

Keys: ``x_train``, ``y_train`` and optionally ``x_test``, ``y_test`` (the
Keras convention), or ``images``, ``labels`` as a single train split; an
optional ``class_names`` string array. Images may be NHWC or NCHW (or NHW
for grayscale; a shape that reads both ways is taken as NCHW), uint8, or
float in [0, 1] (rounded to uint8). Loaded with
``allow_pickle=False``: an .npz never runs code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from mltk.core.errors import ArtifactError, UsageError
from mltk.data.images.dataset import ImageDataset

_SPLIT_KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
_SINGLE_KEYS = ("images", "labels")


def read_npz(path: Path, split: str, name: str) -> ImageDataset:
    """The ``split`` ("train" or "test") of the .npz at ``path``: uint8 [N, C, H, W]."""
    if not zipfile.is_zipfile(path):  # np.load would take a .npy or a pickle here
        raise ArtifactError(f"{path}: not an .npz file (an .npz is a zip of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as error:  # object arrays need pickle, which is refused
        raise ArtifactError(
            f"{path}: holds object arrays, which need pickle ({error})",
            "store class_names as a string array (np.array(names, dtype=str))",
        ) from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ArtifactError(f"{path}: not a readable .npz ({error})") from error

    splits = _splits(arrays, path)
    if split not in splits:
        hint = f"{path} has the split(s) {', '.join(splits)}"
        if split == "test":
            hint += "; hold a test split out of train with data.test_holdout=0.1 (a fraction or a count)"
        raise UsageError(f"{name} has no {split!r} split", hint)
    images_key, labels_key = splits[split]
    images = _to_nchw_uint8(arrays[images_key], f"{path}:{images_key}")
    labels = np.asarray(arrays[labels_key]).reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer) or len(labels) != len(images):
        raise ArtifactError(
            f"{path}:{labels_key}: expected {len(images)} integer labels, "
            f"got {labels.dtype} of shape {arrays[labels_key].shape}"
        )
    class_names = _class_names(arrays, splits, path)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ArtifactError(
            f"{path}:{labels_key}: labels span {labels.min()}..{labels.max()}, "
            f"outside 0..{len(class_names) - 1}"
        )
    return ImageDataset(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=class_names,
        name=name,
        split=split,
    )


def _splits(arrays: dict[str, np.ndarray], path: Path) -> dict[str, tuple[str, str]]:
    found = {
        split: keys for split, keys in _SPLIT_KEYS.items() if all(key in arrays for key in keys)
    }
    if not found and all(key in arrays for key in _SINGLE_KEYS):
        found = {"train": _SINGLE_KEYS}
    if "train" not in found:
        raise ArtifactError(
            f"{path}: expected arrays x_train and y_train (or images and labels), "
            f"found {', '.join(sorted(arrays)) or 'none'}"
        )
    return found


def _to_nchw_uint8(images: np.ndarray, source: str) -> np.ndarray:
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ArtifactError(
            f"{source}: expected images [N, H, W, C] or [N, C, H, W], got {images.shape}"
        )
    channels_last = images.shape[3] in (1, 3) and images.shape[1] not in (1, 3)
    if channels_last:
        images = images.transpose(0, 3, 1, 2)
    if images.shape[1] not in (1, 3):
        raise ArtifactError(f"{source}: images need 1 or 3 channels, got shape {images.shape}")
    if np.issubdtype(images.dtype, np.floating):
        if images.size and (images.min() < 0.0 or images.max() > 1.0):
            raise ArtifactError(
                f"{source}: float images must lie in [0, 1], found {images.min()}..{images.max()}"
            )
        images = np.rint(images * 255.0)
    elif images.dtype != np.uint8:
        raise ArtifactError(
            f"{source}: images must be uint8 or float in [0, 1], got {images.dtype}"
        )
    return np.ascontiguousarray(images, dtype=np.uint8)


def _class_names(
    arrays: dict[str, np.ndarray], splits: dict[str, tuple[str, str]], path: Path
) -> list[str]:
    if "class_names" in arrays:
        names = [str(name) for name in np.asarray(arrays["class_names"]).reshape(-1)]
        if not names:
            raise ArtifactError(f"{path}:class_names is empty")
        return names
    # Without names, number the classes over every split so labels agree across splits.
    largest = max(int(np.max(arrays[labels], initial=0)) for _, labels in splits.values())
    return [str(label) for label in range(largest + 1)]
