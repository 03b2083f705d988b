"""The real data in <repo>/../shared/data (research-licensed: read in place, never copied)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mltk.core.errors import DataMissingError
from mltk.data import load_dataset

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CIFAR10_ZIP = SHARED_DATA / "cifar10" / "cifar10_train_jpg.zip"
MNIST_TEST = SHARED_DATA / "mnist_test"


def need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"real data not present: {path}")


@pytest.mark.slow  # decodes 50,000 JPEGs: about 10 s on 2 cores
def test_cifar10_jpeg_zip_as_an_imagefolder():
    need(CIFAR10_ZIP)
    dataset = load_dataset(f"imagefolder:{CIFAR10_ZIP}")
    assert dataset.images.shape == (50_000, 3, 32, 32)
    assert dataset.class_names == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ]  # fmt: skip
    assert torch.bincount(dataset.labels).tolist() == [5000] * 10
    with zipfile.ZipFile(CIFAR10_ZIP) as archive:
        for index, member in ((0, "train/airplane/0000.jpg"), (49_999, "train/truck/4999.jpg")):
            expected = np.asarray(Image.open(io.BytesIO(archive.read(member))).convert("RGB"))
            assert np.array_equal(dataset.images[index].numpy(), expected.transpose(2, 0, 1))


def test_mnist_test_split_and_the_missing_train_files():
    need(MNIST_TEST)
    test = load_dataset("mnist", "test", data_dir=MNIST_TEST)
    assert test.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    assert test.labels[:3].tolist() == [7, 2, 1]  # the first official test digits
    with pytest.raises(DataMissingError) as caught:
        load_dataset("mnist", "train", data_dir=MNIST_TEST)
    assert caught.value.exit_code == 3
    assert "train-images-idx3-ubyte.gz" in caught.value.message
    assert (
        str(MNIST_TEST.resolve()) in caught.value.message or str(MNIST_TEST) in caught.value.message
    )
