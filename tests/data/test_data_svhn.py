"""svhn from the official MATLAB v5 files: X [32, 32, 3, N], y 1..10 with 10 = digit 0."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import savemat

from mltk.core.errors import ArtifactError, DataMissingError
from mltk.data import dataset_info, load_dataset


def write_svhn(path, images_nchw: np.ndarray, digits: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    official_labels = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]  # [N, 1]
    savemat(path, {"X": images_nchw.transpose(2, 3, 1, 0), "y": official_labels})


def test_round_trip_maps_label_10_to_digit_0(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    digits = np.array([0, 1, 9, 0, 5])
    write_svhn(tmp_path / "svhn" / "test_32x32.mat", images, digits)
    dataset = load_dataset("svhn", "test", data_dir=tmp_path)
    assert dataset.images.shape == (5, 3, 32, 32)
    assert np.array_equal(dataset.images.numpy(), images)
    assert dataset.labels.tolist() == [0, 1, 9, 0, 5]
    assert dataset.class_names == [str(d) for d in range(10)]
    assert dataset_info("svhn").flip_ok is False


def test_extra_split_and_torchvision_root(tmp_path):
    images = np.zeros((2, 3, 32, 32), np.uint8)
    write_svhn(tmp_path / "extra_32x32.mat", images, np.array([3, 4]))
    assert load_dataset("svhn", "extra", data_dir=tmp_path).labels.tolist() == [3, 4]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataMissingError, match="train_32x32.mat") as caught:
        load_dataset("svhn", "train", data_dir=tmp_path)
    assert str(tmp_path / "svhn") in caught.value.message


def test_truncated_mat_is_an_artifact_error(tmp_path):
    path = tmp_path / "train_32x32.mat"
    write_svhn(path, np.ones((4, 3, 32, 32), np.uint8), np.array([1, 2, 3, 4]))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ArtifactError, match="train_32x32.mat"):
        load_dataset("svhn", "train", data_dir=tmp_path)


def test_labels_outside_1_to_10_are_rejected(tmp_path):
    path = tmp_path / "test_32x32.mat"
    savemat(path, {"X": np.zeros((32, 32, 3, 1), np.uint8), "y": np.array([[11]], np.uint8)})
    with pytest.raises(ArtifactError, match="expected 1..10"):
        load_dataset("svhn", "test", data_dir=tmp_path)
