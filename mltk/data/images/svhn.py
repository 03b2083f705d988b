"""SVHN cropped digits in their official MATLAB v5 files (``train_32x32.mat`` ...).

Each file holds X uint8 [32, 32, 3, N] and y [N, 1] with labels 1..10, where
10 stands for the digit 0; mltk maps it to label 0 so that label == digit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mltk.core.errors import ArtifactError
from mltk.data.images.dataset import ImageDataset

CLASS_NAMES = [str(digit) for digit in range(10)]
SVHN_FILES = {split: f"{split}_32x32.mat" for split in ("train", "test", "extra")}


def read_svhn_split(path: Path, split: str) -> ImageDataset:
    """One ``<split>_32x32.mat`` -> uint8 [N, 3, 32, 32], labels 0..9."""
    from scipy.io import loadmat

    try:
        contents = loadmat(path, variable_names=["X", "y"])
    except NotImplementedError as error:  # scipy's answer to HDF5-based v7.3 files
        raise ArtifactError(
            f"{path}: a MATLAB v7.3 file; the official SVHN files are v5", "download it again"
        ) from error
    except Exception as error:  # scipy reports truncation with several exception types
        raise ArtifactError(
            f"{path}: not a readable MATLAB file ({type(error).__name__}: {error})",
            "the file is truncated or corrupt; download it again",
        ) from error
    if "X" not in contents or "y" not in contents:
        raise ArtifactError(f"{path}: expected variables X and y, found {sorted(contents)}")
    pixels, digits = contents["X"], np.asarray(contents["y"]).reshape(-1)
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[2] != 3:
        raise ArtifactError(
            f"{path}: expected X uint8 [H, W, 3, N], got {pixels.dtype} {pixels.shape}"
        )
    if len(digits) != pixels.shape[3]:
        raise ArtifactError(f"{path}: {pixels.shape[3]} images but {len(digits)} labels")
    if len(digits) and (digits.min() < 1 or digits.max() > 10):
        raise ArtifactError(f"{path}: labels span {digits.min()}..{digits.max()}, expected 1..10")
    return ImageDataset(
        images=torch.from_numpy(np.ascontiguousarray(pixels.transpose(3, 2, 0, 1))),
        labels=torch.from_numpy((digits % 10).astype(np.int64)),
        class_names=list(CLASS_NAMES),
        name="svhn",
        split=split,
    )
