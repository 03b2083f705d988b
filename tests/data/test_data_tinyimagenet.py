"""tinyimagenet from the official tiny-imagenet-200 folder, or its zip read in place."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mltk.core.errors import ArtifactError, DataMissingError
from mltk.data import load_dataset


def pil_rgb(data: bytes) -> np.ndarray:
    """What PIL decodes from ``data``, as RGB [3, H, W]: the reference for JPEG pixels."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1)


@pytest.fixture
def tree(formats):
    return formats.tinyimagenet_files(np.random.default_rng(4))


@pytest.mark.parametrize("packaging", ["folder", "zip"])
def test_train_and_val_round_trip(tmp_path, formats, tree, packaging):
    if packaging == "folder":
        formats.write_tree(tmp_path / "tiny-imagenet-200", tree["files"])
    else:
        files = {f"tiny-imagenet-200/{name}": data for name, data in tree["files"].items()}
        formats.write_tree(tmp_path / "tinyimagenet" / "tiny-imagenet-200.zip", files)
    wnids = tree["wnids"]
    for split in ("train", "val"):
        dataset = load_dataset("tinyimagenet", split, data_dir=tmp_path)
        assert dataset.images.shape == (len(tree[split]), 3, 64, 64)
        assert dataset.labels.tolist() == [wnids.index(wnid) for _, wnid in tree[split]]
        for image, (name, _) in zip(dataset.images.numpy(), tree[split], strict=True):
            assert np.array_equal(image, pil_rgb(tree["files"][name]))
    # Class names: the first synonym in words.txt, in wnids.txt order.
    assert dataset.class_names == ["Egyptian cat", "goldfish", "pizza"]


def test_grayscale_jpeg_becomes_three_equal_channels(tmp_path, formats, tree):
    formats.write_tree(tmp_path / "tiny-imagenet-200", tree["files"])
    train = load_dataset("tinyimagenet", "train", data_dir=tmp_path)
    gray = train.images[1]  # the second image of the first class was written grayscale
    assert np.array_equal(gray[0].numpy(), gray[1].numpy()) and np.array_equal(gray[0], gray[2])


def test_test_split_is_the_labelled_val_split(tmp_path, formats, tree):
    formats.write_tree(tmp_path / "tiny-imagenet-200", tree["files"])
    test = load_dataset("tinyimagenet", "test", data_dir=tmp_path)
    val = load_dataset("tinyimagenet", "val", data_dir=tmp_path)
    assert test.split == "val"
    assert np.array_equal(test.images.numpy(), val.images.numpy())


def test_missing_folder_or_zip_is_named(tmp_path):
    with pytest.raises(DataMissingError, match=r"tiny-imagenet-200\.zip \(or tiny-imagenet-200/\)"):
        load_dataset("tinyimagenet", "train", data_dir=tmp_path)


def test_val_image_listed_but_absent_is_named(tmp_path, formats, tree):
    del tree["files"]["val/images/val_2.JPEG"]
    formats.write_tree(tmp_path / "tiny-imagenet-200", tree["files"])
    with pytest.raises(ArtifactError, match="val_2.JPEG: listed in val_annotations.txt"):
        load_dataset("tinyimagenet", "val", data_dir=tmp_path)
