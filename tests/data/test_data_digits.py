"""digits: sklearn's embedded real digits with the fixed 1,437 / 360 split."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from sklearn.datasets import load_digits

from mltk.data import load_dataset

# sha256 of the 360 test images' bytes, in order: the split never changes.
DIGITS_TEST_SHA256 = "de85aee14a9506dda8a479d72743a291a765f6b10b22e6656d483ccf239ae31a"


def test_sizes_classes_and_pixel_range():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.image_shape == test.image_shape == (1, 8, 8)
    assert train.images.dtype == torch.uint8
    assert train.class_names == [str(d) for d in range(10)]
    assert int(train.images.min()) == 0 and int(train.images.max()) == 255


def test_pixels_are_sklearn_values_scaled_to_255():
    digits = load_digits()
    expected = np.rint(digits.images * 255 / 16).astype(np.uint8)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    pooled = torch.cat([train.images, test.images])[:, 0].numpy()
    labels = torch.cat([train.labels, test.labels]).numpy()
    # Every sklearn image appears exactly once across the two splits, with its label.
    keys = {img.tobytes() + bytes([label]) for img, label in zip(pooled, labels, strict=True)}
    assert keys == {
        img.tobytes() + bytes([lab]) for img, lab in zip(expected, digits.target, strict=True)
    }
    assert len(pooled) == len(expected)


def test_split_is_fixed_forever():
    test = load_dataset("digits", "test")
    # Stratified: 36 or 37 of each digit; these counts pin the random_state=0 split.
    assert torch.bincount(test.labels).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]
    assert test.labels[:10].tolist() == [1, 4, 8, 6, 5, 9, 9, 1, 3, 2]
    assert hashlib.sha256(test.images.numpy().tobytes()).hexdigest() == DIGITS_TEST_SHA256
    assert torch.bincount(load_dataset("digits", "train").labels).tolist() == [
        142, 146, 142, 146, 145, 145, 145, 143, 139, 144,
    ]  # fmt: skip
