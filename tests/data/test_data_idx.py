"""mnist / fashion-mnist from IDX files: round trip, layouts, and the errors."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
import torch

from mltk.core.errors import ArtifactError, DataMissingError
from mltk.data import load_dataset
from mltk.data.images import idx
from mltk.data.images.idx import read_idx


@pytest.fixture
def digits_arrays():
    rng = np.random.default_rng(0)
    train = (
        rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 7, dtype=np.uint8),
    )
    test = (rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), np.array([9, 0, 4], np.uint8))
    return train, test


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_round_trips_pixels_and_labels(tmp_path, formats, digits_arrays, gz):
    train, test = digits_arrays
    formats.write_mnist(tmp_path / "mnist", train, test, gz=gz)
    for split, (images, labels) in (("train", train), ("test", test)):
        dataset = load_dataset("mnist", split, data_dir=tmp_path)
        assert dataset.images.shape == (len(images), 1, 28, 28)
        assert np.array_equal(dataset.images[:, 0].numpy(), images)
        assert dataset.labels.tolist() == labels.tolist()
        assert dataset.labels.dtype == torch.int64
        assert dataset.split == split and dataset.name == "mnist"
    assert dataset.class_names == [str(d) for d in range(10)]


def test_fashion_mnist_reads_torchvision_root_layout_with_official_names(
    tmp_path, formats, digits_arrays
):
    formats.write_mnist(tmp_path / "FashionMNIST" / "raw", *digits_arrays)
    dataset = load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert np.array_equal(dataset.images[:, 0].numpy(), digits_arrays[1][0])
    assert dataset.class_names[0] == "T-shirt/top" and dataset.class_names[9] == "Ankle boot"
    assert len(dataset.class_names) == 10


def test_mltk_data_environment_variable_is_the_default_data_dir(
    tmp_path, formats, digits_arrays, monkeypatch
):
    formats.write_mnist(tmp_path / "env" / "MNIST" / "raw", *digits_arrays)
    monkeypatch.setenv("MLTK_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist", "test")) == 3
    with pytest.raises(DataMissingError):  # an explicit data_dir wins over $MLTK_DATA
        load_dataset("mnist", "test", data_dir=tmp_path / "elsewhere")


def test_missing_file_error_names_the_file_and_the_folders(tmp_path, formats, digits_arrays):
    formats.write_mnist(tmp_path / "mnist", *digits_arrays)
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataMissingError) as caught:
        load_dataset("mnist", "train", data_dir=tmp_path)
    error = caught.value
    assert error.exit_code == 3
    assert "train-labels-idx1-ubyte.gz" in error.message
    assert "train-images" not in error.message, "only the missing file is named"
    assert str(tmp_path / "mnist") in error.message
    assert f"in {tmp_path / 'mnist'}/" in error.hint
    assert "--data-dir" in error.hint and "MLTK_DATA" in error.hint and "--download" in error.hint


def test_truncated_idx_is_an_artifact_error_naming_the_file(tmp_path, formats, digits_arrays):
    formats.write_mnist(tmp_path, *digits_arrays, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match="t10k-images-idx3-ubyte.*truncated") as caught:
        load_dataset("mnist", "test", data_dir=tmp_path)
    assert caught.value.exit_code == 3


def test_truncated_gzip_is_an_artifact_error(tmp_path, formats):
    path = formats.write_idx(tmp_path / "x.gz", np.zeros((5, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ArtifactError, match="x.gz.*gzip"):
        read_idx(path)


def test_header_and_magic_are_checked(tmp_path, formats):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ArtifactError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    raw = gzip.decompress(
        formats.write_idx(tmp_path / "ok.gz", np.arange(6, dtype=np.uint8)).read_bytes()
    )
    (tmp_path / "long").write_bytes(raw + b"\x00")
    with pytest.raises(ArtifactError, match="6 values"):
        read_idx(tmp_path / "long")
    assert read_idx(tmp_path / "ok.gz").tolist() == list(range(6))


def test_label_count_must_match_image_count(tmp_path, formats, digits_arrays):
    formats.write_mnist(tmp_path, *digits_arrays)
    formats.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2], np.uint8))
    with pytest.raises(ArtifactError, match="expected 3 labels"):
        load_dataset("mnist", "test", data_dir=tmp_path)


def test_mnist_files_are_not_taken_for_fashion_mnist(tmp_path, formats, digits_arrays, monkeypatch):
    formats.write_mnist(tmp_path, *digits_arrays)
    # Make these files "MNIST's official ones": the guard knows those by MD5.
    digest = hashlib.md5((tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    monkeypatch.setitem(idx.OFFICIAL_GZ_MD5, "mnist", idx.OFFICIAL_GZ_MD5["mnist"] | {digest})
    with pytest.raises(ArtifactError, match="mnist's official file, not fashion-mnist's"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert len(load_dataset("mnist", "test", data_dir=tmp_path)) == 3
