"""ImageDataset: the shape/dtype contract every loader returns, and subset."""

from __future__ import annotations

import pytest
import torch

from mltk.data import ImageDataset


def make(n: int = 6, channels: int = 1, classes: int = 3) -> ImageDataset:
    images = torch.arange(n * channels * 4 * 5, dtype=torch.int64).remainder(256)
    return ImageDataset(
        images=images.to(torch.uint8).reshape(n, channels, 4, 5),
        labels=torch.arange(n) % classes,
        class_names=[f"c{i}" for i in range(classes)],
        name="toy",
        split="train",
    )


def test_properties_describe_the_images():
    dataset = make(n=6, channels=3, classes=3)
    assert len(dataset) == 6
    assert dataset.num_classes == 3
    assert dataset.image_shape == (3, 4, 5)
    assert "n=6" in repr(dataset) and "toy" in repr(dataset)


def test_subset_copies_the_chosen_rows_in_order_and_renames_the_split():
    dataset = make()
    part = dataset.subset(torch.tensor([4, 1]), split="val-from-train")
    assert part.split == "val-from-train" and part.name == "toy"
    assert torch.equal(part.images[0], dataset.images[4])
    assert torch.equal(part.labels, dataset.labels[torch.tensor([4, 1])])
    assert dataset.subset(torch.tensor([0])).split == "train"
    part.images[0].zero_()
    assert dataset.images[4].any(), "subset must not share storage with its source"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": torch.zeros(6, 1, 4, 5)}, "uint8"),
        ({"images": torch.zeros(6, 4, 5, dtype=torch.uint8)}, "[N, C, H, W]"),
        ({"images": torch.zeros(6, 2, 4, 5, dtype=torch.uint8)}, "C 1 or 3"),
        ({"labels": torch.zeros(6, dtype=torch.int32)}, "int64"),
        ({"labels": torch.zeros(5, dtype=torch.int64)}, "match the images"),
        ({"labels": torch.full((6,), 3)}, "3 class names"),
        ({"class_names": []}, "class_names"),
    ],
)
def test_post_init_says_what_is_wrong(change, message):
    fields = {
        "images": torch.zeros(6, 1, 4, 5, dtype=torch.uint8),
        "labels": torch.zeros(6, dtype=torch.int64),
        "class_names": ["a", "b", "c"],
        "name": "toy",
        "split": "train",
    }
    with pytest.raises(ValueError, match=f".*{__import__('re').escape(message)}"):
        ImageDataset(**{**fields, **change})
