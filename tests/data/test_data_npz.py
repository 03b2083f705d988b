"""npz:PATH: Keras-style x_train / y_train arrays in NHWC or NCHW, uint8 or float."""

from __future__ import annotations

import numpy as np
import pytest

from mltk.core.errors import ArtifactError, UsageError
from mltk.data import load_dataset


def test_nhwc_uint8_train_and_test(tmp_path):
    rng = np.random.default_rng(12)
    x_train = rng.integers(0, 256, (4, 7, 6, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (2, 7, 6, 3), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x_train, y_train=np.array([0, 1, 2, 1]), x_test=x_test, y_test=[2, 0])
    train = load_dataset(f"npz:{path}", "train")
    test = load_dataset(f"npz:{path}", "test")
    assert train.images.shape == (4, 3, 7, 6)
    assert np.array_equal(train.images.numpy(), x_train.transpose(0, 3, 1, 2))
    assert np.array_equal(test.images.numpy(), x_test.transpose(0, 3, 1, 2))
    assert test.labels.tolist() == [2, 0] and test.class_names == ["0", "1", "2"]


def test_nchw_float_images_labels_keys_and_class_names(tmp_path):
    values = np.array([0.0, 1.0, 0.5, 0.2], np.float32)
    images = np.broadcast_to(values[:, None, None, None], (4, 1, 3, 3)).copy()
    path = tmp_path / "f.npz"
    np.savez(
        path, images=images, labels=np.array([1, 0, 1, 0]), class_names=np.array(["no", "yes"])
    )
    dataset = load_dataset(f"npz:{path}")
    assert dataset.image_shape == (1, 3, 3)
    assert dataset.images[:, 0, 0, 0].tolist() == [0, 255, 128, 51]  # round(v * 255)
    assert dataset.class_names == ["no", "yes"]
    with pytest.raises(UsageError, match="no 'test' split") as caught:
        load_dataset(f"npz:{path}", "test")
    assert "data.test_holdout" in caught.value.hint


def test_grayscale_nhw_images(tmp_path):
    path = tmp_path / "g.npz"
    np.savez(path, x_train=np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4), y_train=[0, 0])
    dataset = load_dataset(f"npz:{path}")
    assert dataset.image_shape == (1, 4, 4) and int(dataset.images[1, 0, 0, 0]) == 16


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((1, 2, 2, 3))}, "expected arrays x_train and y_train"),
        ({"x_train": np.full((1, 2, 2, 3), 2.0), "y_train": [0]}, r"must lie in \[0, 1\]"),
        ({"x_train": np.zeros((1, 2, 2, 3), np.int32), "y_train": [0]}, "uint8 or float"),
        (
            {"x_train": np.zeros((2, 2, 2, 3), np.uint8), "y_train": [0]},
            "expected 2 integer labels",
        ),
        ({"x_train": np.zeros((1, 5, 5, 5), np.uint8), "y_train": [0]}, "1 or 3 channels"),
        ({"x_train": np.zeros((1, 2, 2), np.uint8), "y_train": [-1]}, "outside"),
    ],
)
def test_bad_contents_are_artifact_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ArtifactError, match=message):
        load_dataset(f"npz:{path}")


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "obj.npz"
    names = np.array(["a", None], dtype=object)
    np.savez(path, x_train=np.zeros((1, 2, 2), np.uint8), y_train=[0], class_names=names)
    with pytest.raises(ArtifactError, match="object arrays"):
        load_dataset(f"npz:{path}")


@pytest.mark.parametrize("content", [b"garbage", b"\x93NUMPY a .npy, not an .npz"])
def test_not_an_npz(tmp_path, content):
    (tmp_path / "x.npz").write_bytes(content)
    with pytest.raises(ArtifactError, match="x.npz: not an .npz file"):
        load_dataset(f"npz:{tmp_path / 'x.npz'}")
