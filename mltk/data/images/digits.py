"""scikit-learn's 8x8 handwritten digits: real data that ships inside sklearn.

1,797 images with values 0..16, scaled to uint8 by round(v * 255 / 16). The
train/test split is fixed forever so that results stay comparable: a
stratified ``train_test_split`` with 360 test images and ``random_state=0``,
giving 1,437 train and 360 test images, each kept in the original order.
"""

from __future__ import annotations

import numpy as np
import torch

from mltk.data.images.dataset import ImageDataset

TEST_SIZE = 360
SPLIT_SEED = 0
CLASS_NAMES = [str(digit) for digit in range(10)]


def load_digits_split(split: str) -> ImageDataset:
    """split "train" (1,437 images) or "test" (360): uint8 [N, 1, 8, 8]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    train_index, test_index = train_test_split(
        np.arange(len(digits.target)),
        test_size=TEST_SIZE,
        stratify=digits.target,
        random_state=SPLIT_SEED,
    )
    chosen = np.sort(train_index if split == "train" else test_index)
    return ImageDataset(
        images=torch.from_numpy(pixels[chosen][:, None].copy()),
        labels=torch.from_numpy(digits.target[chosen].astype(np.int64)),
        class_names=list(CLASS_NAMES),
        name="digits",
        split=split,
    )
