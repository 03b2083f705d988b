"""holdout and load_splits: deterministic, disjoint, and strict about amounts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mltk.core.errors import ConfigError, UsageError
from mltk.data import DataSpec, ImageDataset, holdout, load_splits


def numbered(n: int) -> ImageDataset:
    """Image i holds the value i, so every image identifies itself."""
    return ImageDataset(
        images=torch.arange(n, dtype=torch.uint8).reshape(n, 1, 1, 1),
        labels=torch.arange(n) % 2,
        class_names=["even", "odd"],
        name="numbered",
        split="train",
    )


def ids(dataset: ImageDataset) -> list[int]:
    return dataset.images.flatten().tolist()


def test_holdout_is_disjoint_complete_ordered_and_named():
    rest, held = holdout(numbered(20), 0.25, seed=0, split="val-from-train")
    assert (len(rest), len(held)) == (15, 5)
    assert sorted(ids(rest) + ids(held)) == list(range(20))
    assert ids(held) == sorted(ids(held)) and ids(rest) == sorted(ids(rest))
    assert held.split == "val-from-train" and rest.split == "train"
    assert held.labels.tolist() == [i % 2 for i in ids(held)]


def test_holdout_is_the_same_forever_for_a_seed():
    # Pinned: a change here (e.g. in torch.randperm) would silently move every held-out split.
    assert ids(holdout(numbered(20), 0.25, seed=0, split="v")[1]) == [4, 5, 7, 13, 19]
    assert ids(holdout(numbered(20), 5, seed=7, split="v")[1]) == [7, 9, 12, 15, 17]
    first = holdout(numbered(100), 10, seed=3, split="v")[1]
    assert ids(first) == ids(holdout(numbered(100), 10, seed=3, split="v")[1])
    assert ids(first) != ids(holdout(numbered(100), 10, seed=4, split="v")[1])


@pytest.mark.parametrize(
    ("amount", "problem"),
    [
        (-0.1, "is negative"),
        (20, "leaving none"),
        (25, "leaving none"),
        (0.01, "rounds to 0"),
        (2.5, "whole count"),
        (float("nan"), "not a number"),
        (0, "holds nothing out"),
    ],
)
def test_bad_amounts_name_the_config_key(amount, problem):
    with pytest.raises(ConfigError, match=problem) as caught:
        holdout(numbered(20), amount, seed=0, split="v", config_key="data.val_holdout")
    assert "data.val_holdout" in caught.value.message and caught.value.exit_code == 2


def test_default_spec_is_digits_with_its_own_test_split():
    splits = load_splits(DataSpec())
    assert (len(splits.train), len(splits.test)) == (1437, 360)
    assert splits.val is None and splits.test.split == "test"


def write_numbered_npz(path, n: int) -> None:
    """An .npz train split of n images, image i filled with i (n <= 256)."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 2, 2, 1))
    np.savez(path, x_train=images, y_train=np.arange(n) % 3)


def test_test_then_val_held_out_of_train_reproducibly(tmp_path):
    write_numbered_npz(tmp_path / "n.npz", 50)
    spec = DataSpec(
        name=f"npz:{tmp_path / 'n.npz'}", test_holdout=0.2, val_holdout=5, holdout_seed=1
    )
    splits = load_splits(spec)
    train, val, test = (ids_of(s) for s in (splits.train, splits.val, splits.test))
    assert (len(train), len(val), len(test)) == (35, 5, 10)
    assert set(train) | set(val) | set(test) == set(range(50))
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert (splits.val.split, splits.test.split) == ("val-from-train", "test-from-train")
    again = load_splits(spec)
    assert ids_of(again.test) == test and ids_of(again.val) == val and ids_of(again.train) == train
    # The test split depends only on test_holdout and the seed, not on val_holdout.
    assert (
        ids_of(load_splits(DataSpec(name=spec.name, test_holdout=0.2, holdout_seed=1)).test) == test
    )


def ids_of(dataset: ImageDataset) -> list[int]:
    return dataset.images[:, 0, 0, 0].tolist()


def test_a_dataset_without_test_split_needs_test_holdout(tmp_path):
    write_numbered_npz(tmp_path / "n.npz", 10)
    with pytest.raises(UsageError, match="no 'test' split") as caught:
        load_splits(DataSpec(name=f"npz:{tmp_path / 'n.npz'}"))
    assert "data.test_holdout" in caught.value.hint


def test_every_bad_amount_is_listed_at_once():
    with pytest.raises(ConfigError) as caught:
        load_splits(DataSpec(test_holdout=-1, val_holdout=1.5))
    assert len(caught.value.problems) == 2
    assert (
        "data.test_holdout" in caught.value.message and "data.val_holdout" in caught.value.message
    )


def test_holdout_larger_than_what_is_left_names_the_key():
    with pytest.raises(ConfigError, match="data.val_holdout=1437 holds out 1437 of 1437"):
        load_splits(DataSpec(val_holdout=1437))
