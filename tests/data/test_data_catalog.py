"""The catalog: names, splits, data dir search, describe_datasets and --download."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest

from mltk.core.errors import EXIT_RUNTIME, DataMissingError, MltkError, UsageError
from mltk.data import dataset_info, dataset_names, describe_datasets, load_dataset
from mltk.data import download as download_module


def test_names_and_flip_policy():
    assert dataset_names() == [
        "digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "tinyimagenet",
        "imagefolder:PATH", "npz:PATH",
    ]  # fmt: skip
    assert [n for n in dataset_names() if not dataset_info(n).flip_ok] == [
        "digits",
        "mnist",
        "svhn",
    ]
    assert dataset_info("imagefolder:/some/where").name == "imagefolder:PATH"
    assert "test has no labels" in dataset_info("tinyimagenet").description


@pytest.mark.parametrize("spelling", ["CIFAR-10", "Cifar_10", "cifar10"])
def test_name_spellings(spelling):
    assert dataset_info(spelling).name == "cifar10"


def test_unknown_name_suggests_the_nearest_and_lists_all():
    with pytest.raises(UsageError) as caught:
        load_dataset("fashion-mnits")
    assert "did you mean 'fashion-mnist'" in caught.value.message
    assert "tinyimagenet" in caught.value.hint and "npz:PATH" in caught.value.hint
    assert caught.value.exit_code == 2
    with pytest.raises(UsageError, match="did you mean 'imagefolder:PATH'"):
        load_dataset("imagefolders:/x")


def test_unknown_split_lists_the_splits():
    with pytest.raises(UsageError, match="digits has no 'val' split") as caught:
        load_dataset("digits", "val")
    assert "train, test" in caught.value.hint and "data.val_holdout" in caught.value.hint


def write_mnist_test(formats, folder) -> None:
    formats.write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
    formats.write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([3, 4], np.uint8))


def test_describe_reports_found_and_missing_files(tmp_path, formats):
    (tmp_path / "mnist").mkdir()
    write_mnist_test(formats, tmp_path / "mnist")
    rows = {row["name"]: row for row in describe_datasets(tmp_path)}
    assert list(rows) == dataset_names()
    mnist = rows["mnist"]
    assert mnist["found"] is False and mnist["found_splits"] == ["test"]
    assert mnist["image_shape"] == [1, 28, 28] and mnist["num_classes"] == 10
    assert mnist["flip_ok"] is False and mnist["folder"] == str(tmp_path / "mnist")
    files = {(f["split"], f["file"].split()[0]): f for f in mnist["files"]}
    assert files[("test", "t10k-images-idx3-ubyte.gz")]["found"] is True
    missing = files[("train", "train-images-idx3-ubyte.gz")]
    assert missing["found"] is False
    assert missing["path"] == str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz")
    assert rows["digits"]["found"] is True and rows["digits"]["files"] == []
    assert rows["tinyimagenet"]["found_splits"] == []
    assert rows["imagefolder:PATH"]["found"] is None


def test_download_failure_is_a_runtime_error_that_says_where_to_put_files(tmp_path, monkeypatch):
    def no_network(name, split, data_dir):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(download_module, "_fetch", no_network)
    with pytest.raises(MltkError) as caught:
        load_dataset("cifar10", "train", data_dir=tmp_path, download=True)
    error = caught.value
    assert type(error) is MltkError and error.exit_code == EXIT_RUNTIME
    assert "downloading cifar10" in error.message and "failed" in error.message
    assert f"put cifar-10-python.tar.gz in {tmp_path / 'cifar10'}/" in error.hint


def test_download_writes_torchvision_layout_then_mltk_reads_it(tmp_path, formats, monkeypatch):
    fetched = []

    def fake_torchvision(name, split, data_dir):
        fetched.append((name, split, data_dir))
        (data_dir / "MNIST" / "raw").mkdir(parents=True)
        write_mnist_test(formats, data_dir / "MNIST" / "raw")

    monkeypatch.setattr(download_module, "_fetch", fake_torchvision)
    dataset = load_dataset("mnist", "test", data_dir=tmp_path, download=True)
    assert dataset.labels.tolist() == [3, 4] and fetched == [("mnist", "test", tmp_path)]
    load_dataset("mnist", "test", data_dir=tmp_path, download=True)
    assert len(fetched) == 1, "files already present are not downloaded again"


def test_without_download_nothing_is_fetched(tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "_fetch", lambda *args: pytest.fail("fetched"))
    with pytest.raises(DataMissingError):
        load_dataset("svhn", "test", data_dir=tmp_path)
